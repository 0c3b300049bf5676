"""Kernels: the named families, the ``family:param=value,...`` spec parser, kernel files.

A kernel is a 2-D array ``(kh, kw)`` applied to each image channel alike, or a 4-D
conv-layer bank ``(C_out, C_in, kh, kw)``, or a 3-D volume kernel ``(kz, ky, kx)`` (a
microscope PSF: :mod:`deconv_cli.psf`). :func:`load_kernel` turns a spec string into a
validated, read-only :class:`Kernel`.

Conventions
-----------
Coordinates
    ``x`` points right along array columns, ``y`` points *up* on the displayed
    image, that is towards row 0. Angles are in degrees, counter-clockwise as the
    image is displayed: ``angle=0`` is horizontal, ``angle=90`` vertical, and
    ``motion:angle=45`` runs from the bottom-left to the top-right corner.
Centre
    Families build kernels centred on the middle of the array; the family kernels
    with a size parameter may be even-sized (the centre then lies between pixels),
    except ``identity``, whose delta needs a centre pixel.
Normalization
    The blur families (gaussian, box, disk, motion, shake) sum to 1. ``laplacian`` sums
    to 0 and ``identity`` is a delta. Kernel files are used exactly as stored (a
    conv layer's weights are not a PSF) unless ``normalize=True`` divides them by
    their sum; a zero-sum kernel is never divided by its sum.

Families
--------
gaussian
    Point samples of ``exp(-u²/2σ² - v²/2σ_y²)``, ``u`` along ``angle`` and ``v``
    across it. ``size`` defaults to ``2⌈3·max(σ, σ_y)⌉+1`` (square). With ``sigma_z``
    a 3-D kernel: times ``exp(-z²/2σ_z²)`` on ``2⌈3σ_z⌉+1`` planes.
widefield
    The scalar Born & Wolf PSF of a widefield microscope (3-D; :mod:`deconv_cli.psf`).
box
    Uniform over ``size`` = ``N`` or ``HxW`` (H rows, W columns).
disk
    Each pixel's area fraction inside the disc of ``radius`` centred on the centre
    pixel (outline pixels supersampled 32x32); odd support ``2⌈r+½⌉-1``.
motion
    Each pixel's area fraction inside a 1-pixel-wide bar of ``length`` along
    ``angle``, centred on the centre pixel; the support is odd and centred. The
    length counts pixels end to end: at 0° or 90° an odd whole length gives exactly
    that many equal taps, other lengths fractional end taps (``motion:length=4``
    is ``[.5, 1, 1, 1, .5] / 4``).
shake
    Camera shake: a random smooth trajectory of the Boracchi & Foi (2012) model,
    drawn from ``seed`` (see :func:`shake_trajectory`), scaled to fit a ``size``
    square about its centroid, sampled at 2000 sub-pixel points and rasterized by
    bilinear splatting. It sums to 1, and its centroid is the array centre (bilinear
    splatting keeps the mean position). The same seed gives the same kernel.
laplacian
    ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``, or with ``neighbors=8`` the 8-neighbour
    ``[[1, 1, 1], [1, -8, 1], [1, 1, 1]]``.
identity
    A 1x1 delta, or a centred delta in an odd ``size``.
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deconv_cli import fs, psf
from deconv_cli.errors import InputError, KernelError, choice_error
from deconv_cli.formats import READ_EXTENSIONS

MAX_SIZE = 4097
"""The largest kernel side a family builds (a 4097x4097 float64 kernel is 134 MB)."""

SUPERSAMPLING = 32
"""Samples per pixel side when disk and motion compute pixel coverage."""

TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
IMAGE_SUFFIXES = tuple(ext for ext in READ_EXTENSIONS if ext != ".npy")
"""Kernel images: every format deconv reads (:mod:`deconv_cli.formats`), made grey."""
FILE_SUFFIXES = (".npy", *TEXT_SUFFIXES, *IMAGE_SUFFIXES)

_SHAPES_ALLOWED = (
    "2-D (kh, kw), 1-D (read as a 1xN row), a 3-D volume (kz, ky, kx) "
    "or a 4-D bank (C_out, C_in, kh, kw)"
)


@dataclass(frozen=True, eq=False)
class Kernel:
    """A validated kernel.

    Attributes
    ----------
    array : (kh, kw), (kz, ky, kx) or (C_out, C_in, kh, kw) ndarray
        float64, C-contiguous and read-only.
    description : str
        A canonical spec (``"gaussian:sigma=2,size=13"``), or ``"file NAME (SHAPE)"``.
    family : str or None
        The family name, or ``None`` for a kernel read from a file.
    layer : deconv_cli.models.Layer or None
        The model-file layer it was read from (``FILE#NAME``), with its geometry.
    spacing : tuple of float or None
        A volume kernel's voxel size ``(dz, dy, dx)`` in µm when its model knows it.
    """

    array: np.ndarray
    description: str
    family: str | None = field(default=None)
    layer: object = field(default=None, repr=False)
    spacing: tuple[float, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim not in (2, 3, 4) or array.size == 0:
            raise KernelError(
                f"kernel `{self.description}` has shape {array.shape}: a kernel must be "
                f"{_SHAPES_ALLOWED.replace('1-D (read as a 1xN row), ', '')}, and not empty"
            )
        if array.dtype != np.float64 or not array.flags.c_contiguous or array.flags.writeable:
            array = np.array(array, dtype=np.float64, order="C", copy=True)
            array.setflags(write=False)
        object.__setattr__(self, "array", array)

    @property
    def is_bank(self) -> bool:
        """Whether this is a 4-D conv-layer bank ``(C_out, C_in, kh, kw)``."""
        return self.array.ndim == 4

    @property
    def is_volume(self) -> bool:
        """Whether this is a 3-D volume kernel ``(kz, ky, kx)``."""
        return self.array.ndim == 3

    @property
    def max_channels(self) -> int | None:
        """The most channels an image may have: 4 (:data:`deconv_cli.formats.MAX_CHANNELS`), or
        any number for a bank (its operator checks the count the bank takes)."""
        from deconv_cli.formats import MAX_CHANNELS

        return None if self.is_bank else MAX_CHANNELS

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(kh, kw)``: the shape of one spatial kernel."""
        kh, kw = self.array.shape[-2:]
        return (int(kh), int(kw))


def load_kernel(spec: str, *, normalize: bool = False, volume: bool = False) -> Kernel:
    """Parse ``family:param=value,...`` (or a bare ``family``), or load a file path.

    Parameters
    ----------
    spec : str
        A family spec such as ``"gaussian:sigma=2"``, ``"box:size=5x3"``,
        ``"motion:length=9,angle=30"``, ``"laplacian"``; or the path of a
        ``.npy``, text/CSV (``.csv .txt .tsv .dat``) or image file. A bare word
        is a family if it names one, else a path. See :func:`family_table`. Or a
        tensor or layer of a model file, ``FILE#NAME`` (:mod:`deconv_cli.models`).
    normalize : bool
        Divide the kernel by its sum. Blur families already sum to 1; a
        zero-sum kernel cannot be normalized.
    volume : bool
        Accept a 3-D volume kernel ``(kz, ky, kx)`` (a TIFF stack, a 3-D ``.npy``,
        ``gaussian`` with ``sigma_z``, ``widefield``); without it one is refused,
        for the commands that process 2-D images.

    Returns
    -------
    Kernel

    Raises
    ------
    KernelError
        For an unknown family or parameter, a malformed or out-of-range value,
        a missing, unreadable or pickled file, an unusable shape, NaN/Inf
        entries, an empty or all-zero kernel.

    Notes
    -----
    Files: ``.npy`` is read with ``allow_pickle=False``. Text files are read with
    ``np.loadtxt`` (comma-separated if the file has a comma, else whitespace;
    ``#`` starts a comment). Images are read with imageio; integer images are
    divided by their dtype's maximum, an RGB(A) PSF image becomes gray as the mean
    of its R, G, B channels (alpha is dropped). A 1-D array is a 1xN row kernel.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise KernelError(
            "kernel spec is empty; give a family such as `gaussian:sigma=2` or a file path "
            "(see `deconv kernels`)"
        )
    spec = spec.strip()
    from deconv_cli.models import load_model_kernel

    model_kernel = load_model_kernel(spec, normalize=normalize)
    if model_kernel is not None:
        return model_kernel
    name, sep, params = spec.partition(":")
    family_name = name.strip().lower()
    if family_name in _FAMILIES:
        kernel = _build_family(_FAMILIES[family_name], params if sep else "", normalize)
        return _volume_checked(kernel, volume, f"kernel `{kernel.description}`")
    path = Path(spec).expanduser()
    fs.probe(path, KernelError, "kernel", follow=True)  # a name too long, a link loop...
    if path.is_file():
        return _volume_checked(_load_file(path, spec, normalize), volume, f"kernel file `{spec}`")
    if path.exists():
        raise KernelError(f"kernel file `{spec}` is not a regular file")
    if _looks_like_path(spec):
        raise KernelError(f"kernel file `{spec}` not found")
    families = ", ".join(_FAMILIES)
    hint = _did_you_mean(family_name, _FAMILIES)
    if sep:
        raise KernelError(f"unknown kernel family `{name.strip()}`;{hint} families: {families}")
    raise KernelError(
        f"kernel `{spec}` is neither a kernel family nor an existing file;{hint} "
        f"families: {families}"
    )


def kernel_from_array(array, *, normalize: bool = False, name: str = "kernel") -> Kernel:
    """A kernel from an array in memory, validated as kernel files are.

    Parameters
    ----------
    array : array_like
        2-D ``(kh, kw)``, 1-D (a ``1xN`` row) or a 4-D bank ``(C_out, C_in, kh, kw)``;
        real, finite, not all zero.
    normalize : bool
        Divide the kernel by its sum.
    name : str
        What error messages call the array (the caller's parameter name).

    Returns
    -------
    Kernel
        Described as ``array (SHAPE)``.

    Raises
    ------
    KernelError
        For complex or non-numeric values, an unusable shape, NaN/Inf entries, an
        empty or all-zero array, or a zero-sum kernel to normalize.
    """
    where = f"`{name}`"
    array = _validate_array(np.asarray(array), where)
    shape = "x".join(str(n) for n in array.shape)
    return _volume_checked(_finish(array, f"array ({shape})", None, normalize, where), False, where)


def _volume_checked(kernel: Kernel, volume: bool, where: str) -> Kernel:
    if kernel.is_volume and not volume:
        shape = "x".join(str(n) for n in kernel.array.shape)
        raise KernelError(
            f"{where} is a 3-D volume kernel ({shape}); this command "
            "processes 2-D images (see `deconv kernels show` for volume kernels)"
        )
    return kernel


def family_table() -> list[dict]:
    """Describe every family, for ``deconv kernels``.

    Returns
    -------
    list of dict
        One per family, in display order, with keys ``name`` (str), ``params``
        (list of ``(name, default, help)`` string triples; the default as
        displayed, e.g. ``"2*ceil(3*sigma)+1"``) and ``summary`` (str).
    """
    return [
        {
            "name": fam.name,
            "params": [(p.name, p.default_text, p.help) for p in fam.params],
            "summary": fam.summary,
        }
        for fam in _FAMILIES.values()
    ]


def kernel_slices(kernel: Kernel) -> list[tuple[str, np.ndarray, float]]:
    """Split a kernel into its spatial slices, for display.

    Returns
    -------
    list of (label, 2-D ndarray, sum)
        One entry (label ``""``) for a 2-D kernel; one per ``(out, in)`` pair,
        labelled ``"out o, in i"``, for a bank; for a volume its central plane
        ``(ky, kx)`` and its axial slice ``(kz, kx)`` through the central row.
    """
    if kernel.is_volume:
        a = kernel.array
        cz, cy = a.shape[0] // 2, a.shape[1] // 2
        return [
            (f"plane z={cz} of {a.shape[0]}, y x", a[cz], float(a[cz].sum())),
            (f"axial slice y={cy} of {a.shape[1]}, z x", a[:, cy], float(a[:, cy].sum())),
        ]
    if not kernel.is_bank:
        return [("", kernel.array, float(kernel.array.sum()))]
    c_out, c_in = kernel.array.shape[:2]
    return [
        (f"out {o}, in {i}", kernel.array[o, i], float(kernel.array[o, i].sum()))
        for o in range(c_out)
        for i in range(c_in)
    ]


# --------------------------------------------------------------------------- spec parsing


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # "positive", "real", "size", "choice", "seed"
    default: object
    default_text: str
    help: str
    choices: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Family:
    name: str
    summary: str
    params: tuple[_Param, ...]
    build: Callable[[dict], np.ndarray]
    describe: Callable[[dict], str]

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" did you mean `{close[0]}`?" if close else ""


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or Path(spec).suffix.lower() in FILE_SUFFIXES


def _fmt(value: float) -> str:
    return f"{value:g}"


def _fmt_size(size: tuple[int, int]) -> str:
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def _parse_params(family: _Family, text: str) -> dict:
    where = f"kernel `{family.name}`"
    raw: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue  # tolerate "gaussian:" and a trailing comma
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key:
            raise KernelError(
                f"{where}: parameter `{item}` is not of the form name=value "
                f"(e.g. `{family.name}:{family.params[0].name}={family.params[0].default_text}`)"
                if family.params
                else f"{where}: parameter `{item}` is not of the form name=value"
            )
        if key not in family.param_names:
            allowed = ", ".join(family.param_names) or "none"
            raise KernelError(
                f"{where}: unknown parameter `{key}`;{_did_you_mean(key, family.param_names)} "
                f"parameters: {allowed}"
            )
        if key in raw:
            raise KernelError(f"{where}: parameter `{key}` is given twice")
        raw[key] = value
    values = {}
    for param in family.params:
        if param.name in raw:
            values[param.name] = _parse_value(where, param, raw[param.name])
        else:
            values[param.name] = param.default
    values["_given"] = frozenset(raw)
    return values


def _parse_number(where: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise KernelError(f"{where}: {name}=`{text}` is not a number") from None
    if not math.isfinite(value):
        raise KernelError(f"{where}: {name}=`{text}` must be a finite number")
    return value


def _parse_int(where: str, name: str, text: str, full: str) -> int:
    value = _parse_number(where, name, text)
    if not value.is_integer():
        raise KernelError(
            f"{where}: {name}=`{full}` must be a whole number of pixels, N or HxW (e.g. `5`, `5x3`)"
        )
    return int(value)


def _parse_value(where: str, param: _Param, text: str):
    name = param.name
    if param.kind == "size":
        parts = text.lower().replace("×", "x").split("x")
        if len(parts) > 2:
            raise KernelError(f"{where}: {name}=`{text}` must be N or HxW (e.g. `5`, `5x3`)")
        numbers = [_parse_int(where, name, p.strip(), text) for p in parts]
        if min(numbers) < 1:
            raise KernelError(f"{where}: {name}=`{text}` must be > 0")
        if max(numbers) > MAX_SIZE:
            raise KernelError(
                f"{where}: {name}=`{text}` exceeds the largest kernel side, {MAX_SIZE}"
            )
        return (numbers[0], numbers[-1])
    if param.kind == "choice":
        value = _parse_number(where, name, text)
        if value not in param.choices:
            raise choice_error(KernelError, f"{where}: {name}", text, param.choices)
        return int(value)
    value = _parse_number(where, name, text)
    if param.kind == "seed":
        if not value.is_integer() or value < 0:
            raise KernelError(f"{where}: {name}=`{text}` must be a whole number >= 0")
        return int(value)
    if param.kind == "positive" and value <= 0:
        raise KernelError(f"{where}: {name}=`{text}` must be > 0")
    return value


def _build_family(family: _Family, params: str, normalize: bool) -> Kernel:
    values = _parse_params(family, params)
    array = family.build(values)
    return _finish(
        array,
        family.describe(values),
        family.name,
        normalize,
        f"kernel `{family.name}`",
        values.get("_spacing"),
    )


def _finish(
    array: np.ndarray,
    description: str,
    family: str | None,
    normalize: bool,
    where: str,
    spacing: tuple[float, ...] | None = None,
) -> Kernel:
    if normalize:
        total = float(array.sum())
        if abs(total) <= 1e-12 * float(np.abs(array).sum()):
            raise KernelError(
                f"{where} sums to 0 (a zero-sum kernel, e.g. an edge detector) "
                "and cannot be normalized"
            )
        array = array / total
        if family is None:
            description = description[:-1] + ", normalized)"
    return Kernel(array, description, family, spacing=spacing)


# --------------------------------------------------------------------------- families


def _sized(where: str, what: str, side: int, hint: str) -> None:
    if side > MAX_SIZE:
        raise KernelError(
            f"{where}: {what} needs a {side}-pixel kernel, larger than the largest side "
            f"{MAX_SIZE}; {hint}"
        )


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, origin at the array centre, ``y`` up."""
    x = np.arange(width) - (width - 1) / 2
    y = (height - 1) / 2 - np.arange(height)
    return np.meshgrid(x, y)


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates along (``u``) and across (``v``) the direction ``angle`` degrees CCW."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return x * c + y * s, -x * s + y * c


def _build_gaussian(v: dict) -> np.ndarray:
    sigma = v["sigma"]
    sigma_y = sigma if v["sigma_y"] is None else v["sigma_y"]
    if v["size"] is None:
        side = 2 * math.ceil(3 * max(sigma, sigma_y) - 1e-9) + 1
        _sized(
            "kernel `gaussian`",
            f"sigma=`{_fmt(max(sigma, sigma_y))}`",
            side,
            f"give a smaller sigma (<= {(MAX_SIZE - 1) // 6}) or an explicit size",
        )
        v["size"] = (side, side)
    u, w = _rotate(*_grid(*v["size"]), v["angle"])
    with np.errstate(over="ignore", under="ignore"):
        g = np.exp(-0.5 * ((u / sigma) ** 2 + (w / sigma_y) ** 2))
    if v["sigma_z"] is not None:
        from deconv_cli.psf import axial_gaussian

        return axial_gaussian(g / g.sum(), v["sigma_z"])
    return g / g.sum()


def _describe_gaussian(v: dict) -> str:
    text = f"gaussian:sigma={_fmt(v['sigma'])}"
    if v["sigma_y"] is not None and v["sigma_y"] != v["sigma"]:
        text += f",sigma_y={_fmt(v['sigma_y'])}"
        if v["angle"] != 0:
            text += f",angle={_fmt(v['angle'])}"
    if v["sigma_z"] is not None:
        text += f",sigma_z={_fmt(v['sigma_z'])}"
    return text + f",size={_fmt_size(v['size'])}"


def _build_box(v: dict) -> np.ndarray:
    h, w = v["size"]
    return np.full((h, w), 1.0 / (h * w))


def _coverage(sdf: Callable, half_h: int, half_w: int) -> np.ndarray:
    """Fraction of each pixel inside a convex shape, given its signed distance function.

    Pixels whose centre is deeper than half a diagonal inside (outside) are fully
    covered (empty); the others, on the outline, are supersampled.
    """
    x, y = _grid(2 * half_h + 1, 2 * half_w + 1)
    dist = sdf(x, y)
    half_diagonal = math.sqrt(0.5)
    cover = (dist <= -half_diagonal).astype(np.float64)
    edge = np.flatnonzero(np.abs(dist) < half_diagonal)
    offsets = (np.arange(SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    ox, oy = (o.ravel() for o in np.meshgrid(offsets, offsets))
    flat, xs, ys = cover.reshape(-1), x.reshape(-1), y.reshape(-1)
    chunk = max(1, 2**20 // ox.size)
    for start in range(0, edge.size, chunk):
        idx = edge[start : start + chunk]
        inside = sdf(xs[idx, None] + ox, ys[idx, None] + oy) < 0
        flat[idx] = inside.mean(axis=1)
    return _trim(cover)


def _trim(array: np.ndarray) -> np.ndarray:
    """Drop all-zero border rows/columns in symmetric pairs, keeping the centre."""
    while array.shape[0] > 1 and not array[0].any() and not array[-1].any():
        array = array[1:-1]
    while array.shape[1] > 1 and not array[:, 0].any() and not array[:, -1].any():
        array = array[:, 1:-1]
    return np.ascontiguousarray(array)


def _build_disk(v: dict) -> np.ndarray:
    radius = v["radius"]
    half = max(0, math.ceil(radius + 0.5) - 1)
    _sized(
        "kernel `disk`",
        f"radius=`{_fmt(radius)}`",
        2 * half + 1,
        f"give radius <= {(MAX_SIZE - 1) // 2}",
    )
    cover = _coverage(lambda x, y: np.hypot(x, y) - radius, half, half)
    return cover / cover.sum()


def _build_motion(v: dict) -> np.ndarray:
    length, angle = v["length"], v["angle"]
    a, b = length / 2, 0.5
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    half_w = max(0, math.ceil(a * c + b * s + 0.5 - 1e-9) - 1)
    half_h = max(0, math.ceil(a * s + b * c + 0.5 - 1e-9) - 1)
    _sized(
        "kernel `motion`",
        f"length=`{_fmt(length)}`",
        2 * max(half_h, half_w) + 1,
        f"give length <= {MAX_SIZE - 1}",
    )

    def bar(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, w = _rotate(x, y, angle)
        du, dw = np.abs(u) - a, np.abs(w) - b
        outside = np.hypot(np.maximum(du, 0), np.maximum(dw, 0))
        return outside + np.minimum(np.maximum(du, dw), 0)

    cover = _coverage(bar, half_h, half_w)
    return cover / cover.sum()


SHAKE_SAMPLES = 2000
"""Points sampled along a ``shake`` trajectory (the model's ``numT``)."""


def shake_trajectory(seed: int, samples: int = SHAKE_SAMPLES) -> np.ndarray:
    """A random camera-shake trajectory: ``samples`` complex positions ``x + iy``.

    The model of Boracchi & Foi (2012): a particle moves at constant speed ``L/(n−1)``
    (``L = 1``: the scale is set later); at each step its velocity ``v`` gets

    ``dv = b + a·(g·(ξ₁ + iξ₂) − c·x_t)·L/(n−1)``,  then ``v ← v·(L/(n−1))/|v|``

    with ``ξ`` standard normal, a centripetal pull ``c ~ U(0, 0.7)`` back to the
    start, a gaussian term ``g ~ U(0, 10)``, an "anxiety" ``a ~ U(0, 0.1)``, and with
    probability ``p·a`` (``p ~ U(0, 0.2)``) an abrupt shake ``b = 2v·e^{i(π + U(−½, ½))}``
    (else ``b = 0``). The initial direction is uniform.

    References
    ----------
    G. Boracchi and A. Foi, "Modeling the performance of image restoration from
    motion blur", IEEE Trans. Image Process. 21(8), 3502-3517, 2012.
    """
    rng = np.random.default_rng(seed)
    centripetal, gaussian, big_shakes = 0.7 * rng.random(), 10 * rng.random(), 0.2 * rng.random()
    anxiety, angle = 0.1 * rng.random(), 2 * math.pi * rng.random()
    step = 1.0 / (samples - 1)
    kicks = rng.random(samples - 1) < big_shakes * anxiety
    turns = np.exp(1j * (math.pi + rng.random(samples - 1) - 0.5))
    normal = rng.standard_normal((samples - 1, 2)) @ np.array([1, 1j])
    v = complex(math.cos(angle), math.sin(angle)) * anxiety
    x = np.zeros(samples, dtype=np.complex128)
    for t in range(samples - 1):
        dv = anxiety * (gaussian * normal[t] - centripetal * x[t]) * step
        if kicks[t]:
            dv += 2 * v * turns[t]
        v += dv
        v *= step / abs(v)
        x[t + 1] = x[t] + v
    return x


def _build_shake(v: dict) -> np.ndarray:
    h, w = v["size"]
    path = shake_trajectory(v["seed"])
    path -= path.mean()
    # uniform scale so the path fits the box about its centroid (the array centre)
    reach = max(
        np.abs(path.real).max() / max((w - 1) / 2, 1e-300),
        np.abs(path.imag).max() / max((h - 1) / 2, 1e-300),
    )
    path = path / reach if reach > 0 else path
    cols = np.clip(path.real + (w - 1) / 2, 0, w - 1)
    rows = np.clip((h - 1) / 2 - path.imag, 0, h - 1)  # y up: towards row 0
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = rows - r0, cols - c0
    r0, c0 = r0.astype(np.intp), c0.astype(np.intp)
    splat = np.zeros((h + 1, w + 1))
    for dr, dc, weight in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        np.add.at(splat, (r0 + dr, c0 + dc), weight)
    kernel = splat[:h, :w]  # the extra row and column only ever receive zero weight
    return kernel / kernel.sum()


def _build_laplacian(v: dict) -> np.ndarray:
    if v["neighbors"] == 8:
        return np.array([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]])
    return np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _build_identity(v: dict) -> np.ndarray:
    h, w = v["size"]
    if h % 2 == 0 or w % 2 == 0:
        raise KernelError(
            f"kernel `identity`: size=`{_fmt_size(v['size'])}` must be odd so the delta "
            "has a centre pixel"
        )
    delta = np.zeros((h, w))
    delta[h // 2, w // 2] = 1.0
    return delta


_SIZE_HELP = "side in pixels, N or HxW"
WIDEFIELD = _Family(
    "widefield",
    "3-D widefield microscope PSF: scalar Born & Wolf, paraxial; lengths in µm",
    (
        _Param("na", "positive", None, "required", "numerical aperture (< n)"),
        _Param("wavelength", "positive", None, "required", "emission wavelength, µm"),
        _Param("n", "positive", None, "required", "immersion refractive index"),
        _Param("dxy", "positive", None, "required", "lateral pixel size, µm"),
        _Param("dz", "positive", None, "required", "plane spacing, µm"),
        _Param("size", "size", None, "4 Airy radii", "lateral side in pixels, N or HxW"),
        _Param("depth", "seed", None, "3 axial zeros", "planes (z)"),
    ),
    psf.build_widefield,
    psf.describe_widefield,
)
_FAMILIES: dict[str, _Family] = {
    f.name: f
    for f in (
        _Family(
            "gaussian",
            "Gaussian blur; anisotropic with sigma_y, rotated by angle",
            (
                _Param("sigma", "positive", 1.0, "1", "std. dev. in pixels (along angle)"),
                _Param("size", "size", None, "2*ceil(3*sigma)+1", _SIZE_HELP),
                _Param("sigma_y", "positive", None, "sigma", "std. dev. across angle"),
                _Param("angle", "real", 0.0, "0", "degrees CCW of the sigma axis"),
                _Param("sigma_z", "positive", None, "none", "axial std. dev. in planes (3-D)"),
            ),
            _build_gaussian,
            _describe_gaussian,
        ),
        _Family(
            "box",
            "uniform average over a rectangle",
            (_Param("size", "size", (3, 3), "3", _SIZE_HELP),),
            _build_box,
            lambda v: f"box:size={_fmt_size(v['size'])}",
        ),
        _Family(
            "disk",
            "defocus: anti-aliased disc (pixel coverage)",
            (_Param("radius", "positive", 3.0, "3", "radius in pixels"),),
            _build_disk,
            lambda v: f"disk:radius={_fmt(v['radius'])}",
        ),
        _Family(
            "motion",
            "linear motion: anti-aliased 1-pixel-wide bar",
            (
                _Param("length", "positive", 9.0, "9", "pixels end to end"),
                _Param("angle", "real", 0.0, "0", "degrees CCW from horizontal"),
            ),
            _build_motion,
            lambda v: f"motion:length={_fmt(v['length'])},angle={_fmt(v['angle'])}",
        ),
        _Family(
            "shake",
            "camera shake: random smooth trajectory (Boracchi & Foi 2012), per seed",
            (
                _Param("size", "size", (15, 15), "15", _SIZE_HELP),
                _Param("seed", "seed", 0, "0", "random trajectory (same seed, same kernel)"),
            ),
            _build_shake,
            lambda v: f"shake:size={_fmt_size(v['size'])},seed={v['seed']}",
        ),
        _Family(
            "laplacian",
            "3x3 discrete Laplacian (sums to 0)",
            (_Param("neighbors", "choice", 4, "4", "4 or 8", choices=(4, 8)),),
            _build_laplacian,
            lambda v: "laplacian" if v["neighbors"] == 4 else "laplacian:neighbors=8",
        ),
        _Family(
            "identity",
            "centred delta (no blur)",
            (_Param("size", "size", (1, 1), "1", "odd side, N or HxW"),),
            _build_identity,
            lambda v: (
                "identity" if v["size"] == (1, 1) else f"identity:size={_fmt_size(v['size'])}"
            ),
        ),
        WIDEFIELD,
    )
}


# --------------------------------------------------------------------------- files


def _load_file(path: Path, spec: str, normalize: bool) -> Kernel:
    where = f"kernel file `{spec}`"
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise KernelError(
            f"{where}: unsupported suffix `{suffix or '(none)'}`; use one of "
            + ", ".join(FILE_SUFFIXES)
        )
    from deconv_cli.npyfile import load_npy

    try:
        if suffix == ".npy":
            array = load_npy(path)
        elif suffix in TEXT_SUFFIXES:
            array = _read_text(path, where)
        else:
            array = _read_image(path)
    except InputError as err:
        message, named = str(err), f"`{path}`"
        if message.startswith(named):  # the reader names the file: say it once
            rest = message[len(named) :]
            message = rest[1:].lstrip() if rest.startswith(":") else "it" + rest
        raise KernelError(f"{where}: {message}") from None
    array = _validate_array(array, where)
    shape = "x".join(str(n) for n in array.shape)
    return _finish(array, f"file {spec} ({shape})", None, normalize, where)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _read_text(path: Path, where: str) -> np.ndarray:
    fs.note_input(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise KernelError(f"{where} cannot be read: {fs.reason(err)}") from None
    except UnicodeDecodeError as err:
        raise KernelError(f"{where} cannot be read as text: {_first_line(err)}") from None
    delimiter = "," if "," in text else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            return np.loadtxt(path, delimiter=delimiter, comments="#", ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise KernelError(f"{where} is not a numeric matrix: {_first_line(err)}") from None


def _read_image(path: Path) -> np.ndarray:
    """A PSF image or TIFF stack on the [0, 1] scale (deconv's volume reader), made gray."""
    from deconv_cli.volumes import read_volume

    image = read_volume(path)
    data = image.data.astype(np.float64)
    return data.mean(axis=-1) if image.axes.endswith("C") else data


def _validate_array(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    if np.issubdtype(array.dtype, np.complexfloating):
        raise KernelError(f"{where} holds complex values (dtype {array.dtype}); a kernel is real")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise KernelError(f"{where} holds non-numeric data (dtype {array.dtype})")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim not in (2, 3, 4):
        raise KernelError(f"{where} has shape {array.shape}; allowed: {_SHAPES_ALLOWED}")
    if array.size == 0:
        raise KernelError(f"{where} is empty (shape {array.shape})")
    array = np.asarray(array, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise KernelError(f"{where} contains {bad} NaN/Inf value(s); a kernel must be finite")
    if not array.any():
        raise KernelError(f"{where} is all zeros")
    return array
