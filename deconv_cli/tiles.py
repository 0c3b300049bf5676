"""Exact tiles: ``A x`` and ``Aᵀ y`` computed tile by tile, in 1, 2 or 3 spatial axes.

``A = S ∘ V ∘ P`` (see :mod:`deconv_cli.operators`). Per axis, the padding ``P`` is an
index map from padded positions to image pixels (``np.pad`` of ``arange(n)`` with the
boundary rule; ``-1`` for zeros). An output tile of ``A x`` needs only the padded
window under it: it is gathered through the maps (from the far side of the image for
``wrap``) and the tile is a ``valid``, zero-boundary operator with the same kernel,
dilation, correlation and stride on that window. For ``Aᵀ y``, an image tile
collects every padded position the maps send into it (contiguous runs per axis: the
tile itself, and the border copies of its pixels), computes ``Vᵀ Sᵀ y`` on each
product of runs from the data above it, and adds it back through the maps. Both are
the untiled operator to rounding, for every geometry; work memory is a few
tile-sized arrays, so the input and output may be memory-mapped files.

A tile is a side for every spatial axis (``64``) or one per axis (``(16, 64, 64)``,
``--tile 16x64x64``). The tiled invert is :mod:`deconv_cli.tiled_invert`, the memory
estimate :mod:`deconv_cli.memory`.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, mention
from deconv_cli.operators import Convolution
from deconv_cli.operators.padding import index_map

SHAPE_KEEPING = f"{mention('mode', 'same')}, stride 1 and no {mention('padding')}"
"""The geometry tiles and chunks support (output shape = input shape), as messages say it."""

Tile = int | tuple[int, ...]
"""A tile: one side for every spatial axis, or one per axis."""


def parse_tile(text: str) -> Tile:
    """``--tile``: ``N`` (every spatial axis) or ``ZxYxX`` / ``HxW`` (one per axis).

    Raises
    ------
    DeconvError
        Naming ``tile`` and the value.
    """
    parts = str(text).lower().split("x")
    try:
        sides = tuple(int(p) for p in parts)
    except ValueError:
        sides = ()
    if not sides or len(sides) > 3 or min(sides) < 1:
        raise DeconvError(
            f"`{text}` must be N, HxW or ZxYxX whole numbers of pixels >= 1", parameter="tile"
        )
    return sides[0] if len(sides) == 1 else sides


def tile_sides(tile: Tile, ndim: int) -> tuple[int, ...]:
    """The tile's side on each of ``ndim`` spatial axes (checked)."""
    sides = tile if isinstance(tile, tuple) else (tile,) * ndim
    if len(sides) != ndim or any(
        isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1 for t in sides
    ):
        raise DeconvError(
            f"`{describe_tile(tile) if isinstance(tile, tuple) else tile}` must be a whole "
            "number of pixels >= 1, or one per "
            f"spatial axis ({ndim})",
            parameter="tile",
        )
    return tuple(int(t) for t in sides)


def describe_tile(tile: Tile, ndim: int = 2) -> str:
    """``64x64`` (``ndim`` equal sides) or the sides given."""
    sides = tile if isinstance(tile, tuple) else (tile,) * ndim
    return "x".join(map(str, sides))


