"""``convolve`` and ``transpose``: apply ``A`` or ``Aᵀ`` to images and write the results."""

from __future__ import annotations

from pathlib import Path

import click

from deconv_cli.cli.options import (
    geometry_options,
    kernel_options,
    output_shape_option,
    processing_options,
)


def _geometry(mode, boundary, correlate, stride, dilation, padding):
    from deconv_cli.operators import Geometry

    return Geometry.create(
        mode=mode,
        boundary=boundary,
        correlate=correlate,
        stride=stride,
        dilation=dilation,
        padding=padding,
    )


def _run(inputs, output, transform, *, dtype, overwrite, quiet, title, kernel, notes=()):
    """Process every input into its output and print the summary on stderr."""
    from deconv_cli.io import resolve_outputs
    from deconv_cli.process import process_file

    paths = [Path(p) for p in inputs]
    outputs = resolve_outputs(paths, output)
    reports = [
        process_file(path, out, transform, dtype=dtype, overwrite=overwrite, inputs=tuple(paths))
        for path, out in zip(paths, outputs, strict=True)
    ]
    if not quiet:
        _print_summary(title, kernel, reports, notes)


def _print_summary(title, kernel, reports, notes) -> None:
    """A rich table on a terminal; one plain line per item in logs and pipes."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    rows = [
        (
            str(r.input),
            f"{r.output} ({r.output_dtype})",
            f"{_shape(r.input_shape)} -> {_shape(r.output_shape)}",
            r.engine,
            f"{r.seconds:.3f} s",
        )
        for r in reports
    ]
    if console.is_terminal:
        table = Table(title=title, caption=f"kernel {kernel.description}", title_justify="left")
        for column in ("input", "output", "shape", "engine", "time"):
            table.add_column(column, justify="right" if column == "time" else "left")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        click.echo(f"{title}, kernel {kernel.description}", err=True)
        for source, out, shape, engine, seconds in rows:
            click.echo(f"{source} -> {out}: {shape}, {engine} engine, {seconds}", err=True)
    for r in reports:
        if r.clipped:
            click.echo(
                f"{r.output}: {r.clipped} pixels clipped to the {r.output_dtype} range", err=True
            )
        for key, value in r.details.items():
            click.echo(f"{r.output}: {key}: {value}", err=True)
    for note in notes:
        click.echo(note, err=True)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


@click.command()
@processing_options
@kernel_options
@geometry_options()
@click.option(
    "--noise",
    default=None,
    metavar="SPEC",
    help="Add seeded noise after blurring: `gaussian:sigma=S` or `poisson:peak=P`.",
)
@click.option("--seed", type=int, default=None, help="Seed for --noise (reproducible data).")
def convolve(
    inputs,
    output,
    overwrite,
    dtype,
    quiet,
    kernel_spec,
    normalize,
    mode,
    boundary,
    correlate,
    stride,
    dilation,
    padding,
    noise,
    seed,
):
    """Blur images: apply the convolution operator A.

    \b
    Examples:
      deconv convolve photo.png -k gaussian:sigma=2 -o blurred.png
      deconv convolve img.npy -k motion:length=15,angle=30 --boundary wrap -o b.npy
      deconv convolve a.png b.png -k disk:radius=3 --noise gaussian:sigma=0.01 --seed 1 -o out/
      deconv convolve x.npy -k samples/haar_bank.npy --correlate --stride 2 -o coeffs.npy
    """
    from deconv_cli.kernels import load_kernel
    from deconv_cli.noise import parse_noise
    from deconv_cli.process import Convolve

    geometry = _geometry(mode, boundary, correlate, stride, dilation, padding)
    kernel = load_kernel(kernel_spec, normalize=normalize)
    make = Convolve(kernel, geometry, noise=parse_noise(noise), seed=seed)
    _run(
        inputs,
        output,
        make,
        dtype=dtype,
        overwrite=overwrite,
        quiet=quiet,
        title=f"convolve ({geometry.describe()})",
        kernel=kernel,
    )


@click.command()
@processing_options
@kernel_options
@geometry_options()
@output_shape_option
def transpose(
    inputs,
    output,
    overwrite,
    dtype,
    quiet,
    kernel_spec,
    normalize,
    mode,
    boundary,
    correlate,
    stride,
    dilation,
    padding,
    output_shape,
):
    """Apply the exact adjoint Aᵀ of `convolve` with the same flags.

    The transpose (deep learning's "deconvolution", conv_transpose2d) restores the
    image's shape, not its values: Aᵀ A is a second blur, not the identity.
    To recover the values use `deconv invert`.

    \b
    Examples:
      deconv transpose blurred.png -k gaussian:sigma=2 -o adjoint.png
      deconv transpose coeffs.npy -k samples/haar_bank.npy --correlate --stride 2 -o x.npy
      deconv transpose y.npy -k box:size=3 --stride 2 --output-shape 64x64 -o x.npy
    """
    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import parse_pair
    from deconv_cli.process import Transpose

    geometry = _geometry(mode, boundary, correlate, stride, dilation, padding)
    kernel = load_kernel(kernel_spec, normalize=normalize)
    requested = parse_pair(output_shape, "--output-shape")
    make = Transpose(kernel, geometry, output_shape=requested)
    _run(
        inputs,
        output,
        make,
        dtype=dtype,
        overwrite=overwrite,
        quiet=quiet,
        title=f"transpose ({geometry.describe()})",
        kernel=kernel,
        notes=[
            "The transpose restores the shape, not (in general) the values: "
            "use `deconv invert` to recover the image."
        ],
    )


COMMANDS = [convolve, transpose]
