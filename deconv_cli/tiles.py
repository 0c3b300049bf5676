"""Huge images in tiles: exact tiled ``A x`` and ``Aᵀ y``, a tiled invert with a margin,
and the memory estimate that says when to tile.

Exact tiles
-----------
``A = S ∘ V ∘ P`` (see :mod:`deconv_cli.operators`). Per axis, the padding ``P`` is an
index map from padded positions to image pixels (``np.pad`` of ``arange(n)`` with the
boundary rule; ``-1`` for zeros). An output tile of ``A x`` needs only the padded
window under it: it is gathered through the map (from the far side of the image for
``wrap``) and the tile is a ``valid``, zero-boundary operator with the same kernel,
dilation, correlation and stride on that window. For ``Aᵀ y``, an image tile
collects every padded position the map sends into it (contiguous runs: the tile
itself, and the border copies of its pixels), computes ``Vᵀ Sᵀ y`` on each run from
the data above it, and adds it back through the map. Both are the untiled operator
to rounding, for every geometry; work memory is a few tile-sized arrays, so the
input and output may be memory-mapped files.

Tiled invert
------------
Each tile is inverted on itself plus ``margin`` pixels on each side (clipped at the
image's edges, where the real boundary rule applies; taken round the period for
``wrap``) and only its core is kept. A window's cut sides are modelled with the
boundary rule although the scene continues there: the margin absorbs that error.
Automatic parameters are chosen once, on a central crop, and given to every tile,
so that tiles do not disagree (see :func:`tiled_invert`).

Memory
------
:func:`estimate_bytes` predicts a job's peak allocation from measured peaks, and
:func:`check_memory` refuses a job that would not fit in :func:`available_bytes`,
suggesting a ``--tile`` size that does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError
from deconv_cli.operators import ConvOperator, Geometry, basis_for, effective_kernel
from deconv_cli.operators.padding import index_map
from deconv_cli.restore import RestoreOptions, RestoreResult, get_method

MARGIN_FACTOR = 3
"""The default invert margin in effective kernel extents (see :func:`default_margin`)."""
PILOT_SIDE = 1024
"""A tiled invert chooses its automatic parameters on a central crop of at most this side."""


def _check_tile(tile: int) -> int:
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise DeconvError(f"`{tile}` must be a whole number of pixels >= 1", parameter="tile")
    return int(tile)


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive tiles of ``size`` covering ``range(n)``."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _as_slice(index: np.ndarray) -> slice | None:
    """``index`` as a slice when it is a run of consecutive image indices, else ``None``."""
    if index.size and index[0] >= 0 and (index.size == 1 or np.all(np.diff(index) == 1)):
        return slice(int(index[0]), int(index[-1]) + 1)
    return None


def _gather(a: np.ndarray, rows: np.ndarray, cols: np.ndarray, dtype) -> np.ndarray:
    """A new array ``a[rows][:, cols]``, zeros where an index is ``-1``.

    Consecutive indices are read as one slice (the interior tiles of a memory map);
    otherwise only the selected elements are read.
    """
    rs, cs = _as_slice(rows), _as_slice(cols)
    if rs is not None and cs is not None:
        return np.array(a[rs, cs], dtype=dtype)
    window = np.zeros((rows.size, cols.size) + a.shape[2:], dtype=dtype)
    inside_r, inside_c = rows >= 0, cols >= 0
    window[np.ix_(inside_r, inside_c)] = a[np.ix_(rows[inside_r], cols[inside_c])]
    return window


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of consecutive integers in a sorted index array."""
    if not index.size:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.r_[index[0], index[breaks]]
    stops = np.r_[index[breaks - 1] + 1, index[-1] + 1]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _output(out: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    if out is None:
        return np.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape):
        raise GeometryError(
            f"the output array has shape {_shape(out.shape)}, the result {_shape(shape)}"
        )
    return out


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class _Windows:
    """The ``valid``, zero-boundary operators of one kernel and geometry, by window shape."""

    def __init__(self, op: ConvOperator) -> None:
        self.op = op
        self.geometry = replace(op.geometry, mode="valid", boundary="constant", padding=None)
        self.cache: dict[tuple[int, ...], ConvOperator] = {}

    def __call__(self, height: int, width: int) -> ConvOperator:
        shape = (height, width) + self.op.input_shape[2:]
        if shape not in self.cache:
            self.cache[shape] = ConvOperator(
                self.op.kernel, shape, self.geometry, dtype=self.op.dtype
            )
        return self.cache[shape]