def spans(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive tiles of ``size`` covering ``range(n)``."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _as_slice(index: np.ndarray) -> slice | None:
    """``index`` as a slice when it is a run of consecutive image indices, else ``None``."""
    if index.size and index[0] >= 0 and (index.size == 1 or np.all(np.diff(index) == 1)):
        return slice(int(index[0]), int(index[-1]) + 1)
    return None


def gather(a: np.ndarray, index: list[np.ndarray], dtype) -> np.ndarray:
    """A new array ``a[index[0]][:, index[1]]...`` (one index array per leading axis),
    zeros where an index is ``-1``.

    Consecutive indices are read as one slice (the interior tiles of a memory map);
    otherwise only the selected elements are read.
    """
    as_slices = [_as_slice(i) for i in index]
    if all(s is not None for s in as_slices):
        return np.array(a[tuple(as_slices)], dtype=dtype)
    window = np.zeros(tuple(i.size for i in index) + a.shape[len(index) :], dtype=dtype)
    inside = [i >= 0 for i in index]
    window[np.ix_(*inside)] = a[np.ix_(*(i[m] for i, m in zip(index, inside, strict=True)))]
    return window


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``[start, stop)`` of consecutive integers in a sorted index array."""
    if not index.size:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.r_[index[0], index[breaks]]
    stops = np.r_[index[breaks - 1] + 1, index[-1] + 1]
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def output_array(out: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """``out`` checked against ``shape``, or a new array."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape):
        raise GeometryError(
            f"the output array has shape {dims(out.shape)}, the result {dims(shape)}"
        )
    return out


def dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class Tiler:
    """One block of ``A x`` or ``Aᵀ y`` at a time, for any operator's geometry.

    Parameters
    ----------
    op : ConvOperator or Convolution
        Its arrays' leading axes are spatial (1, 2 or 3), then channels.

    Notes
    -----
    A block is ``((start, stop), ...)`` per spatial axis, in the coordinates of the
    result. The arrays read (``x`` for :meth:`forward_block`, ``y`` for
    :meth:`adjoint_block`) are only indexed, by tuples of slices or of ``np.ix_``
    index arrays: anything that slices like an array will do (a memory map, a Zarr
    array, a chunk of a Dask array embedded in the whole one's coordinates).
    """

    def __init__(self, op) -> None:
        self.op = op
        self.core: Convolution = getattr(op, "core", op)  # a ConvOperator's explicit axes
        self.ndim = d = self.core.ndim
        self.extent = self.core.effective.shape[2:]
        self.stride = self.core.stride
        self.maps = [
            index_map(op.input_shape[a], self.core.pads[a], self.core.geometry.boundary)
            for a in range(d)
        ]
        self.geometry = replace(self.core.geometry, mode="valid", boundary="constant", padding=None)
        self.cache: dict[tuple[int, ...], Convolution] = {}

    def window(self, spatial: tuple[int, ...]) -> Convolution:
        """The ``valid``, zero-boundary operator on a padded window of ``spatial`` shape."""
        if spatial not in self.cache:
            self.cache[spatial] = Convolution(
                self.core.bank,
                spatial + self.core.input_shape[-1:],
                self.geometry,
                groups=self.core.groups,
                dtype=self.core.dtype,
            )
        return self.cache[spatial]

    def window_shapes(self, sides: tuple[int, ...], *, adjoint: bool = False) -> list[tuple]:
        """The spatial shapes of the window operators that :func:`tiled_forward` (or
        :func:`tiled_adjoint`) builds for tiles of ``sides``: the product of the distinct
        window lengths on each axis (the cache keeps one operator per shape)."""
        d, k, s = self.ndim, self.extent, self.stride
        shape = (self.op.input_shape if adjoint else self.op.output_shape)[:d]
        lengths = []
        for a in range(d):
            found = set()
            for b0, b1 in spans(shape[a], sides[a]):
                if adjoint:
                    found.update(
                        s[a] * (p[0].stop - p[0].start - 1) + k[a] for p in self._pieces(a, b0, b1)
                    )
                else:
                    found.add(s[a] * (b1 - 1 - b0) + k[a])
            lengths.append(sorted(found))
        return list(itertools.product(*lengths))

    def forward_block(self, x, block) -> np.ndarray:
        """``(A x)[block]``: the padded window under the block, gathered through the index
        maps, through the ``valid`` operator (op layout in and out)."""
        d, k, s = self.ndim, self.extent, self.stride
        index = [
            self.maps[a][s[a] * b0 : s[a] * (b1 - 1) + k[a]] for a, (b0, b1) in enumerate(block)
        ]
        window = gather(x, index, self.core.dtype)
        conv = self.window(window.shape[:d])
        y = conv.forward(window.reshape(conv.input_shape))
        return y.reshape(y.shape[:d] + self.op.output_shape[d:])

    def _pieces(self, axis: int, start: int, stop: int):
        """Per run of padded positions on ``axis`` that land in the image span
        ``[start, stop)``: the data above it, its part of that data's window adjoint,
        and its indices in the span."""
        k, s, index = self.extent[axis], self.stride[axis], self.maps[axis]
        found = []
        for p0, p1 in _runs(np.flatnonzero((index >= start) & (index < stop))):
            i0, i1 = _covering(p0, p1, k, s, self.op.output_shape[axis])
            if i0 >= i1:  # no tap of any output reaches these positions
                continue
            # the window op's image starts at padded s·i0 and is s·(i1−1−i0) + k long
            q0, q1 = max(p0, s * i0), min(p1, s * (i1 - 1) + k)
            found.append((slice(i0, i1), slice(q0 - s * i0, q1 - s * i0), index[q0:q1] - start))
        return found

    def adjoint_block(self, y, block) -> np.ndarray:
        """``(Aᵀ y)[block]``: for each product of runs of padded positions landing in the
        block, ``Vᵀ Sᵀ`` of the data above it, folded onto the block through the maps."""
        d, k, stride = self.ndim, self.extent, self.stride
        out = np.zeros(
            tuple(b1 - b0 for b0, b1 in block) + self.op.input_shape[d:], dtype=self.core.dtype
        )
        per_axis = [self._pieces(a, b0, b1) for a, (b0, b1) in enumerate(block)]
        for combo in itertools.product(*per_axis):
            data = np.asarray(y[tuple(c[0] for c in combo)], dtype=self.core.dtype)
            spatial = tuple(stride[a] * (data.shape[a] - 1) + k[a] for a in range(d))
            conv = self.window(spatial)
            values = conv.adjoint(data.reshape(conv.output_shape))
            values = values.reshape(spatial + self.op.input_shape[d:])
            _fold(out, values[tuple(c[1] for c in combo)], [c[2] for c in combo])
        return out


def _check_array(a, shape: tuple[int, ...], what: str) -> None:
    if tuple(a.shape) != tuple(shape):
        raise GeometryError(
            f"the {what} has shape {dims(a.shape)}, the operator expects {dims(shape)}"
        )


def _blocks(shape: tuple[int, ...], sides: tuple[int, ...]):
    return itertools.product(*(spans(n, t) for n, t in zip(shape, sides, strict=True)))


def tiled_forward(op, x: np.ndarray, tile: Tile, *, out: np.ndarray | None = None) -> np.ndarray:
    """``A x`` computed tile by tile: the untiled ``op.forward(x)`` to rounding.

    Parameters
    ----------
    op : ConvOperator or Convolution
        Any kernel and geometry (mode, boundary, stride, dilation, padding, banks), in
        1, 2 or 3 spatial axes (the leading axes of its arrays).
    x : ndarray, shape ``op.input_shape``
        The image; anything that slices like an array (``np.memmap`` included).
    tile : int or tuple of int
        Side of the output tiles, in output pixels: one for every spatial axis, or
        one per axis.
    out : ndarray, shape ``op.output_shape``, optional
        Filled and returned (e.g. a memory-mapped ``.npy``); default a new array of
        ``op.dtype``.

    Returns
    -------
    ndarray
        ``A x``.

    Notes
    -----
    Per axis, the output tile ``[r0, r1)`` (stride ``s``, effective kernel extent
    ``k``) reads the padded positions ``[s·r0, s·(r1−1) + k)``. Work memory is about
    three arrays of ``∏ (s·tile + k)`` pixels (times channels) besides ``x`` and
    ``out``.
    """
    return _tiled(op, x, tile, out, adjoint=False)


def _covering(start: int, stop: int, k: int, s: int, n_out: int) -> tuple[int, int]:
    """Outputs ``[i0, i1)`` whose taps reach padded positions ``[start, stop)`` (one axis)."""
    return -(-max(start - k + 1, 0) // s), min((stop - 1) // s + 1, n_out)


def tiled_adjoint(op, y: np.ndarray, tile: Tile, *, out: np.ndarray | None = None) -> np.ndarray:
    """``Aᵀ y`` computed tile by tile: the untiled ``op.adjoint(y)`` to rounding.

    Parameters
    ----------
    op : ConvOperator or Convolution
        Any kernel and geometry; ``op.input_shape`` is the shape of the result.
    y : ndarray, shape ``op.output_shape``
        The data; anything that slices like an array (``np.memmap`` included).
    tile : int or tuple of int
        Side of the result's tiles, in image pixels (one, or one per spatial axis).
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
    reflect, mirror and nearest, at the far side for wrap). For each product of runs,
    ``Vᵀ Sᵀ`` is computed from the data whose taps reach the run (a ``valid`` adjoint
    on a window) and added onto the tile through the index maps.
    """
    return _tiled(op, y, tile, out, adjoint=True)


def _tiled(op, given: np.ndarray, tile: Tile, out: np.ndarray | None, *, adjoint: bool):
    """``A x`` (``Aᵀ y`` when ``adjoint``) block by block of the result."""
    tiler = Tiler(op)
    sides = tile_sides(tile, tiler.ndim)
    shape, result = (
        (op.output_shape, op.input_shape) if adjoint else (op.input_shape, op.output_shape)
    )
    _check_array(given, shape, "data" if adjoint else "image")
    out = output_array(out, result, tiler.core.dtype)
    block_of = tiler.adjoint_block if adjoint else tiler.forward_block
    for block in _blocks(result[: tiler.ndim], sides):
        out[tuple(slice(b0, b1) for b0, b1 in block)] = block_of(given, block)
    return out


def _fold(block: np.ndarray, values: np.ndarray, index: list[np.ndarray]) -> None:
    """``block[index[0]][:, index[1]]... += values``, adding repeated indices (a
    padding's copies)."""
    as_slices = [_as_slice(i) for i in index]
    if all(s is not None for s in as_slices):
        block[tuple(as_slices)] += values
    else:
        np.add.at(block, np.ix_(*index), values)
