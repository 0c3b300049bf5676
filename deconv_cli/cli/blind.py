"""``blind``: deblur images whose kernel is unknown."""

from __future__ import annotations

import sys

import click

from deconv_cli.cli.options import processing_options
from deconv_cli.cli.process import run_batch
from deconv_cli.errors import DeconvError


@click.command()
@processing_options
@click.option(
    "--boundary",
    type=click.Choice(["unknown", "constant", "reflect", "mirror", "nearest", "wrap"]),
    default="unknown",
    show_default=True,
    help="For the final restoration: `unknown` (a crop of a larger scene: photographs) "
    "or the rule the blur was made with.",
)
@click.option(
    "--kernel-size",
    default=None,
    metavar="N|HxW",
    help="Upper bound of the kernel's size (odd; default: 31, or a third of a smaller "
    "image's side).",
)
@click.option(
    "--family",
    type=click.Choice(["free", "gaussian", "disk", "motion"]),
    default="free",
    show_default=True,
    help="Kernel model: any non-negative kernel, or a parametric family fitted directly.",
)
@click.option(
    "-m",
    "--method",
    default="auto",
    show_default=True,
    help="Non-blind method for the final restoration (see `deconv invert --help`).",
)
@click.option(
    "--kernel-out",
    default=None,
    metavar="PATH",
    help="Write the kernel: a .npy (exact) or .png/.tif (scaled to its peak) file; "
    "a folder for several inputs (STEM_kernel.npy).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per input on stdout: input, output, kernel, params, confidence.",
)
def blind(batch, boundary, kernel_size, family, method, kernel_out, as_json):
    """Deblur images when the kernel is unknown: estimate it, then invert.

    The kernel is estimated coarse to fine with a sparse (L0) gradient prior on the
    image's grey level, its data term on the observed pixels only; then the image is
    restored with a non-blind method (`-m`, default `auto`). `--boundary unknown`
    (the default here) treats the image as a crop of a larger blurred scene.

    With `--family gaussian|disk|motion` the family's parameters are fitted and the
    summary gives the kernel as a spec usable with `-k`. The confidence (0 to 1)
    says how much better the kernel explains the image than no blur or the
    closest Gaussian; near 0, the estimate is not to be trusted.

    \b
    Examples:
      deconv blind photo.png -o sharp.png --kernel-out kernel.png
      deconv blind shaky.jpg -o sharp.png --kernel-size 41 --kernel-out k.npy
      deconv blind b.png -o s.png --family motion --json
      deconv blind shots/ -o sharp/ --kernel-out kernels/ --jobs 2 --skip-existing
    """
    from deconv_cli.blind_run import Blind, check_kernel_out, parse_kernel_size
    from deconv_cli.restore import get_method

    chosen = get_method(method)
    if as_json and batch.output == "-":
        raise DeconvError("--json prints on standard output: give -o a file or folder")
    if batch.tile is not None:
        raise DeconvError("--tile: a blind estimate needs the whole image; run without --tile")
    bound = parse_kernel_size(kernel_size)
    from deconv_cli.operators import Geometry

    unknown = boundary == "unknown"
    geometry = Geometry.create(boundary="reflect" if unknown else boundary)

    def build(single: bool) -> Blind:
        target = check_kernel_out(kernel_out, not single, batch.overwrite)
        return Blind(
            bound,
            family,
            chosen.name,
            geometry,
            unknown_boundary=unknown,
            kernel_out=target,
            several=not single,
            overwrite=batch.overwrite,
            on_progress=status.update if single and not batch.quiet else None,
        )

    with _Status() as status:
        results = run_batch(
            batch,
            build,
            title=f"blind ({family} kernel, {boundary} boundary)",
            kernel=_Described("estimated per image"),
        )
    if as_json:
        import json

        from deconv_cli.blind_run import summary_record

        done = [r.report for r in results if r.report is not None]
        click.echo(json.dumps([summary_record(r) for r in done], indent=2))


class _Described:
    """What the summary prints after "kernel"."""

    def __init__(self, description: str) -> None:
        self.description = description


class _Status:
    """A one-line status on a terminal (the estimate's stage); silent otherwise."""

    def __enter__(self):
        self.live = None
        if sys.stderr.isatty():
            from rich.console import Console

            self.live = Console(stderr=True).status("estimating the kernel")
            self.live.start()
        return self

    def update(self, text: str) -> None:
        if self.live is not None:
            self.live.update(text)

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.stop()


COMMANDS = [blind]
