"""``analyze`` (is this operator invertible, and how well?) and ``roundtrip`` (try it)."""

from __future__ import annotations

import click

from deconv_cli.cli.options import (
    axes_option,
    format_option,
    geometry_options,
    kernel_options,
    noise_options,
)

FORMATS = ("table", "json", "csv", "markdown")
ROUNDTRIP_FORMATS = ("table", "json", "markdown")


def _positive_sigma(ctx, param, value):
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


def _parse_shape(value: str, axes: str | None) -> tuple[tuple[int, ...], str]:
    """``(shape, axes)`` of ``--shape``: ``HxW[xC]``, or lengths in the order of ``--axes``
    (returned in Z, Y, X, C order)."""
    from deconv_cli.errors import GeometryError

    parts = value.lower().replace("×", "x").split("x")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if axes is None:
        if len(numbers) not in (2, 3) or min(numbers) < 1:
            raise GeometryError(f"--shape: `{value}` is not HxW or HxWxC with positive integers")
        return numbers, "YXC"[: len(numbers)]
    if len(numbers) != len(axes) or min(numbers, default=0) < 1:
        raise GeometryError(
            f"--shape: `{value}` must give {len(axes)} positive lengths, one per axis of "
            f"--axes {axes}"
        )
    order = "".join(a for a in "ZYXC" if a in axes)
    return tuple(numbers[axes.index(a)] for a in order), order


def _image_shape(image, shape, kernel, axes) -> tuple[tuple[int, ...], int, int | None]:
    """The operator's input shape, its spatial axes, and the image's bit depth (integer
    images only)."""
    from deconv_cli.errors import DeconvError
    from deconv_cli.process import kernel_layout

    if image is not None and shape is not None:
        raise DeconvError("give an IMAGE or --shape HxW, not both")
    if image is None and shape is None:
        raise DeconvError(
            "analyze needs the image shape: give an IMAGE or --shape HxW (e.g. --shape 256x256)"
        )
    if image is not None:
        import numpy as np

        from deconv_cli.volumes import read_volume

        read = read_volume(image, axes=axes, max_channels=kernel.max_channels)
        spatial = kernel_layout(kernel, read.axes, f"`{image}`")
        dtype = np.dtype(read.source_dtype)
        bits = np.iinfo(dtype).bits if dtype.kind == "u" else None
        return read.data.shape, spatial, bits
    dims, order = _parse_shape(shape, axes)
    spatial = kernel_layout(kernel, order, f"--shape {shape}")
    channels = kernel.array.shape[1] * kernel.groups  # a bank's input channels
    if kernel.is_bank and len(dims) == spatial and channels > 1:
        dims = dims + (channels,)
    return dims, spatial, None


def _number(value, fmt: str = ".4g") -> str:
    from deconv_cli.report import format_number

    return "—" if value is None else format_number(value, fmt)


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _exactness(flag: bool) -> str:
    return "exact" if flag else "estimate"


def analysis_rows(analysis, op) -> list[dict[str, str]]:
    """The analyze table: quantity, value, how it was obtained."""
    a = analysis
    rank_how = a.rank_method if a.rank_method != a.method else "from the singular values"
    nullity = f"{a.nullity}" if a.exact["rank"] or a.nullity == 0 else f">= {a.nullity}"
    rmse_how = (
        "σ·sqrt(Σ 1/σᵢ² / n) over the nonzero σᵢ (exact)"
        if a.exact["predicted_rmse"]
        else "from a wrap/reflect stand-in (estimate)"
        if a.predicted_rmse is not None
        else "not known for this geometry"
    )
    of = "A⁻¹ e" if a.invertible else "A⁺ e (pseudo-inverse)"
    return [
        {"quantity": "operator", "value": op.describe(), "how": "input -> output (geometry)"},
        {
            "quantity": "singular values",
            "value": "exact" if a.exact["sigma_max"] else "estimates",
            "how": a.method,
        },
        {
            "quantity": "unknowns n / equations m",
            "value": f"{a.unknowns} / {a.equations}",
            "how": f"{_dims(a.input_shape)} image, {_dims(a.output_shape)} data",
        },
        {"quantity": "rank", "value": str(a.rank), "how": rank_how},
        {"quantity": "nullity", "value": nullity, "how": "n - rank"},
        {
            "quantity": "σ_max",
            "value": _number(a.sigma_max),
            "how": _exactness(a.exact["sigma_max"]),
        },
        {
            "quantity": "σ_min (smallest nonzero)",
            "value": _number(a.sigma_min),
            "how": "exact" if a.exact["sigma_min"] else "upper bound (estimate)",
        },
        {
            "quantity": "condition number",
            "value": _number(a.condition_number),
            "how": "σ_max / σ_min" + ("" if a.exact["sigma_min"] else " (a lower bound)"),
        },
        {
            "quantity": "rank tolerance",
            "value": _number(a.rank_tolerance, ".3g"),
            "how": "σ <= tol·σ_max counts as zero; tol = max(m, n)·eps",
        },
        {
            "quantity": "noise σ",
            "value": _number(a.noise_sigma, ".3g"),
            "how": a.noise_source,
        },
        {
            "quantity": f"predicted RMSE of {of}",
            "value": _number(a.predicted_rmse, ".3g"),
            "how": rmse_how,
        },
        {
            "quantity": "verdict",
            "value": a.verdict,
            "how": f"ill-conditioned: RMSE > {a.threshold:g}",
        },
    ]


