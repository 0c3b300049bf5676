"""Kernel families: the named kernels and their ``family:param=value,...`` parser.

:func:`build` turns a family name and its parameter text into an array and a canonical
description; :mod:`deconv_cli.kernels` wraps the result in a validated
:class:`~deconv_cli.kernels.Kernel` (and reads kernel files).

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deconv_cli import psf
from deconv_cli.errors import KernelError, choice_error

MAX_SIZE = 4097
"""The largest kernel side a family builds (a 4097x4097 float64 kernel is 134 MB)."""

SUPERSAMPLING = 32
"""Samples per pixel side when disk and motion compute pixel coverage."""


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


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" did you mean `{close[0]}`?" if close else ""


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
                f"{where}: unknown parameter `{key}`;{did_you_mean(key, family.param_names)} "
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


def build(family: _Family, params: str) -> tuple[np.ndarray, str, tuple[float, ...] | None]:
    """The array, the canonical spec and the voxel size (or ``None``) of ``family:params``.

    Raises
    ------
    KernelError
        For an unknown parameter, or a malformed or out-of-range value.
    """
    values = _parse_params(family, params)
    array = family.build(values)
    return array, family.describe(values), values.get("_spacing")


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
FAMILIES: dict[str, _Family] = {
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
