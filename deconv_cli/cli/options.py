"""Option bundles shared by commands, so a flag means the same thing everywhere."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import click

BOUNDARY_HELP = """What lies outside the image (input `a b c d`):
constant `0 0 0|a b c d|0 0 0`, reflect `c b a|a b c d|d c b`,
mirror `d c b|a b c d|c b a`, nearest `a a a|a b c d|d d d`,
wrap `b c d|a b c d|a b c`. Aliases: zero, edge/replicate, circular/periodic."""


def _stack(*decorators):
    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def _collect(cls, name: str, **extra):
    """Pass the options named by ``cls``'s fields to the command as one ``name=cls(...)``."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(**kwargs):
            values = {f.name: kwargs.pop(f.name) for f in fields(cls) if f.name not in extra}
            return func(**{name: cls(**values, **extra)}, **kwargs)

        return wrapper

    return decorate


@dataclass
class KernelRequest:
    """``-k SPEC --normalize`` as given."""

    kernel_spec: str
    normalize: bool

    def load(self, *, volume: bool = False):
        """The kernel (:func:`deconv_cli.kernels.load_kernel`); ``volume``: a 3-D kernel
        is accepted (the command processes volumes)."""
        from deconv_cli.kernels import load_kernel

        return load_kernel(self.kernel_spec, normalize=self.normalize, volume=volume)


def kernel_options(func=None, *, required: bool = True):
    """``-k SPEC --normalize``, passed to ``func`` as ``kernel=KernelRequest``."""
    if func is None:
        return functools.partial(kernel_options, required=required)
    return _stack(
        click.option(
            "-k",
            "--kernel",
            "kernel_spec",
            required=required,
            metavar="SPEC",
            help="Kernel: `family:param=value,...` (see `deconv kernels`) or a file "
            "(.npy, .csv/.txt, image). A 4-D (C_out, C_in, kh, kw) array is a conv-layer bank. "
            "A model file's tensor or layer: `FILE#NAME` (.safetensors, .onnx, .pt; see "
            "`deconv kernels list FILE`); an ONNX layer brings its geometry.",
        ),
        click.option(
            "--normalize",
            is_flag=True,
            help="Divide a kernel file by its sum (named blur families always sum to 1).",
        ),
    )(_collect(KernelRequest, "kernel")(func))


@dataclass
class GeometryRequest:
    """``--mode --boundary --correlate --stride --dilation --padding`` as given.

    ``unknown`` is ``--boundary unknown`` (``invert`` only): the data is a crop of a
    larger scene, whose operator is modelled with ``reflect`` inside the crop.
    """

    mode: str | None
    boundary: str
    correlate: bool
    stride: str
    dilation: str
    padding: str | None
    allow_unknown: bool = False

    @property
    def unknown(self) -> bool:
        return self.allow_unknown and self.boundary == "unknown"

    def create(self):
        """The validated :class:`deconv_cli.operators.Geometry`."""
        from deconv_cli.operators import Geometry

        return Geometry.create(
            mode=self.mode,
            boundary="reflect" if self.unknown else self.boundary,
            correlate=self.correlate,
            stride=self.stride,
            dilation=self.dilation,
            padding=self.padding,
        )