def _columns():
    from deconv_cli.report import Column

    return [
        Column("quantity", "quantity"),
        Column("value", "value"),
        Column("how", "how obtained"),
    ]


@click.command()
@click.argument("image", required=False, type=click.Path(path_type=str))
@kernel_options(required=False)
@click.option(
    "--shape",
    default=None,
    metavar="HxW[xC]",
    help="Shape of the image the operator acts on (instead of IMAGE): HxW[xC], or one "
    "length per letter of --axes (e.g. --shape 32x64x64 --axes ZYX); for a MODEL.onnx, "
    "the network input HxWxC.",
)
@axes_option
@geometry_options()
@click.option(
    "--noise-sigma",
    type=float,
    default=None,
    callback=_positive_sigma,
    help="Standard deviation of white noise in the data, on the [0, 1] scale.",
)
@click.option(
    "--bits",
    type=click.IntRange(1, 32),
    default=None,
    help="Or: the data is rounded to this many bits (σ = q/√12). Default: the IMAGE's bit "
    "depth for an integer image, else 8.",
)
@format_option(FORMATS)
@click.option(
    "--spectrum",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    metavar="PATH",
    help="Write a picture of the spectrum. With matplotlib (deconv-cli[plot]): a labelled "
    "figure, |H| in dB over the frequencies (cycles/pixel) with a colour bar and the noise "
    "floor in cyan, beside the sorted singular values against the noise level. Without: "
    "|H| on a log scale, zeros in cyan, zero frequency at the centre (a kernel bank: its "
    "sorted singular values).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --spectrum file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (a MODEL).")
