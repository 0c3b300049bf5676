"""Huge images in tiles: the tiled invert, each tile solved on a window with a margin.

Each tile is inverted on itself plus ``margin`` pixels on each side (clipped at the
image's edges, where the real boundary rule applies; taken round the period for
``wrap``) and only its core is kept. A window's cut sides are modelled with the
boundary rule although the scene continues there: the margin absorbs that error.
Automatic parameters are chosen once, on a central crop, and given to every tile,
so that tiles do not disagree (see :func:`tiled_invert`). Works in 2 or 3 spatial
axes (a volume's tiles are boxes); the exact tiled ``A`` and ``Aᵀ`` are
:mod:`deconv_cli.tiles`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, mention
from deconv_cli.operators import Geometry
from deconv_cli.restore import RestoreOptions, RestoreResult, get_method
from deconv_cli.tiles import (
    SHAPE_KEEPING,
    Tile,
    describe_tile,
    dims,
    gather,
    output_array,
    spans,
    tile_sides,
)

MARGIN_FACTOR = 3
"""The default invert margin in effective kernel extents (see :func:`default_margin`)."""
PILOT_VOXELS = 1024 * 1024
"""A tiled invert chooses its automatic parameters on a central crop of at most this many
pixels or voxels (1024 × 1024 in 2-D; a cube of 101 voxels a side in 3-D)."""


def default_margin(op) -> tuple[int, ...]:
    """The default invert margin per spatial axis of the operator ``op``:
    :data:`MARGIN_FACTOR` effective kernel extents along that axis (a PSF is often
    longer in z than across)."""
    return tuple(MARGIN_FACTOR * k for k in op.core.effective.shape[2:])


def _margins(margin, d: int) -> tuple[int, ...]:
    sides = margin if isinstance(margin, tuple) else (margin,) * d
    if len(sides) != d or any(
        isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0 for m in sides
    ):
        raise DeconvError(f"`{margin}` must be a whole number of pixels >= 0", parameter="margin")
    return tuple(int(m) for m in sides)


def tileable(geometry: Geometry) -> bool:
    """Whether a tiled invert supports the geometry: ``same`` mode, stride 1, no padding."""
    return (
        geometry.mode == "same"
        and all(s == 1 for s in geometry.stride)
        and geometry.padding is None
    )


def check_tiled_geometry(geometry: Geometry) -> None:
    """Refuse a geometry a tiled invert does not support (see :func:`tileable`)."""
    if not tileable(geometry):
        raise GeometryError(
            f"a tiled invert needs {SHAPE_KEEPING} (got `{geometry.describe()}`); run it without "
            f"{mention('tile')}",
            parameter="tile",
        )


def _window(start: int, stop: int, n: int, margin: int, periodic: bool) -> tuple[np.ndarray, int]:
    """The indices of a core ``[start, stop)`` plus ``margin`` each side, and the core's offset.

    Clipped to ``[0, n)``; for a ``wrap`` boundary (``periodic``) taken modulo ``n``, or
    the whole axis (exact) when the window would reach round it.
    """
    if periodic:
        if stop - start + 2 * margin >= n:
            return np.arange(n), start
        return np.arange(start - margin, stop + margin) % n, margin
    first = max(0, start - margin)
    return np.arange(first, min(n, stop + margin)), start - first


def _central(n: int, side: int) -> tuple[int, int]:
    """The central ``[start, stop)`` of length ``min(side, n)`` in ``range(n)``."""
    start = max(0, (n - side) // 2)
    return start, min(n, start + side)


def pilot_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The pilot crop's lengths: ``min(n, s)`` per axis, ``s`` the largest side whose
    crop holds at most :data:`PILOT_VOXELS` points."""
    low, high = 1, max(shape)
    while low < high:  # the largest s with prod(min(n, s)) <= PILOT_VOXELS
        side = (low + high + 1) // 2
        if math.prod(min(n, side) for n in shape) <= PILOT_VOXELS:
            low = side
        else:
            high = side - 1
    return tuple(min(n, low) for n in shape)


