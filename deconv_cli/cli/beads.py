"""``deconv kernels from-beads``: a measured PSF from a stack of beads."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("from-beads")
@click.argument("stack", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--size",
    required=True,
    metavar="ZxYxX",
    help="The PSF's extent in voxels (planes x rows x columns), e.g. 21x15x15.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The PSF: a .tif stack (float64 OME-TIFF with the stack's voxel size) or .npy.",
)
@click.option(
    "--axes",
    default=None,
    metavar="ZYX",
    help="The axes of a .npy stack as stored (e.g. ZYX, XYZ); TIFFs carry theirs.",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=8.0,
    show_default=True,
    help="Detection level, in robust noise deviations above the background.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def from_beads(
    stack: Path, size: str, output: Path, axes: str | None, threshold: float, overwrite: bool
) -> None:
    """Estimate a PSF from a Z stack of sub-resolution beads.

    Finds the isolated beads (local maxima above the background by --threshold
    noise deviations, their --size box inside the stack and free of other beads),
    aligns them to 1/20 voxel by cross-correlation with their average, averages,
    subtracts the background, clips negatives and normalizes to sum 1. Prints how
    many beads were used and why the others were rejected.

    \b
    Examples:
      deconv kernels from-beads beads.tif --size 31x21x21 -o psf.tif
      deconv kernels from-beads beads.npy --axes ZYX --size 25x15x15 -o psf.npy
      deconv kernels show psf.tif
    """
    import numpy as np

    from deconv_cli.beads import parse_size, psf_from_beads
    from deconv_cli.cli.kernels import _check_save_path
    from deconv_cli.errors import InputError
    from deconv_cli.fs import check_target
    from deconv_cli.volumes import read_volume, write_volume

    shape = parse_size(size)
    _check_save_path(output, bank=False)
    check_target(output, overwrite=overwrite, inputs=[stack])
    image = read_volume(stack, axes=axes)
    if image.axes != "ZYX":
        what = "a 2-D image" if "Z" not in image.axes else f"a stack with axes {image.axes}"
        raise InputError(f"`{stack}` is {what}; from-beads needs one Z×Y×X stack of beads")
    integer = np.issubdtype(np.dtype(image.source_dtype), np.integer)
    found = psf_from_beads(
        image.data, shape, threshold=threshold, saturation=1.0 if integer else None
    )
    write_volume(output, found.psf, axes="ZYX", spacing=image.spacing, overwrite=overwrite)
    click.echo(f"deconv: {found.describe()}; wrote {output}", err=True)
