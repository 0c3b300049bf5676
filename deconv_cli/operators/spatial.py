"""The grid operator computed in space: 1-D line passes (box sums) and N-D correlations.

Same layout and calls as :class:`~deconv_cli.operators.grid.GridOperator` (1, 2 or
3 spatial axes); cheaper for thin and small kernels (a motion blur along an axis:
box sums). Costs from :mod:`deconv_cli.operators.cost`.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.operators import cost
from deconv_cli.operators.engines import separable_factors
from deconv_cli.operators.grid import _Grid, convolution_of

_CHUNK = 1 << 15  # samples a box-sum pass computes at a time (its buffers stay in cache)
_EQUAL_RTOL = 1e-12  # taps this close (relative to the largest) count as equal
_MAX_CORRECTIONS = 2  # a box sum's taps that may differ (anti-aliased ends); else correlate1d


class _Workspace:
    """A scratch array kept between calls, grown as needed."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def get(self, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        a = self.array
        if a is None or a.dtype != dtype or a.shape[0] < shape[0] or a.shape[1] < shape[1]:
            self.array = a = np.empty(shape, dtype=dtype)
        return a[: shape[0], : shape[1]]


class _LinePass:
    """``dst[i] = Σ_j t[j] · src[i + j + shift]`` along ``axis``, zero outside ``src``.

    Three ways, the cheapest for the taps and the line length ``n``: ``correlate1d``;
    for equal taps, a running sum (``uniform_filter1d``, a chain of dependent
    additions, whose cost does not grow with ``k``); or, where most taps share one
    value ``c`` (a box; a motion blur along an axis, whose two anti-aliased ends
    differ), ``c`` times a box sum plus a shifted multiply-add for each other tap. The box sum
    of ``k`` taps takes ``log2 k`` doublings (``W₂ₘ[i] = Wₘ[i] + Wₘ[i + m]``) and one
    step per other set bit of ``k`` (``Wₘ₊₁[i] = Wₘ[i] + src[i + m]``), each a
    vectorized pass over the whole flat array. Flat, the sums near the ends of a line
    (the first ``−shift`` and last ``k − 1 + shift`` samples) read the next line:
    those are recomputed by ``correlate1d`` on the edge strips. ``scipy.ndimage``
    sums in float64; the box sum in the arrays' dtype.
    """

    def __init__(self, taps: np.ndarray, axis: int, shift: int, dtype: np.dtype, n: int) -> None:
        self.taps = np.asarray(taps, dtype=np.float64)
        self.axis = axis
        self.size = k = self.taps.size
        self.shift = shift
        self.origin = -(k // 2) - shift  # scipy.ndimage's centre convention
        self.dtype = dtype
        self.length = n
        self.common = float(np.median(self.taps))
        rest = self.taps - self.common
        others = np.flatnonzero(np.abs(rest) > _EQUAL_RTOL * np.abs(self.taps).max())
        self.corrections = [(int(j), float(rest[j])) for j in others]
        factor = cost.COLUMN_FACTOR if axis != -1 else 1.0  # strided lines cost more
        per_tap = cost.LINE_NS[1] * (cost.SYMMETRIC if np.array_equal(taps, taps[::-1]) else 1.0)
        costs = {"correlate": factor * (cost.LINE_NS[0] + per_tap * k)}
        if self.common != 0 and not others.size:
            costs["running"] = factor * cost.RUNNING_NS
        if self.common != 0 and k - 1 < n and len(others) <= _MAX_CORRECTIONS:
            steps = (k.bit_length() - 1) + (k.bit_count() - 1) + 1 + 2 * len(others)
            edges = (2 * k * costs["correlate"] + cost.EDGE_NS) / n
            costs["box"] = cost.FLAT_NS * steps + edges
        self.method = min(costs, key=costs.get)
        self.cost = costs[self.method]
        self.setup = 0.0
        self.workspace = _Workspace()  # the operator shares one among its passes

    def scaled(self, factor: float) -> _LinePass:
        """The same pass with every tap times ``factor``."""
        scaled = _LinePass(self.taps * factor, self.axis, self.shift, self.dtype, self.length)
        scaled.workspace = self.workspace
        return scaled

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        from scipy import ndimage

        n = src.shape[self.axis]
        before, after = -self.shift, self.size - 1 + self.shift  # edge samples per line
        if self.method == "running":
            ndimage.uniform_filter1d(
                src, self.size, self.axis, output=dst, mode="constant", origin=self.origin
            )
            scale = self.dtype.type(self.common * self.size)
            if scale != 1:
                dst *= scale
            return
        if self.method == "correlate" or before + after >= n:
            ndimage.correlate1d(
                src, self.taps, self.axis, output=dst, mode="constant", origin=self.origin
            )
            return
        step = math.prod(src.shape[self.axis :][1:])  # the flat distance between taps
        self._box(src.reshape(-1), dst.reshape(-1), step)
        self._edges(src, dst, n, before, after)

    def _box(self, x: np.ndarray, out: np.ndarray, step: int) -> None:
        """The flat pass (wrong near the ends of the lines), in chunks of ``_CHUNK`` outputs
        that stay in cache; ``step``: the flat distance between two taps."""
        k, size = self.size, x.size
        halo = (k - 1) * step
        chunk = max(_CHUNK, 4 * halo)
        buffers = self.workspace.get((3, chunk + halo), self.dtype)
        padded, spare = buffers[2], None
        common = self.dtype.type(self.common)
        for a in range(0, size, chunk):
            b = min(a + chunk, size)
            lo, hi = a + self.shift * step, b + self.shift * step + halo
            if lo >= 0 and hi <= size:
                local = x[lo:hi]
            else:  # the first or last chunk: zeros outside ``x``
                local = padded[: hi - lo]
                local[...] = 0
                local[max(0, -lo) : min(hi, size) - lo] = x[max(0, lo) : min(hi, size)]
            window, spare = self._window(local, step, b - a, buffers)
            np.multiply(window[: b - a], common, out=out[a:b])
            for j, weight in self.corrections:
                tmp = spare[: b - a]
                np.multiply(local[j * step : j * step + b - a], self.dtype.type(weight), out=tmp)
                out[a:b] += tmp

    def _window(self, x: np.ndarray, step: int, count: int, buffers: np.ndarray):
        """``W[i] = Σ_{t<k} x[i + t·step]`` for ``i < count`` (``x`` holds ``count + (k−1)
        step`` samples), and a free buffer: both rows of ``buffers``."""
        ping, pong = buffers[0], buffers[1]
        window, m = x, 1
        for bit in bin(self.size)[3:]:
            valid = count + (self.size - 2 * m) * step  # W₂ₘ is needed this far
            np.add(window[:valid], window[m * step : m * step + valid], out=ping[:valid])
            window, m, ping, pong = ping, 2 * m, pong, ping
            if bit == "1":
                valid = count + (self.size - m - 1) * step
                window[:valid] += x[m * step : m * step + valid]
                m += 1
        return window, ping

    def _edges(self, src: np.ndarray, dst: np.ndarray, n: int, before: int, after: int) -> None:
        """Recompute the first ``before`` and last ``after`` samples of every line."""
        from scipy import ndimage

        axis, k = self.axis, self.size

        def along(a, part):
            index = [slice(None)] * a.ndim
            index[axis] = part
            return a[tuple(index)]

        if before:
            edge = along(src, slice(0, min(n, k - 1)))  # the samples these outputs read
            along(dst, slice(0, before))[...] = along(
                ndimage.correlate1d(edge, self.taps, axis, mode="constant", origin=self.origin),
                slice(0, before),
            )
        if after:
            first = max(0, n - after + self.shift)
            edge = along(src, slice(first, n))
            along(dst, slice(n - after, n))[...] = along(
                ndimage.correlate1d(edge, self.taps, axis, mode="constant", origin=self.origin),
                slice(n - after - first, n - first),
            )


class _DirectPass:
    """``dst[:, i] = Σ_a K[a] · src[:, i + a + s]`` (``i``, ``a``, ``s``: one entry per
    spatial axis; ``s`` is ``shift``) by ``ndimage.correlate`` (zero taps skipped), zero
    outside ``src``."""

    def __init__(self, kernel: np.ndarray, shift: tuple[int, ...]) -> None:
        self.kernel = np.asarray(kernel, dtype=np.float64)
        self.origin = (0,) + tuple(
            -(k // 2) - s for k, s in zip(self.kernel.shape, shift, strict=True)
        )
        self.shift = shift
        self.cost = cost.DIRECT_NS[0] + cost.DIRECT_NS[1] * np.count_nonzero(self.kernel)
        # ndimage's offset table spans the whole extent: a dilated kernel makes it explode
        self.setup = cost.DIRECT_TABLE_NS * self.kernel.size**2

    def scaled(self, factor: float) -> _DirectPass:
        return _DirectPass(self.kernel * factor, self.shift)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> None:
        from scipy import ndimage

        ndimage.correlate(src, self.kernel[None], output=dst, mode="constant", origin=self.origin)


def spatial_layout(op):
    """``(corner, grid, shift)`` of the spatial grid: the image's top-left corner, the grid
    shape, and the forward correlation's offset per spatial axis (in ``[1 − k, 0]``).

    A ``constant`` boundary pads with zeros, which the passes' zero fill gives: the
    image goes at the top-left where the offset allows (in ``same`` mode, stride 1,
    image, data and grid coincide: contiguous arrays, no padding). Other boundaries
    get the padded image, filled and folded by :meth:`_Grid.fill_padding` /
    :meth:`_Grid.fold_padding`.
    """
    core = convolution_of(op)
    k = core.effective.shape[2:]
    befores = tuple(before for before, _ in core.pads)
    if core.geometry.boundary == "constant":
        corner = tuple(max(0, b - n + 1) for b, n in zip(befores, k, strict=True))
        spatial = core.input_shape[:-1]
        grid = tuple(
            max(c + n, n1) for c, n, n1 in zip(corner, spatial, core.stride1_shape, strict=True)
        )
    else:
        corner, grid = befores, core.padded_shape
    return corner, grid, tuple(c - b for c, b in zip(corner, befores, strict=True))


def spatial_passes(op, shift: tuple[int, ...], grid: tuple[int, ...]):
    """``(forward, adjoint)`` pass lists computing ``V`` and ``Vᵀ`` on the spatial grid:
    one line pass for a kernel longer than 1 along one axis at most, one per axis for a
    rank-one kernel, else one N-D pass; whichever of the last two costs less."""
    core = convolution_of(op)
    kernel = core.effective[0, 0]
    d = kernel.ndim
    back = tuple(1 - k - s for k, s in zip(kernel.shape, shift, strict=True))  # flipped taps
    dtype = core.dtype
    long = [a for a in range(d) if kernel.shape[a] > 1]
    if len(long) <= 1:
        a = long[0] if long else d - 1
        taps = kernel.reshape(-1)
        return (
            [_LinePass(taps, a - d, shift[a], dtype, grid[a])],
            [_LinePass(taps[::-1], a - d, back[a], dtype, grid[a])],
        )
    flipped = kernel[(slice(None, None, -1),) * d]
    direct = ([_DirectPass(kernel, shift)], [_DirectPass(flipped, back)])
    factors = separable_factors(kernel)
    if factors is None:
        return direct
    factors = list(factors)
    for a in range(d - 1):  # the gains on the last pass: a box's other passes need no scaling
        total = factors[a].sum()
        if total != 0:
            factors[a], factors[-1] = factors[a] / total, factors[-1] * total
    separable = (
        [_LinePass(f, a - d, shift[a], dtype, grid[a]) for a, f in enumerate(factors)],
        [_LinePass(factors[a][::-1], a - d, back[a], dtype, grid[a]) for a in reversed(range(d))],
    )
    samples = math.prod(grid)
    return min(
        direct, separable, key=lambda passes: sum(p.cost * samples + p.setup for p in passes[0])
    )


class SpatialGridOperator(_Grid):
    """:class:`GridOperator`'s operator, layout and calls, computed in space.

    The grid holds the padded image, or for a ``constant`` boundary just the image
    and the data (the zero padding is implicit): no FFT lengths, no wrap-around.
    ``V`` and ``Vᵀ`` are correlations with a zero fill, as one 1-D pass (a kernel
    longer than 1 along one axis only), one per axis (a rank-one kernel) or one N-D
    pass (``ndimage.correlate``, zero taps skipped); a 1-D pass whose taps are mostly
    equal runs as a box sum (:class:`_LinePass`). For a thin or small kernel this
    costs less than two FFTs (:func:`grid_operator` chooses). ``scale_adjoint`` costs
    no extra pass.
    """

    def __init__(self, op, plan=None) -> None:
        corner, grid, shift = spatial_layout(op)
        self.forward_passes, self.adjoint_passes = plan or spatial_passes(op, shift, grid)
        both = self.forward_passes + self.adjoint_passes
        workspace = _Workspace()
        for p in both:
            p.workspace = workspace
        strided = any(getattr(p, "axis", -1) != -1 and p.method != "box" for p in both)
        if strided and grid[-1] * convolution_of(op).dtype.itemsize % 1024 == 0:
            grid = grid[:-1] + (
                grid[-1] + 16,
            )  # lines k·1 KiB apart alias in the cache: 1.5-3x slower
        self._place(op, grid, corner)
        shape = (self.channels,) + self.grid
        self._between = np.empty(shape, dtype=self.dtype) if len(both) > 2 else None

    def _run(self, passes, src: np.ndarray) -> np.ndarray:
        """The passes in turn, alternating between the two buffers so that the last
        writes :attr:`_result`."""
        for i, p in enumerate(passes):
            dst = self._result if (len(passes) - 1 - i) % 2 == 0 else self._between
            p(src, dst)
            src = dst
        return self._result

    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a (strided) view of a buffer."""
        self.fill_padding(self._image_grid)
        return self._run(self.forward_passes, self._image_grid)[self.observed]

    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""
        return self.fold_padding(self._run(self.adjoint_passes, self._data_grid))

    def scale_adjoint(self, factor: float) -> None:
        """From now on :meth:`adjoint` computes ``factor · Aᵀ y``."""
        self.adjoint_passes[-1] = self.adjoint_passes[-1].scaled(factor)