def tiled_invert(
    blurred: np.ndarray,
    kernel: np.ndarray,
    geometry: Geometry,
    method: str,
    options: RestoreOptions,
    tile: Tile,
    *,
    margin: int | tuple[int, ...] | None = None,
    unknown_boundary: bool = False,
    out: np.ndarray | None = None,
    source_dtype: np.dtype | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    spatial: int = 2,
    groups: int = 1,
) -> RestoreResult:
    """Solve ``A x ≈ y`` tile by tile, each tile on a window with a margin.

    Parameters
    ----------
    blurred : ndarray, (H, W), (H, W, C), (Z, Y, X) or (Z, Y, X, C)
        The data; anything that slices like an array (``np.memmap`` included).
        Computed in float32 when it is float32, else float64.
    kernel : ndarray
        As for :func:`deconv_cli.inversion.build_problem`; its spatial axes (2 for a
        2-D kernel or a 4-D bank, 3 for a volume PSF) are the blurred data's leading axes.
    geometry : Geometry
        ``same`` mode, stride 1, no padding; any boundary.
    method : str
        A registered method (``auto`` is resolved on the central crop).
    options : RestoreOptions
        As for the untiled method; ``callback`` is not used.
    tile : int or tuple of int
        Side of the tiles whose result is kept, in pixels (one, or one per spatial axis).
    margin : int or tuple of int, optional
        Pixels added on each side of a tile for its inversion (one, or one per spatial
        axis); default :func:`default_margin` (three effective kernel extents per axis).
    unknown_boundary : bool
        The data is a crop of a larger scene (``--boundary unknown``): every window
        is then a crop too, a consistent model on all its sides.
    out : ndarray, optional
        Filled and returned as ``result.image`` (e.g. a memory-mapped ``.npy``).
    source_dtype : numpy dtype, optional
        The stored pixel type, for the quantization note of ``inverse``.
    on_tile : callable, optional
        ``on_tile(done, total)`` after each tile.
    spatial : {2, 3}
        The data's spatial axes (3: a volume, tiled in boxes).
    groups : int
        A grouped bank's groups (:class:`~deconv_cli.operators.ConvOperator`'s).

    Returns
    -------
    RestoreResult
        The pilot's method and parameters, plus ``tiles`` and ``tile_parameters``;
        ``iterations`` the most any tile ran; ``residual`` the windows' relative
        residuals ``‖A x − y‖ / ‖y‖`` combined (weighted by ``‖y‖²`` of each window;
        the margins overlap, so it estimates the whole image's).

    Notes
    -----
    The method first runs on the central crop of :func:`pilot_shape` (the whole
    image when smaller), with its margin: the *pilot*. Its automatic choices
    (Tikhonov's GCV ``reg``, Wiener's ``nsr``, TV's ``lam``, the noise level, the
    method ``auto`` picks, and the iteration count where a discrepancy rule stops
    Richardson-Lucy, CGLS or LSQR) are then given to every tile, which would
    otherwise choose its own and leave seams; the crop is large enough for the
    choice to be close to the whole image's. Methods that converge to a minimizer
    (CG, ADMM) still stop by their tolerance on each tile.

    The result differs from the untiled one by the cut sides' model (decaying
    geometrically with the margin for the linear methods), the parameter choice,
    and the per-tile stopping of iterative methods; Richardson-Lucy's acceleration
    step is a global scalar per iteration, so its tiles differ the most (measurements:
    docs/performance.md).
    """
    from deconv_cli.inversion import build_problem, invert

    check_tiled_geometry(geometry)
    dtype = np.dtype(np.float32 if blurred.dtype == np.float32 else np.float64)
    whole = build_problem(
        kernel,
        blurred.shape,
        geometry,
        unknown_boundary=unknown_boundary,
        dtype=dtype,
        spatial=spatial,
        groups=groups,
    )
    d = whole.op.core.ndim
    sides = tile_sides(tile, d)
    margins = _margins(default_margin(whole.op) if margin is None else margin, d)
    out = output_array(out, whole.image_shape, dtype)
    shape = blurred.shape[:d]
    blocks = list(itertools.product(*(spans(n, t) for n, t in zip(shape, sides, strict=True))))
    options = replace(options, callback=None)
    if len(blocks) == 1:
        result = invert(np.asarray(blurred), whole, method, options, source_dtype=source_dtype)
        out[...] = result.image
        result.image = out
        return result
    periodic = geometry.boundary == "wrap" and not unknown_boundary

    def solve(block, chosen: str, opts: RestoreOptions, note_dtype=None, dark_is_zero=False):
        """Invert the window of ``block``: the result, where ``block`` lies in its image, and
        the window's data energy ``‖y‖²``. With ``dark_is_zero``, Richardson-Lucy on a
        window without a positive datum returns 0, its fixed point for ``y = 0`` (every
        iterate ``x · Aᵀ(y / A x) / Aᵀ1`` is 0), where it would refuse a whole image."""
        windows = [
            _window(a0, a1, n, m, periodic)
            for (a0, a1), n, m in zip(block, shape, margins, strict=True)
        ]
        data = gather(blurred, [index for index, _ in windows], dtype)
        core = tuple(
            slice(first, first + a1 - a0)
            for (_, first), (a0, a1) in zip(windows, block, strict=True)
        )
        if dark_is_zero and chosen == "richardson-lucy" and not np.any(data > 0):
            zero = RestoreResult(np.zeros_like(data), chosen, iterations=0, converged=True)
            return zero, core, 0.0
        if chosen == "auto" and opts.noise_sigma is None:
            from deconv_cli.noise_model import estimate_noise_sigma

            # auto's own estimate, kept so that the method it picks gets it on every tile
            opts = replace(opts, noise_sigma=estimate_noise_sigma(data))
        problem = build_problem(
            kernel,
            data.shape,
            geometry,
            unknown_boundary=unknown_boundary,
            dtype=dtype,
            spatial=spatial,
            groups=groups,
        )
        result = invert(data, problem, chosen, opts, source_dtype=note_dtype)
        flat = data.reshape(-1)
        data_energy = float(np.einsum("i,i->", flat, flat, dtype=np.float64))
        return result, core, data_energy

    pilot, _, _ = solve(
        tuple(_central(n, p) for n, p in zip(shape, pilot_shape(shape), strict=True)),
        method,
        options,
        source_dtype,
    )
    fixed = get_method(pilot.method).freeze(options, pilot)
    iterations, converged = [], []
    misfit = energy = 0.0
    for done, block in enumerate(blocks, 1):
        result, core, data_energy = solve(block, pilot.method, fixed, dark_is_zero=True)
        out[tuple(slice(a0, a1) for a0, a1 in block)] = result.image[core]
        iterations.append(result.iterations)
        converged.append(result.converged)
        if result.residual is not None:
            misfit += result.residual**2 * data_energy
            energy += data_energy
        if on_tile is not None:
            on_tile(done, len(blocks))
    counted = [k for k in iterations if k is not None]
    params = dict(pilot.params)
    margin_text = str(margins[0]) if len(set(margins)) == 1 else dims(margins)
    params["tiles"] = f"{len(blocks)} of {describe_tile(sides)}, margin {margin_text}"
    params["tile_parameters"] = f"chosen on the central {dims(pilot.image.shape[:d])} window"
    notes = list(pilot.notes)
    unconverged = converged.count(False)
    if unconverged:
        notes.append(f"{unconverged} of {len(blocks)} tiles stopped before their rule was met")
    return RestoreResult(
        image=out,
        method=pilot.method,
        params=params,
        iterations=max(counted) if counted else None,
        residual=math.sqrt(misfit / energy) if energy > 0 else None,
        converged=None if converged.count(None) == len(blocks) else not unconverged,
        notes=notes,
    )