def analyze(
    image,
    kernel,
    shape,
    axes,
    geometry,
    noise_sigma,
    bits,
    fmt,
    spectrum,
    overwrite,
    quiet,
):
    """Is the convolution invertible, how well, and what will noise do to its inverse?

    With a MODEL.onnx instead of IMAGE (and no -k): every Conv and ConvTranspose
    layer of the network, in graph order, at the input --shape HxWxC: one row each
    with its geometry, shapes, rank, σ_max, σ_min, condition number and verdict,
    then the product of the σ_max and the layers that lose information (see
    docs/models.md).

    Reports the operator's shapes, rank and null space, extreme singular values,
    condition number and the predicted RMSE of the exact inverse for the noise
    level, each with how it was obtained (exact by FFT, DCT or dense SVD, or an
    iterative estimate), and a verdict: invertible, invertible but ill-conditioned
    (predicted RMSE > 0.01), or not invertible (and why).

    \b
    Examples:
      deconv analyze -k gaussian:sigma=2 --shape 256x256
      deconv analyze -k motion:length=9 --shape 64x64 --noise-sigma 0.01 --spectrum s.png
      deconv analyze photo.png -k box:size=4 --boundary wrap
      deconv analyze -k layer.npy --shape 32x32 --correlate --stride 2 --boundary wrap
      deconv analyze -k motion:length=9 --shape 64x64 --noise-sigma 0.01 --format json
      deconv analyze model.onnx --shape 224x224x3 --format csv
      deconv analyze -k gaussian:sigma=1.5,sigma_z=2 --shape 32x64x64 --axes ZYX
      deconv analyze stack.tif -k psf.tif --boundary wrap
    """
    import json

    from deconv_cli.analysis import analyze as run_analysis
    from deconv_cli.cli.models import analyze_model_command, given_flags, operator_inputs
    from deconv_cli.errors import DeconvError

    if image is not None and image.lower().endswith(".onnx") and kernel.kernel_spec is None:
        geometry_flags = ("mode", "boundary", "correlate", "stride", "dilation", "padding")
        if (noise_sigma, bits, spectrum, axes) != (None,) * 4 or given_flags(geometry_flags):
            raise DeconvError(
                "analyze MODEL takes the layers' geometry from the model: give only --shape, "
                "--format and --quiet"
            )
        analyze_model_command(image, shape, fmt, quiet)
        return
    if kernel.kernel_spec is None:
        raise DeconvError("analyze needs -k SPEC (or a MODEL.onnx as its first argument)")
    if noise_sigma is not None and bits is not None:
        raise DeconvError("give --noise-sigma or --bits, not both")
    geometry, kernel = operator_inputs(kernel, geometry)
    input_shape, spatial, image_bits = _image_shape(image, shape, kernel, axes)
    if spectrum is not None:  # refuse a bad --spectrum path before the work
        from deconv_cli.fs import check_target

        if spatial == 3:
            raise DeconvError("--spectrum: the picture is of 2-D operators; leave it out")
        check_target(spectrum, overwrite=overwrite, inputs=(image,) if image else ())
    op = kernel.operator(input_shape, geometry, spatial=spatial)
    source = None
    if noise_sigma is None and bits is None and image_bits is not None:
        bits, source = image_bits, f"{image_bits}-bit quantization (the image's)"
    result = run_analysis(op, noise_sigma=noise_sigma, bits=bits, noise_source=source)

    labelled = None
    if spectrum is not None:
        from deconv_cli.spectrum import write_spectrum

        inputs = (image,) if image else ()
        labelled = write_spectrum(spectrum, op, result, overwrite=overwrite, inputs=inputs)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        from deconv_cli.report import to_csv

        click.echo(to_csv(analysis_rows(result, op), _columns()), nl=False)
    elif fmt == "markdown":
        from deconv_cli.report import to_markdown

        title = f"analyze: kernel {kernel.description}"
        rows = analysis_rows(result, op)
        caption = " ".join(verdict_lines(result))
        click.echo(to_markdown(rows, _columns(), title=title, caption=caption), nl=False)
    else:
        from deconv_cli.cli.output import print_table

        print_table(
            analysis_rows(result, op),
            _columns(),
            title=f"analyze: kernel {kernel.description}",
            after=verdict_lines(result),
        )
    if spectrum is not None:
        from deconv_cli.spectrum import PLOT_HINT

        click.echo(
            f"wrote {spectrum}" + ("" if labelled else f" (raw picture; {PLOT_HINT})"), err=True
        )


def verdict_lines(analysis) -> list[str]:
    """``verdict: ...`` and one ``- reason`` line each."""
    return [f"verdict: {analysis.verdict}"] + [f"  - {reason}" for reason in analysis.reasons]