def geometry_options(*, boundaries_extra: tuple[str, ...] = ()):
    """``--mode --boundary --correlate --stride --dilation --padding``, passed to the
    command as ``geometry=GeometryRequest``."""
    options = _stack(
        click.option(
            "--mode",
            default=None,
            metavar="same|full|valid",
            help="Extent of the output (default: same).",
        ),
        click.option(
            "--boundary",
            default="reflect",
            show_default=True,
            metavar="|".join(
                ("constant", "reflect", "mirror", "nearest", "wrap") + boundaries_extra
            ),
            help=BOUNDARY_HELP,
        ),
        click.option(
            "--correlate",
            is_flag=True,
            help="Cross-correlation (no kernel flip), as deep-learning conv layers compute.",
        ),
        click.option(
            "--stride",
            default="1",
            show_default=True,
            metavar="S|SxT",
            help="Keep every S-th output sample (top-left anchored); per axis SxT, or "
            "SxTxU on volumes (z, y, x).",
        ),
        click.option(
            "--dilation",
            default="1",
            show_default=True,
            metavar="D|DxE",
            help="Insert D-1 zeros between kernel taps (per axis as --stride).",
        ),
        click.option(
            "--padding",
            default=None,
            metavar="P|PxQ",
            help="Pad P with the --boundary fill, then `valid` (conv-layer style; per axis "
            "as --stride).",
        ),
    )
    collect = _collect(GeometryRequest, "geometry", allow_unknown="unknown" in boundaries_extra)
    return lambda func: options(collect(func))


output_shape_option = click.option(
    "--output-shape",
    default=None,
    metavar="HxW",
    help="Shape of the image to recover where a stride maps several shapes to one "
    "(default: the smallest, as conv_transpose2d); ZxHxW for a volume.",
)


NOISE_HELP = """Add seeded noise after blurring: `gaussian:sigma=S`, `poisson:peak=P`
(P photons for a value of 1), `quantize:bits=B` (round to B bits) or `jpeg:quality=Q`
(store as an 8-bit JPEG and decode); join steps with `+`, applied in order, e.g.
`gaussian:sigma=0.01+jpeg:quality=90`."""


def noise_options(func):
    """``--noise SPEC --seed N``, passed to ``func`` as ``noise`` (str) and ``seed``."""
    return _stack(
        click.option("--noise", default=None, metavar="SPEC", help=NOISE_HELP),
        click.option(
            "--seed",
            type=click.IntRange(min=0),
            default=None,
            help="Seed for --noise (reproducible data).",
        ),
    )(func)


@dataclass
class BatchRequest:
    """The processing options every processing command shares, as one value."""

    inputs: tuple[str, ...]
    output: str
    overwrite: bool
    skip_existing: bool
    dtype: str | None
    quiet: bool
    recursive: bool
    name: str | None
    fmt: str | None
    jobs: int
    scheduler: str | None
    fail_fast: bool
    tile: int | tuple[int, ...] | None
    axes: str | None


AXES_HELP = (
    "The inputs' axes as stored, from Z, Y, X, C (channels): e.g. ZYX, ZYXC, CZYX, YXC. "
    "Needed for a .npy volume; a TIFF's ImageJ/OME metadata says its own (this must "
    "agree), a plain multi-page TIFF's pages are Z. Default: 2-D images (H×W[×C])."
)


def axes_option(func):
    """``--axes AXES``, passed to ``func`` as ``axes`` (checked: ``volumes.parse_axes``)."""
    return click.option(
        "--axes", default=None, metavar="ZYX|ZYXC|YXC|...", callback=_check_axes, help=AXES_HELP
    )(func)


def _check_axes(ctx, param, value):
    if value is None:
        return None
    from deconv_cli.errors import DeconvError
    from deconv_cli.volumes import parse_axes

    try:
        return parse_axes(value)
    except DeconvError as err:
        raise click.BadParameter(err.detail) from None


def _check_tile(ctx, param, value):
    if value is None:
        return None
    from deconv_cli.errors import DeconvError
    from deconv_cli.tiles import parse_tile

    try:
        return parse_tile(value)
    except DeconvError as err:
        raise click.BadParameter(err.detail) from None


