"""``invert``: true deconvolution with a method from the registry."""

from __future__ import annotations

import sys

import click

from deconv_cli.cli.options import (
    geometry_options,
    kernel_options,
    method_options,
    output_shape_option,
    processing_options,
)
from deconv_cli.cli.process import run_batch
from deconv_cli.errors import DeconvError


class MethodHelp(click.Command):
    """Lists the registered methods, one line each, with the flags each takes (``*``: chosen
    from the data when not given), in ``deconv invert --help``."""

    def format_epilog(self, ctx, formatter):
        from deconv_cli.cli import flag, said
        from deconv_cli.restore import methods

        with formatter.section("Methods"):
            rows = []
            for m in methods().values():
                flags = [flag(o) + "*" * (o in m.automatic) for o in m.options]
                rows.append((m.name, said(m.summary) + (f" [{', '.join(flags)}]" if flags else "")))
            formatter.write_dl(rows)
            formatter.write_paragraph()
            formatter.write_text("*: chosen from the data when not given.")
        super().format_epilog(ctx, formatter)


@click.command(cls=MethodHelp)
@processing_options
@kernel_options
@geometry_options(boundaries_extra=("unknown",))
@output_shape_option
@click.option(
    "-m",
    "--method",
    default="auto",
    show_default=True,
    help="Inversion method (listed below).",
)
@method_options
@click.option(
    "--reference",
    type=click.Path(dir_okay=False),
    default=None,
    help="Sharp image: report PSNR/SSIM per iteration (one input only).",
)
@click.option(
    "--history",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write iteration, residual, PSNR, SSIM, seconds as CSV (one input only).",
)
@click.option(
    "--tile-margin",
    type=click.IntRange(min=0),
    default=None,
    metavar="M",
    help="With --tile: pixels each tile is extended by on every side "
    "(default: from the kernel's extent).",
)
@click.option(
    "--clip/--no-clip",
    default=False,
    show_default=True,
    help="Clip the result to [0, 1] (integer outputs are always clipped on writing).",
)
def invert(
    batch,
    kernel,
    geometry,
    output_shape,
    method,
    method_options,
    reference,
    history,
    tile_margin,
    clip,
):
    """Recover images from blurred ones: true deconvolution, A x ≈ y.

    Give the same kernel and geometry flags that produced the blur. Where A is
    injective, `inverse` recovers the image exactly (to rounding) from exact data;
    where it is not, or the data is noisy, regularized and iterative methods
    recover what can be recovered.

    `--boundary unknown` is for real photographs: the image is a crop of a larger
    blurred scene, so no boundary rule holds at its edges. The method solves for
    the scene extended by the kernel's extent (the data term only on the observed
    pixels) and returns the observed frame.

    \b
    Examples:
      deconv invert blurred.npy -k gaussian:sigma=1 --boundary wrap -m inverse -o x.npy
      deconv invert photo.png -k disk:radius=3 --boundary unknown -o sharp.png
      deconv invert b.png -k motion:length=15,angle=30 -m richardson-lucy --iterations 200 \\
          --reference sharp.png --history rl.csv -o x.png
      deconv invert c.npy -k samples/haar_bank.npy --correlate --stride 2 --mode valid \\
          -m cgls -o x.npy
    """
    from deconv_cli.operators import parse_pair
    from deconv_cli.process import Invert
    from deconv_cli.restore import RestoreOptions, get_method

    chosen = get_method(method)
    given = method_options
    chosen.check_taken(given)
    if history:
        _check_history(history, batch)
    unknown = geometry.unknown
    from deconv_cli.cli.models import operator_inputs

    geometry, kernel = operator_inputs(kernel, geometry)
    sharp = _read_reference(reference, batch.axes, kernel.max_channels)
    records = [] if history else None

    def build(single: bool) -> Invert:
        if (reference or history) and not single:
            raise DeconvError("--reference and --history take one input")
        return Invert(
            kernel,
            geometry,
            chosen.name,
            RestoreOptions(**given),
            unknown_boundary=unknown,
            output_shape=parse_pair(output_shape, "output_shape"),
            reference=sharp,
            on_iteration=progress.update if single and not silent else None,
            on_tile=progress.tile if single and not silent else None,
            clip=clip,
            history=records,
            tile=batch.tile,
            tile_margin=tile_margin,
        )

    silent = batch.quiet or not (chosen.iterative or batch.tile)
    with _Progress(silent, given["iterations"]) as progress:
        run_batch(
            batch,
            build,
            title=f"invert ({geometry.describe() if not unknown else 'unknown boundary'})",
            kernel=kernel,
        )
    if history:
        _write_history(history, records, batch.overwrite)


def _check_history(path, batch) -> None:
    """Refuse a --history file that cannot be written, before any work is done."""
    import os

    from deconv_cli import fs

    def same(a, b) -> bool:
        return os.path.realpath(a) == os.path.realpath(b)

    if any(same(path, p) for p in batch.inputs):
        raise DeconvError(f"--history `{path}` is an input of this command; give another file")
    if same(path, batch.output):
        raise DeconvError(f"--history `{path}` is also the output (-o); give another file")
    fs.check_writable_file(path, overwrite=batch.overwrite, what="history")


def _read_reference(path, axes, max_channels):
    """The sharp image of ``--reference``, read as the inputs are (a bank's: any channels)."""
    if path is None:
        return None
    from deconv_cli.volumes import read_volume

    return read_volume(path, axes=axes, max_channels=max_channels).data


def _write_history(path, records, overwrite) -> None:
    import csv

    from deconv_cli.atomic import atomic_write

    def write(tmp):
        with open(tmp, "w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["iteration", "residual", "psnr", "ssim", "seconds"])
            for r in records:
                out.writerow(
                    [
                        r.iteration,
                        f"{r.residual:.6e}",
                        _num(r.psnr),
                        _num(r.ssim),
                        f"{r.seconds:.4f}",
                    ]
                )

    atomic_write(path, write, overwrite=overwrite)


def _num(value) -> str:
    return "" if value is None else f"{value:.6g}"


class _Progress:
    """A rich progress bar on a terminal; plain lines otherwise: every 10 iterations, or
    the first, every tenth and the last of the tiles."""

    def __init__(self, silent: bool, total: int | None) -> None:
        """``total``: the iterations expected; a tiled run counts tiles instead."""
        self.silent = silent
        self.total = total
        self.bar = None

    def __enter__(self):
        if not self.silent and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            # until the first iteration: the setup (method, parameters, spectra)
            self.task = self.bar.add_task("preparing", total=self.total)
        return self

    def update(self, record) -> None:
        if self.silent:
            return
        text = f"iteration {record.iteration}: residual {record.residual:.3e}"
        if record.psnr is not None:
            text += f", PSNR {record.psnr:.2f} dB, SSIM {record.ssim:.4f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=record.iteration, description=text)
        elif record.iteration % 10 == 0 or record.iteration == 1:
            click.echo(text, err=True)

    def tile(self, done: int, total: int) -> None:
        text = f"tile {done}/{total}"
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description=text)
        elif done == 1 or done * 10 // total > (done - 1) * 10 // total:  # each tenth
            click.echo(text, err=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()


COMMANDS = [invert]