def _check_array(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise GeometryError(
            f"the {what} has shape {_shape(a.shape)}, the operator expects {_shape(shape)}"
        )


def tiled_forward(
    op: ConvOperator, x: np.ndarray, tile: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """``A x`` computed tile by tile: the untiled ``op.forward(x)`` to rounding.

    Parameters
    ----------
    op : ConvOperator
        Any kernel and geometry (mode, boundary, stride, dilation, padding, banks).
    x : ndarray, shape ``op.input_shape``
        The image; anything that slices like an array (``np.memmap`` included).
    tile : int
        Side of the output tiles, in output pixels.
    out : ndarray, shape ``op.output_shape``, optional
        Filled and returned (e.g. a memory-mapped ``.npy``); default a new array of
        ``op.dtype``.

    Returns
    -------
    ndarray
        ``A x``.

    Notes
    -----
    The output tile ``[r0, r1)`` (stride ``s``, effective kernel extent ``k``) reads
    the padded rows ``[s·r0, s·(r1−1) + k)``. Work memory is about three arrays of
    ``(s·tile + k)²`` pixels (times channels) besides ``x`` and ``out``.
    """
    tile = _check_tile(tile)
    _check_array(x, op.input_shape, "image")
    out = _output(out, op.output_shape, op.dtype)
    windows = _Windows(op)
    maps = [index_map(op.input_shape[a], op.pads[a], op.geometry.boundary) for a in (0, 1)]
    (kh, kw), (sh, sw) = op.effective.shape[2:], op.geometry.stride
    for r0, r1 in _spans(op.output_shape[0], tile):
        rows = maps[0][sh * r0 : sh * (r1 - 1) + kh]
        for c0, c1 in _spans(op.output_shape[1], tile):
            cols = maps[1][sw * c0 : sw * (c1 - 1) + kw]
            window = _gather(x, rows, cols, op.dtype)
            out[r0:r1, c0:c1] = windows(rows.size, cols.size).forward(window)
    return out


def _covering(start: int, stop: int, k: int, s: int, n_out: int) -> tuple[int, int]:
    """Outputs ``[i0, i1)`` whose taps reach padded positions ``[start, stop)`` (one axis)."""
    return -(-max(start - k + 1, 0) // s), min((stop - 1) // s + 1, n_out)


def tiled_adjoint(
    op: ConvOperator, y: np.ndarray, tile: int, *, out: np.ndarray | None = None
) -> np.ndarray:
    """``Aᵀ y`` computed tile by tile: the untiled ``op.adjoint(y)`` to rounding.

    Parameters
    ----------
    op : ConvOperator
        Any kernel and geometry; ``op.input_shape`` is the shape of the result.
    y : ndarray, shape ``op.output_shape``
        The data; anything that slices like an array (``np.memmap`` included).
    tile : int
        Side of the result's tiles, in image pixels.
    out : ndarray, shape ``op.input_shape``, optional
        Filled and returned; default a new array of ``op.dtype``.

    Returns
    -------
    ndarray
        ``Aᵀ y``.

    Notes
    -----
    ``Aᵀ = Pᵀ Vᵀ Sᵀ``. The padded positions whose pixel lies in an image tile form a
    few runs per axis (the tile, plus the border copies of its pixels: beside it for
    reflect, mirror and nearest, at the far side for wrap). For each pair of runs,
    ``Vᵀ Sᵀ`` is computed from the data rows and columns whose taps reach the run (a
    ``valid`` adjoint on a window) and added onto the tile through the index map.
    """
    tile = _check_tile(tile)
    _check_array(y, op.output_shape, "data")
    out = _output(out, op.input_shape, op.dtype)
    windows = _Windows(op)
    kernel_extent = op.effective.shape[2:]
    stride = op.geometry.stride
    maps = [index_map(op.input_shape[a], op.pads[a], op.geometry.boundary) for a in (0, 1)]

    def pieces(axis: int, start: int, stop: int):
        """Per run of padded positions on ``axis`` that land in the tile ``[start, stop)``:
        the data above it, its part of that data's window adjoint, and its tile indices."""
        k, s, index = kernel_extent[axis], stride[axis], maps[axis]
        found = []
        for p0, p1 in _runs(np.flatnonzero((index >= start) & (index < stop))):
            i0, i1 = _covering(p0, p1, k, s, op.output_shape[axis])
            if i0 >= i1:  # no tap of any output reaches these positions
                continue
            # the window op's image starts at padded s·i0 and is s·(i1−1−i0) + k long
            q0, q1 = max(p0, s * i0), min(p1, s * (i1 - 1) + k)
            found.append((slice(i0, i1), slice(q0 - s * i0, q1 - s * i0), index[q0:q1] - start))
        return found

    col_spans = _spans(op.input_shape[1], tile)
    col_pieces = [pieces(1, b0, b1) for b0, b1 in col_spans]
    for a0, a1 in _spans(op.input_shape[0], tile):
        row_pieces = pieces(0, a0, a1)
        for (b0, b1), in_cols in zip(col_spans, col_pieces, strict=True):
            block = np.zeros((a1 - a0, b1 - b0) + op.input_shape[2:], dtype=op.dtype)
            for data_rows, crop_rows, target_rows in row_pieces:
                for data_cols, crop_cols, target_cols in in_cols:
                    data = np.asarray(y[data_rows, data_cols], dtype=op.dtype)
                    height = stride[0] * (data.shape[0] - 1) + kernel_extent[0]
                    width = stride[1] * (data.shape[1] - 1) + kernel_extent[1]
                    values = windows(height, width).adjoint(data)[crop_rows, crop_cols]
                    _fold(block, values, target_rows, target_cols)
            out[a0:a1, b0:b1] = block
    return out


def _fold(block: np.ndarray, values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
    """``block[rows][:, cols] += values``, adding repeated indices (a padding's copies)."""
    rs, cs = _as_slice(rows), _as_slice(cols)
    if rs is not None and cs is not None:
        block[rs, cs] += values
    else:
        np.add.at(block, np.ix_(rows, cols), values)


# -- tiled invert -------------------------------------------------------------------


def default_margin(kernel: np.ndarray, geometry: Geometry) -> int:
    """The default invert margin: :data:`MARGIN_FACTOR` effective kernel extents."""
    kh, kw = effective_kernel(np.asarray(kernel, dtype=np.float64), geometry).shape[2:]
    return MARGIN_FACTOR * max(kh, kw)


def _tileable(geometry: Geometry) -> bool:
    """Whether a tiled invert supports the geometry: ``same`` mode, stride 1, no padding."""
    return geometry.mode == "same" and geometry.stride == (1, 1) and geometry.padding is None


def check_tiled_geometry(geometry: Geometry) -> None:
    """Refuse a geometry a tiled invert does not support (see :func:`_tileable`)."""
    if not _tileable(geometry):
        raise GeometryError(
            f"--tile: a tiled invert needs --mode same, stride 1 and no --padding "
            f"(got `{geometry.describe()}`); run it without --tile"
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


def tiled_invert(
    blurred: np.ndarray,
    kernel: np.ndarray,
    geometry: Geometry,
    method: str,
    options: RestoreOptions,
    tile: int,
    *,
    margin: int | None = None,
    unknown_boundary: bool = False,
    out: np.ndarray | None = None,
    source_dtype: np.dtype | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> RestoreResult:
    """Solve ``A x ≈ y`` tile by tile, each tile on a window with a margin.

    Parameters
    ----------
    blurred : ndarray, (H, W) or (H, W, C)
        The data; anything that slices like an array (``np.memmap`` included).
        Computed in float32 when it is float32, else float64.
    kernel : ndarray
        As for :func:`deconv_cli.inversion.build_problem`.
    geometry : Geometry
        ``same`` mode, stride 1, no padding; any boundary.
    method : str
        A registered method (``auto`` is resolved on the central crop).
    options : RestoreOptions
        As for the untiled method; ``callback`` is not used.
    tile : int
        Side of the tiles whose result is kept, in pixels.
    margin : int, optional
        Pixels added on each side of a tile for its inversion; default
        :func:`default_margin` (three effective kernel extents).
    unknown_boundary : bool
        The data is a crop of a larger scene (``--boundary unknown``): every window
        is then a crop too, a consistent model on all its sides.
    out : ndarray, optional
        Filled and returned as ``result.image`` (e.g. a memory-mapped ``.npy``).
    source_dtype : numpy dtype, optional
        The stored pixel type, for the quantization note of ``inverse``.
    on_tile : callable, optional
        ``on_tile(done, total)`` after each tile.

    Returns
    -------
    RestoreResult
        The pilot's method and parameters, plus ``tiles`` and ``tile_parameters``;
        ``iterations`` the most any tile ran; ``residual`` the windows' relative
        residuals ``‖A x − y‖ / ‖y‖`` combined (weighted by ``‖y‖²`` of each window;
        the margins overlap, so it estimates the whole image's).

    Notes
    -----
    The method first runs on the central ``PILOT_SIDE × PILOT_SIDE`` crop (the whole
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
    tile = _check_tile(tile)
    margin = default_margin(kernel, geometry) if margin is None else margin
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise DeconvError(f"`{margin}` must be a whole number of pixels >= 0", parameter="margin")
    dtype = np.dtype(np.float32 if blurred.dtype == np.float32 else np.float64)
    whole = build_problem(
        kernel, blurred.shape, geometry, unknown_boundary=unknown_boundary, dtype=dtype
    )
    out = _output(out, whole.image_shape, dtype)
    h, w = blurred.shape[:2]
    spans = [(r, c) for r in _spans(h, tile) for c in _spans(w, tile)]
    options = replace(options, callback=None)
    if len(spans) == 1:
        result = invert(np.asarray(blurred), whole, method, options, source_dtype=source_dtype)
        out[...] = result.image
        result.image = out
        return result
    periodic = geometry.boundary == "wrap" and not unknown_boundary

    def solve(span, chosen: str, opts: RestoreOptions, note_dtype=None, dark_is_zero=False):
        """Invert the window of ``span``: the result, where ``span`` lies in its image, and
        the window's data energy ``‖y‖²``. With ``dark_is_zero``, Richardson-Lucy on a
        window without a positive datum returns 0, its fixed point for ``y = 0`` (every
        iterate ``x · Aᵀ(y / A x) / Aᵀ1`` is 0), where it would refuse a whole image."""
        (a0, a1), (b0, b1) = span
        rows, top = _window(a0, a1, h, margin, periodic)
        cols, left = _window(b0, b1, w, margin, periodic)
        data = _gather(blurred, rows, cols, dtype)
        core = (slice(top, top + a1 - a0), slice(left, left + b1 - b0))
        if dark_is_zero and chosen == "richardson-lucy" and not np.any(data > 0):
            zero = RestoreResult(np.zeros_like(data), chosen, iterations=0, converged=True)
            return zero, core, 0.0
        if chosen == "auto" and opts.noise_sigma is None:
            from deconv_cli.noise_model import estimate_noise_sigma

            # auto's own estimate, kept so that the method it picks gets it on every tile
            opts = replace(opts, noise_sigma=estimate_noise_sigma(data))
        problem = build_problem(
            kernel, data.shape, geometry, unknown_boundary=unknown_boundary, dtype=dtype
        )
        result = invert(data, problem, chosen, opts, source_dtype=note_dtype)
        flat = data.reshape(-1)
        data_energy = float(np.einsum("i,i->", flat, flat, dtype=np.float64))
        return result, core, data_energy

    pilot, _, _ = solve(
        (_central(h, PILOT_SIDE), _central(w, PILOT_SIDE)), method, options, source_dtype
    )
    fixed = get_method(pilot.method).freeze(options, pilot)
    iterations, converged = [], []
    misfit = energy = 0.0
    for done, span in enumerate(spans, 1):
        result, core, data_energy = solve(span, pilot.method, fixed, dark_is_zero=True)
        (a0, a1), (b0, b1) = span
        out[a0:a1, b0:b1] = result.image[core]
        iterations.append(result.iterations)
        converged.append(result.converged)
        if result.residual is not None:
            misfit += result.residual**2 * data_energy
            energy += data_energy
        if on_tile is not None:
            on_tile(done, len(spans))
    counted = [k for k in iterations if k is not None]
    params = dict(pilot.params)
    params["tiles"] = f"{len(spans)} of {tile}x{tile}, margin {margin}"
    params["tile_parameters"] = f"chosen on the central {_shape(pilot.image.shape[:2])} window"
    notes = list(pilot.notes)
    unconverged = converged.count(False)
    if unconverged:
        notes.append(f"{unconverged} of {len(spans)} tiles stopped before their rule was met")
    return RestoreResult(
        image=out,
        method=pilot.method,
        params=params,
        iterations=max(counted) if counted else None,
        residual=math.sqrt(misfit / energy) if energy > 0 else None,
        converged=None if converged.count(None) == len(spans) else not unconverged,
        notes=notes,
    )


# -- memory ------------------------------------------------------------------------------

MEMINFO = Path("/proc/meminfo")
STATUS = Path("/proc/self/status")
CGROUP_FILES = (
    # (limit, usage, stat, the stat's reclaimable page-cache key): cgroup v2, then v1
    (
        Path("/sys/fs/cgroup/memory.max"),
        Path("/sys/fs/cgroup/memory.current"),
        Path("/sys/fs/cgroup/memory.stat"),
        "inactive_file",
    ),
    (
        Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        Path("/sys/fs/cgroup/memory/memory.stat"),
        "total_inactive_file",
    ),
)

COPIES = {"convolve": 8.0, "transpose": 8.0}
"""Peak allocated memory of an untiled ``convolve`` or ``transpose``, in image-sized
arrays of the computation's dtype (the larger of the image and the data, channels
included): the largest slope measured by ``benchmarks/bench_tiles.py calibrate``
(1024² and 2048², float64 and float32, a gaussian and a motion blur), rounded up.
Float32 jobs keep some float64 work arrays, hence the same counts for both. An
``invert`` method's count is its registry entry's
(:attr:`deconv_cli.restore.Method.memory`)."""
FIXED_BYTES = 100 << 20
"""Allocations that do not grow with the image (spectra samples, crops, buffers)."""
SUGGESTED_TILES = (4096, 2048, 1024, 512, 256)


def available_bytes() -> int | None:
    """Memory this process can still allocate, or ``None`` when unknown.

    ``MemAvailable`` from ``/proc/meminfo`` (else free pages from ``os.sysconf``), or
    the room left under the cgroup's memory limit (limit − usage + reclaimable page
    cache; cgroup v2, else v1), or under this process's address-space limit (``ulimit
    -v``: limit − ``VmSize``), whichever is lowest.
    """
    found = [v for v in (_meminfo_available(), _cgroup_room(), _rlimit_room()) if v is not None]
    return min(found) if found else None


def _rlimit_room() -> int | None:
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY:
            return None
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, limit - int(line.split()[1]) * 1024)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return None


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    for limit_file, usage_file, stat_file, reclaimable in CGROUP_FILES:
        try:
            text = limit_file.read_text().strip()
            if text == "max" or int(text) >= 1 << 60:  # no limit
                continue
            limit, usage = int(text), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        cache = 0
        try:
            for line in stat_file.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == reclaimable:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + cache)
    return None


def _copies(command: str, method: str | None, op: ConvOperator, unknown: bool) -> float:
    """The job's peak memory in image-sized arrays: :data:`COPIES`, or the method's
    footprint (an unknown method is an error)."""
    if command != "invert":
        return COPIES[command]
    footprint = get_method(method).memory
    diagonal = not unknown and basis_for(op.geometry, op.effective) is not None
    return footprint(diagonal=diagonal, bank=op.is_bank)


def _whole_operator(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    unknown: bool,
    spatial: int,
) -> ConvOperator:
    """The untiled job's operator; ``shape`` is the input's (image, or data)."""
    if command == "convolve":
        return ConvOperator(kernel, shape, geometry, spatial=spatial)
    if command == "transpose":
        from deconv_cli.operators import input_shape_for

        shape = input_shape_for(kernel, shape, geometry, spatial=spatial)
        return ConvOperator(kernel, shape, geometry, spatial=spatial)
    from deconv_cli.inversion import build_problem

    return build_problem(kernel, shape, geometry, unknown_boundary=unknown, spatial=spatial).op


def estimate_bytes(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    method: str | None = None,
    dtype=np.float64,
    unknown_boundary: bool = False,
    tile: int | None = None,
    margin: int | None = None,
    mapped: bool = False,
    spatial: int = 2,
) -> int:
    """The peak memory a job allocates, in bytes (an estimate from measured peaks).

    Parameters
    ----------
    command : {"convolve", "transpose", "invert"}
    shape : tuple of int
        The input's shape: the image for ``convolve``, the data otherwise.
    kernel, geometry
        As for the command.
    method : str, optional
        The ``invert`` method (required for ``invert``).
    dtype : numpy dtype
        The computation's dtype (float32 or float64).
    unknown_boundary : bool
        ``invert --boundary unknown``.
    tile, margin : int, optional
        Estimate the tiled job: the input, the result and the copy of it written to
        the file, plus the work of one window (for ``invert``, of the larger of a
        tile's window and the parameter crop).
    mapped : bool
        The tiled job's input and output are memory-mapped files: not counted.
    spatial : {2, 3}
        The spatial axes of ``shape`` (3: a volume, untiled).

    Returns
    -------
    int
        :data:`FIXED_BYTES` plus :data:`COPIES` image-sized arrays of the command, or
        the footprint of the ``invert`` method, the image being the larger of the input
        and the output.

    Raises
    ------
    DeconvError
        ``method`` is not a registered method (for ``invert``).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    op = _whole_operator(command, shape, kernel, geometry, unknown_boundary, spatial)
    itemsize = np.dtype(dtype).itemsize
    copies = _copies(command, method, op, unknown_boundary)
    points = max(math.prod(op.input_shape[:spatial]), math.prod(op.output_shape[:spatial]))
    channels = max(math.prod(op.input_shape[spatial:]), math.prod(op.output_shape[spatial:]))
    if tile is None:
        return FIXED_BYTES + int(copies * points * channels * itemsize)
    h, w = op.input_shape[:2]
    kh, kw = op.effective.shape[2:]
    if command == "invert":
        margin = default_margin(kernel, geometry) if margin is None else margin
        side = max(min(tile, n) for n in (h, w))
        side = max(side, min(PILOT_SIDE, max(h, w))) + 2 * margin + max(kh, kw)
        window = side * side
    elif command == "convolve":
        sh, sw = geometry.stride
        window = (sh * tile + kh) * (sw * tile + kw)
    else:
        window = (tile + kh) * (tile + kw)
    # the input, the result, and the copy write_image makes when it converts its type
    held = math.prod(op.input_shape) + 2 * math.prod(op.output_shape)
    arrays = 0 if mapped else held * itemsize
    # the window's own copy (gathered from the input) besides the path's work
    return FIXED_BYTES + arrays + int((copies + 1) * window * channels * itemsize)


def check_memory(
    command: str,
    shape: tuple[int, ...],
    kernel: np.ndarray,
    geometry: Geometry,
    *,
    tile: int | None = None,
    available: int | None = None,
    **job,
) -> int:
    """Refuse a job whose estimated peak memory exceeds the memory available.

    Parameters are those of :func:`estimate_bytes` (``job``: its keywords besides
    ``tile``), plus ``available`` (bytes; default :func:`available_bytes`; unknown: no
    check).

    Returns
    -------
    int
        The estimate, when it fits.

    Raises
    ------
    DeconvError
        One line: what the job needs, what is available, and a ``--tile SIZE`` whose
        estimate fits, when the command can be tiled and one does.
    """
    method, mapped = job.get("method"), job.get("mapped", False)
    need = estimate_bytes(command, shape, kernel, geometry, tile=tile, **job)
    room = available_bytes() if available is None else available
    if room is None or need <= room:
        return need
    name = f"{command} --method {method}" if method else command
    message = (
        f"{name} on a {_shape(shape)} {np.dtype(job.get('dtype', np.float64)).name} image "
        f"needs about {_gb(need)} "
        f"of memory{f' with --tile {tile}' if tile else ''}, {_gb(room)} is available"
    )
    if command == "invert" and not _tileable(geometry):
        raise DeconvError(
            f"{message}; --tile works for invert only with --mode same, stride 1 and no "
            "--padding: free memory or process a smaller image"
        )
    sizes = [s for s in SUGGESTED_TILES if s < max(shape[:2]) and (tile is None or s < tile)]
    tiled = None
    for size in sizes:
        tiled = estimate_bytes(command, shape, kernel, geometry, tile=size, **job)
        if tiled <= room:
            raise DeconvError(f"{message}; use --tile {size} (about {_gb(tiled)})")
    if not mapped:
        for size in [tile] * (tile is not None) + sizes:
            job["mapped"] = True
            tiled = estimate_bytes(command, shape, kernel, geometry, tile=size, **job)
            if tiled <= room:
                raise DeconvError(
                    f"{message}; use --tile {size} with float .npy input and output, which "
                    f"are then memory-mapped (about {_gb(tiled)})"
                )
    smaller = f"; even --tile {sizes[-1]} needs about {_gb(tiled)}" if sizes else ""
    raise DeconvError(f"{message}{smaller}: free memory or process a smaller image")


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.0f} MB"