@click.command()
@click.argument("image", type=click.Path(path_type=str))
@kernel_options
@axes_option
@geometry_options()
@noise_options
@click.option(
    "--bits",
    type=click.IntRange(1, 32),
    default=None,
    help="Round the blurred data to this many bits (e.g. 8 or 16), as storing it would.",
)
@click.option(
    "-m",
    "--methods",
    default=None,
    metavar="A,B,...",
    help="Inversion methods to run (default: inverse, tikhonov, wiener, richardson-lucy, "
    "tv, cgls); see `deconv invert --help`.",
)
@format_option(ROUNDTRIP_FORMATS)
@click.option(
    "--montage",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    metavar="PATH",
    help="Write one labelled picture: the truth, the blurred data, the transpose and every "
    "method side by side, each captioned with its name, PSNR and SSIM.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    metavar="DIR",
    help="Keep blurred.npy, transpose.npy, <method>.npy and montage.png here.",
)
@click.option("--overwrite", is_flag=True, help="Replace existing --montage or --out-dir files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
def roundtrip(
    image,
    kernel,
    axes,
    geometry,
    noise,
    seed,
    bits,
    methods,
    fmt,
    montage,
    out_dir,
    overwrite,
    quiet,
):
    """Blur IMAGE, then undo it with the transpose and each inversion method.

    The image is blurred with the kernel and flags (plus --noise and --bits), then
    recovered with the transpose Aᵀy (which restores the shape, not the values)
    and each method. One table gives PSNR, SSIM and RMSE against the original
    (unclipped, [0, 1] scale) and the time, under the `analyze` verdict for the
    same noise level. Its first row, `blurred`, scores the data itself: what
    doing nothing gives, the baseline every method must beat.

    A volume (a TIFF stack, or .npy with --axes ZYX) is measured as one (SSIM
    7×7×7); methods that take 2-D images only are not run; the montage shows the
    central plane.

    Long notes go under the table as numbered footnotes. On a terminal a live
    status line shows the method running; in a log, one line per method.

    \b
    Examples:
      deconv roundtrip photo.png -k gaussian:sigma=2 --noise gaussian:sigma=0.01 --seed 0
      deconv roundtrip photo.png -k gaussian:sigma=2 --montage side-by-side.png
      deconv roundtrip photo.png -k box:size=4 --boundary wrap --bits 8 -m inverse,tv
      deconv roundtrip x.png -k samples/haar_bank.npy --correlate --stride 2 --mode valid
      deconv roundtrip photo.png -k disk:radius=3 --out-dir results/ --format markdown
      deconv roundtrip stack.tif -k gaussian:sigma=1,sigma_z=2 -m richardson-lucy,wiener
    """
    import json

    from deconv_cli.cli import said
    from deconv_cli.cli.models import operator_inputs
    from deconv_cli.cli.output import live_status
    from deconv_cli.noise import parse_noise
    from deconv_cli.process import kernel_layout
    from deconv_cli.roundtrip import check_methods
    from deconv_cli.roundtrip import roundtrip as run_roundtrip

    geometry, kernel = operator_inputs(kernel, geometry)
    names = check_methods([m.strip() for m in (methods or "").split(",") if m.strip()])
    parsed_noise = parse_noise(noise)
    from deconv_cli.volumes import read_volume

    read = read_volume(image, axes=axes, max_channels=kernel.max_channels)
    spatial, data = kernel_layout(kernel, read.axes, f"`{image}`"), read.data
    if montage is not None:  # refuse a bad --montage path before the work
        from deconv_cli.roundtrip import check_montage

        check_montage(montage, out_dir, overwrite=overwrite, inputs=(image,))
    if out_dir is not None:
        from deconv_cli.roundtrip import check_out_dir

        check_out_dir(out_dir, names, overwrite=overwrite)

    with live_status(len(names), quiet=quiet, label="roundtrip") as step:
        result = run_roundtrip(
            data,
            kernel.array,
            geometry,
            noise=parsed_noise,
            seed=seed,
            bits=bits,
            methods=names,
            on_method=step,
            spatial=spatial,
            groups=kernel.groups,
        )
    for row in result.rows:  # the methods' notes name their parameters: say the flags
        row.note = said(row.note)
    if montage is not None:
        from deconv_cli.roundtrip import write_montage

        write_montage(result, montage, overwrite=overwrite, inputs=(image,))
        if not quiet:
            click.echo(f"wrote {montage}", err=True)
    if out_dir is not None:
        from deconv_cli.roundtrip import save_outputs

        save_outputs(result, out_dir, overwrite=overwrite)
        if not quiet:
            click.echo(f"wrote {out_dir}: the .npy arrays and montage.png", err=True)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
        return
    from deconv_cli.report import Column, metric_column

    columns = [
        Column("method", "method"),
        metric_column("psnr"),
        metric_column("ssim"),
        metric_column("rmse"),
        Column("seconds", "time", fmt=".2f", unit="s", numeric=True),
        Column("note", "note", footnote=True),
    ]
    title = (
        f"roundtrip: {image} · kernel {kernel.description} · {geometry.describe()} · "
        f"noise: {result.noise}"
    )
    rows = [row.as_dict() for row in result.rows]
    if fmt == "markdown":
        from deconv_cli.report import to_markdown

        verdict = "\n".join(verdict_lines(result.analysis))
        click.echo(f"{verdict}\n\n{to_markdown(rows, columns, title=title)}", nl=False)
        return
    from deconv_cli.cli.output import print_table

    print_table(rows, columns, title=title, before=verdict_lines(result.analysis))


COMMANDS = [analyze, roundtrip]
