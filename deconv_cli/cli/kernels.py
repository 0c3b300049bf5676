"""``deconv kernels``: list the kernel families; ``deconv kernels show``: print or save one."""

from __future__ import annotations

from pathlib import Path

import click

from deconv_cli.errors import OutputError


@click.group("kernels", invoke_without_command=True)
@click.pass_context
def kernels(ctx: click.Context) -> None:
    """List the kernel families and their parameters.

    A kernel SPEC is `family:param=value,...` (a bare `family` takes the
    defaults) or the path of a kernel file: `.npy`, a text/CSV matrix
    (`.csv .txt .tsv .dat`) or an image (`.png .tif .jpg .bmp`, used as a
    PSF). Angles are degrees counter-clockwise as displayed. Blur families
    sum to 1; files are used exactly as stored.

    \b
    Examples:
      deconv kernels
      deconv kernels show gaussian:sigma=2
      deconv kernels show motion:length=9,angle=30 --save psf.npy
      deconv kernels list model.onnx
      deconv kernels from-beads beads.tif --size 31x21x21 -o psf.tif
    """
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table
    from rich.text import Text

    from deconv_cli.cli.output import stdout_console
    from deconv_cli.kernels import FILE_SUFFIXES, family_table

    table = Table(
        title="kernel families",
        title_justify="left",
        caption="SPEC is family:param=value,... or a kernel file ("
        + " ".join(FILE_SUFFIXES)
        + "); angles are degrees counter-clockwise",
        caption_justify="left",
    )
    table.add_column("family", style="bold", no_wrap=True)
    table.add_column("parameters (default, meaning)")
    table.add_column("summary")
    for family in family_table():
        params = Text()
        for name, default, meaning in family["params"]:
            if params:
                params.append("\n")
            params.append(f"{name}={default}", style="cyan")
            params.append(f"  {meaning}", style="dim")
        table.add_row(family["name"], params or "-", family["summary"], end_section=True)
    stdout_console().print(table)


@kernels.command("show")
@click.argument("spec")
@click.option("--normalize", is_flag=True, help="Divide the kernel by its sum (not zero-sum).")
@click.option(
    "--save",
    "save",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the kernel, float64, to this .npy or .tif file (a volume as a "
    "TIFF stack with its voxel size).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --save file.")
@click.option(
    "--precision",
    type=click.IntRange(0, 17),
    default=4,
    show_default=True,
    help="Digits after the decimal point.",
)
def show(spec: str, normalize: bool, save: Path | None, overwrite: bool, precision: int) -> None:
    """Print the kernel SPEC as a matrix, with its shape and sum.

    A 4-D kernel bank is printed one (out, in) slice at a time; a 3-D volume
    kernel (a microscope PSF) as its central plane and its axial (z, x) slice.

    \b
    Examples:
      deconv kernels show disk:radius=2
      deconv kernels show box:size=5x3 --precision 3
      deconv kernels show samples/haar_bank.npy
      deconv kernels show psf.png --normalize --save psf.npy
      deconv kernels show gaussian:sigma=1.5,sigma_z=3
      deconv kernels show widefield:na=1.4,wavelength=0.52,n=1.515,dxy=0.1,dz=0.25 \
        --save psf.tif
    """
    import numpy as np

    from deconv_cli.kernels import kernel_slices, load_kernel

    kernel = load_kernel(spec, normalize=normalize, volume=True)
    if save is not None:
        from deconv_cli.fs import check_target

        _check_save_path(save, kernel.is_bank)
        if kernel.groups > 1:
            raise OutputError(
                f"--save: `{save}`: a file holds no groups and this layer has "
                f"{kernel.groups}; use `{spec}` itself as the kernel"
            )
        check_target(save, overwrite=overwrite)  # before printing: fail before any output
    shape = "x".join(str(n) for n in kernel.array.shape)
    click.echo(f"{kernel.description}  shape {shape}")
    for label, matrix, total in kernel_slices(kernel):
        heading = f"[{label}]  " if label else ""
        click.echo(f"{heading}sum {total:.{max(precision, 1)}g}")
        click.echo(
            np.array2string(matrix, precision=precision, suppress_small=True, max_line_width=120)
        )
    if save is not None:
        if save.suffix.lower() == ".npy":
            from deconv_cli.atomic import atomic_write

            def write(tmp: Path) -> None:  # np.save, not write_image: a bank is 4-D
                with open(tmp, "wb") as handle:
                    np.save(handle, kernel.array, allow_pickle=False)

            atomic_write(save, write, overwrite=overwrite)
        else:
            from deconv_cli.volumes import write_volume

            axes = "ZYX" if kernel.is_volume else "YX"
            write_volume(save, kernel.array, axes=axes, spacing=kernel.spacing, overwrite=overwrite)
        click.echo(f"deconv: wrote {save}", err=True)


def _check_save_path(path: Path, bank: bool) -> None:
    suffixes = (".npy",) if bank else (".npy", ".tif", ".tiff")
    if path.suffix.lower() not in suffixes:
        what = "a 4-D kernel bank" if bank else "a kernel"
        raise OutputError(f"--save: `{path}` must end in {' or '.join(suffixes)} for {what}")


from deconv_cli.cli.beads import from_beads  # noqa: E402 (the group is defined above)
from deconv_cli.cli.models import list_layers  # noqa: E402

kernels.add_command(list_layers)
kernels.add_command(from_beads)

COMMANDS = [kernels]
