"""Model files on the command line: ``kernels list FILE``, ``analyze MODEL.onnx``, and
a layer's geometry merged with the geometry flags (``-k model.onnx#LAYER``)."""

from __future__ import annotations

import click

# Geometry flags and the layer attribute each must agree with.
_GEOMETRY_FLAGS = ("mode", "boundary", "stride", "dilation", "padding")


def operator_inputs(kernel_request, geometry_request):
    """``(Geometry, Kernel)`` for a command's ``-k`` and geometry flags.

    A kernel read from an ONNX layer brings its geometry (zero padding, correlation,
    stride, dilation); a geometry flag given on the command line that contradicts
    it is a usage error.
    """
    from deconv_cli.errors import GeometryError
    from deconv_cli.operators import parse_pair

    geometry = geometry_request.create()
    kernel = kernel_request.load(volume=True)  # a 3-D kernel takes volumes (--axes)
    layer = kernel.layer
    if layer is None or not layer.has_geometry:
        return geometry, kernel
    own = layer.geometry()
    given = given_flags(_GEOMETRY_FLAGS)
    expected = {
        "mode": "valid",
        "boundary": "constant",
        "stride": own.stride,
        "dilation": own.dilation,
        "padding": own.padding,
    }
    for name in given:
        value = getattr(geometry_request, name)
        if name in ("stride", "dilation", "padding"):
            value = parse_pair(value, f"--{name}", minimum=0)
        elif name == "boundary":
            value = geometry.boundary
        if name == "mode" or value != expected[name]:
            hint = "" if name == "mode" else f" or give --{name} {_flag_value(expected[name])}"
            raise GeometryError(
                f"--{name} {getattr(geometry_request, name)}: layer `{layer.name}` sets its own "
                f"geometry ({layer.describe()}); drop the flag{hint}"
            )
    return own, kernel


def given_flags(names) -> list[str]:
    """The options among ``names`` given on the command line (not defaults)."""
    ctx = click.get_current_context()
    source = click.core.ParameterSource.COMMANDLINE
    return [name for name in names if ctx.get_parameter_source(name) == source]


def _flag_value(value) -> str:
    if isinstance(value, tuple):
        return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
    return str(value)


