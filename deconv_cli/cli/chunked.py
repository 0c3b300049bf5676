"""Zarr stacks on the command line: ``convolve`` / ``transpose`` chunk by chunk on Dask."""

from __future__ import annotations

import click


def run_zarr(batch, build, *, title: str) -> bool:
    """Run ``build(True)``'s transform (a Convolve or Transpose) on a Zarr input, if
    ``batch`` has one (the transform is built only then: building may check outputs).

    Returns False (nothing done) when no input is a Zarr store. One Zarr input and one
    output directory; ``--scheduler`` as for batches.
    """
    from deconv_cli.cli import said
    from deconv_cli.errors import DeconvError
    from deconv_cli.process import Convolve, Transpose
    from deconv_cli.zarrio import is_zarr, process_zarr

    if not any(is_zarr(p) for p in batch.inputs):
        return False
    transform = build(True)
    if len(batch.inputs) != 1 or not isinstance(transform, (Convolve, Transpose)):
        raise DeconvError(
            "a Zarr stack is processed alone, by convolve or transpose (chunk by chunk)"
        )
    if isinstance(transform, Convolve) and transform.noise is not None:
        raise DeconvError("--noise is drawn for a whole image; not on a Zarr stack")
    if batch.tile is not None:
        raise DeconvError("a Zarr stack is processed by its chunks; give no --tile")
    details = process_zarr(
        batch.inputs[0],
        batch.output,
        transform.kernel.array,
        transform.geometry,
        adjoint=isinstance(transform, Transpose),
        axes=batch.axes,
        dtype=batch.dtype,
        overwrite=batch.overwrite,
        scheduler=batch.scheduler,
        jobs=batch.jobs,
    )
    if not batch.quiet:
        click.echo(f"{title}: {batch.inputs[0]} -> {batch.output}", err=True)
        for key, value in details.items():
            click.echo(f"{batch.output}: {key}: {said(value)}", err=True)
    return True