def processing_options(func):
    """``INPUT... -o OUT`` and the batch options, passed to ``func`` as ``batch=BatchRequest``."""
    return _stack(
        click.argument(
            "inputs", nargs=-1, required=True, type=click.Path(path_type=str), metavar="INPUT..."
        ),
        click.option(
            "-o",
            "--output",
            required=True,
            type=click.Path(path_type=str),
            help="Output file; a directory for several inputs (created if missing); "
            "`-` for standard output.",
        ),
        click.option("--overwrite", is_flag=True, help="Replace existing output files."),
        click.option(
            "--skip-existing",
            is_flag=True,
            help="Skip inputs whose output exists (resume an interrupted batch).",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["uint8", "uint16", "float32", "float64"]),
            default=None,
            help="Output data type (default: the input's, as the format allows).",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing but failures."),
        click.option(
            "-r", "--recursive", is_flag=True, help="Descend into subdirectories of INPUT dirs."
        ),
        click.option(
            "--name",
            default=None,
            metavar="TEMPLATE",
            help="Output file names in the -o directory, from {stem} and {ext} "
            "(default `{stem}{ext}`), e.g. `{stem}_deblurred{ext}`.",
        ),
        click.option(
            "--format",
            "fmt",
            default=None,
            metavar="png|tif|npy|jpg|bmp",
            help="Output format (needed for `-o -` when the input's cannot be used).",
        ),
        click.option(
            "-j",
            "--jobs",
            type=click.IntRange(min=0),
            default=1,
            show_default=True,
            help="Parallel worker processes; 0 = one per core.",
        ),
        click.option(
            "--scheduler",
            default=None,
            metavar="ADDRESS|local",
            help="Run the items on a Dask cluster (`local` starts one); needs deconv-cli[dask].",
        ),
        click.option(
            "--fail-fast", is_flag=True, help="Stop at the first failed item (default: go on)."
        ),
        click.option(
            "--tile",
            default=None,
            metavar="SIZE|ZxYxX",
            callback=_check_tile,
            help="Process each image in SIZE x SIZE tiles (a volume in SIZE³ boxes, or "
            "ZxYxX), with bounded memory (exact for convolve/transpose).",
        ),
        axes_option,
    )(_collect(BatchRequest, "batch")(func))


def method_options(func):
    """One flag per option of the methods (:data:`deconv_cli.restore.OPTIONS`: its type,
    low bound and help; ``noise_sigma`` is ``--noise-sigma``), passed to ``func`` as
    ``method_options``: ``{name: value or None}``. The upper limits, some relative to
    the data, are checked with the data (:func:`deconv_cli.restore.check_options`)."""
    from deconv_cli.restore import OPTIONS

    def collect(f):
        @functools.wraps(f)
        def wrapper(**kwargs):
            return f(method_options={name: kwargs.pop(name) for name in OPTIONS}, **kwargs)

        return wrapper

    flags = [
        click.option(
            "--" + option.name.replace("_", "-"),
            cls=_SaidHelp,
            type=_click_type(option),
            default=None,
            callback=_low_bound(option),
            help=option.help,
        )
        for option in OPTIONS.values()
    ]
    return _stack(*flags)(collect(func))


class _SaidHelp(click.Option):
    """An option whose help, written by the library, names other parameters with
    :func:`~deconv_cli.errors.mention`: said as flags when read (the flags are known
    once every command is built, after the options are)."""

    @property
    def help(self) -> str | None:
        from deconv_cli.cli import said

        return None if self._help is None else said(self._help)

    @help.setter
    def help(self, text: str | None) -> None:
        self._help = text


def _click_type(option):
    """Click's range type where it shows the bound in the help (``[x>=1]``), else plain."""
    if option.type is int:
        return click.IntRange(min=int(option.low), min_open=option.low_open)
    return float if option.low_open else click.FloatRange(min=option.low)


def _low_bound(option):
    def check(ctx, param, value):
        if value is not None:
            from deconv_cli.errors import DeconvError

            try:
                option.check(value, scale=None)
            except DeconvError as err:
                raise click.BadParameter(err.detail) from None
        return value

    return check


def format_option(formats: tuple[str, ...]):
    """``-f/--format`` over ``formats`` (default ``table``), printed on stdout."""
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(formats),
        default="table",
        show_default=True,
        help="Output format, on stdout.",
    )