@click.command("list")
@click.argument("file", type=click.Path(path_type=str))
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(("table", "json")),
    default="table",
    show_default=True,
    help="Output format, on stdout.",
)
def list_layers(file: str, fmt: str) -> None:
    """List the convolution weights a model FILE holds.

    FILE is `.safetensors`, `.onnx` or a PyTorch `.pt`/`.pth` checkpoint (read with
    torch.load(weights_only=True): a pickle that needs more is refused). For ONNX,
    every Conv/ConvTranspose layer with its geometry; otherwise every 4-D tensor.
    Use one as a kernel with `-k FILE#NAME`.

    \b
    Examples:
      deconv kernels list model.onnx
      deconv kernels list weights.safetensors --format json
      deconv convolve x.npy -k model.onnx#/conv1/Conv -o y.npy
    """
    import json
    from pathlib import Path

    from deconv_cli.errors import KernelError
    from deconv_cli.models import MODEL_SUFFIXES, read_layers

    path = Path(file)
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise KernelError(
            f"FILE: `{file}` is not a model file; use one of " + ", ".join(MODEL_SUFFIXES)
        )
    layers = read_layers(path)
    rows = [
        {
            "name": layer.name,
            "kind": layer.kind,
            "shape": list(layer.weight.shape),
            "weight": layer.weight_name,
            "stride": list(layer.stride) if layer.has_geometry else None,
            "pads": list(layer.pads) if layer.has_geometry else None,
            "dilation": list(layer.dilation) if layer.has_geometry else None,
            "groups": layer.groups if layer.has_geometry else None,
        }
        for layer in layers
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from deconv_cli.cli.output import print_table
    from deconv_cli.report import Column

    table = [
        {"name": layer.name, "kind": layer.kind, "description": layer.describe()}
        for layer in layers
    ]
    columns = [Column("name", "name"), Column("kind", "kind"), Column("description", "weight")]
    print_table(table, columns, title=f"{file}: {len(layers)} conv weights")


MODEL_FORMATS = ("table", "json", "csv", "markdown")


def analyze_model_command(model: str, shape: str | None, fmt: str, quiet: bool) -> None:
    """``deconv analyze MODEL.onnx --shape HxWxC``: one row per conv layer."""
    import json

    from deconv_cli.cli.output import live_status
    from deconv_cli.errors import DeconvError
    from deconv_cli.models_analysis import analyze_plan, layer_plan

    if shape is None:
        raise DeconvError("analyze MODEL needs the network input: --shape HxWxC (e.g. 224x224x3)")
    from deconv_cli.cli.analyze import _parse_shape

    dims, _ = _parse_shape(shape, None)
    if len(dims) != 3:
        raise DeconvError(f"--shape: `{shape}` must be HxWxC for a MODEL (e.g. 224x224x3)")
    plan = layer_plan(model, dims)
    with live_status(len(plan), quiet=quiet, label="analyze") as step:
        result = analyze_plan(plan, on_layer=step)
    if fmt == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
        return
    from deconv_cli.report import to_csv, to_markdown

    table, columns = _table(result, compact=fmt == "table")
    summary = [
        f"product of σ_max (Lipschitz bound of the conv chain): {result.lipschitz_bound:.4g}.",
        "layers that lose information: " + (", ".join(result.lossy) or "none proven") + ".",
    ]
    if fmt == "csv":
        click.echo(to_csv(table, columns), nl=False)
    elif fmt == "markdown":
        title = f"analyze {model} at {shape}"
        click.echo(to_markdown(table, columns, title=title, caption=" ".join(summary)), nl=False)
    else:
        from deconv_cli.cli.output import print_table

        print_table(table, columns, title=f"analyze {model} at {shape}", after=summary)


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _table(result, *, compact: bool):
    """Rows and columns: every field (CSV, markdown), or the geometry in one column."""
    from deconv_cli.report import Column

    def bound(row, key: str, sign: str) -> str:
        value = getattr(row, key)
        if value is None:
            return "—"
        return ("" if row.exact[key] else sign) + f"{value:.4g}"

    table = []
    for row in result.layers:
        pads = ",".join(map(str, row.padding))
        table.append(
            {
                "layer": row.layer,
                "kind": row.kind,
                "channels": f"{row.channels_in}→{row.channels_out}",
                "kernel": _dims(row.kernel),
                "stride": _dims(row.stride),
                "padding": pads,
                "dilation": _dims(row.dilation),
                "groups": row.groups,
                "geometry": f"{_dims(row.kernel)} s{_dims(row.stride)} p{pads}"
                + (f" d{_dims(row.dilation)}" if row.dilation != (1, 1) else "")
                + (f" g{row.groups}" if row.groups > 1 else ""),
                "shapes": f"{_dims(row.input_shape)} → {_dims(row.output_shape)}",
                "rank": "?" if row.rank is None else f"{row.rank}/{row.nullity}",
                "sigma_max": bound(row, "sigma_max", "<="),
                "sigma_min": bound(row, "sigma_min", "~"),
                "condition": "—"
                if row.condition_number is None
                else ("" if row.exact["sigma_min"] else "~") + f"{row.condition_number:.4g}",
                "verdict": row.verdict,
            }
        )
    geometry = (
        [Column("geometry", "kernel, stride, pads")]
        if compact
        else [
            Column("kernel", "kernel"),
            Column("stride", "stride"),
            Column("padding", "pads"),
            Column("dilation", "dilation"),
            Column("groups", "groups"),
        ]
    )
    columns = [
        Column("layer", "layer"),
        *([] if compact else [Column("kind", "kind")]),
        Column("channels", "in→out"),
        *geometry,
        Column("shapes", "input → output"),
        Column("rank", "rank/nullity"),
        Column("sigma_max", "σ_max"),
        Column("sigma_min", "σ_min"),
        Column("condition", "condition"),
        Column("verdict", "verdict", footnote=True),
    ]
    return table, columns
