"""The padding ``P`` and its adjoint, the fold ``Pᵀ``, on any number of axes.

Per axis, the boundary rule is an index map from padded positions to image
pixels (:func:`index_map`: ``np.pad`` of ``arange(n)``; ``-1`` for a zero). ``P``
copies pixels along the map (:func:`pad`); ``Pᵀ`` adds every padded sample back
onto the pixel it was copied from (:func:`fold`; a crop for zeros). The grid plans
fill and fold in place with the same map (:func:`border_pairs`), and the tiles
gather windows through it. :func:`pad` and :func:`fold` take their array functions
from the array's namespace (``zeros`` and indexing: the array API), so they run on
any array library that implements it.
"""

from __future__ import annotations

import numpy as np

# scipy.ndimage boundary names -> numpy.pad modes (ndimage "reflect" is numpy "symmetric").
NUMPY_PAD = {
    "constant": "constant",
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
}


def namespace(a):
    """The array-API namespace of ``a`` (numpy for numpy arrays and anything else)."""
    get = getattr(a, "__array_namespace__", None)
    return np if get is None or isinstance(a, np.ndarray) else get()


def index_map(n: int, pads: tuple[int, int], boundary: str) -> np.ndarray:
    """The image index of each padded position on one axis (``-1``: a zero)."""
    if boundary == "constant":
        return np.pad(np.arange(n), pads, mode="constant", constant_values=-1)
    return np.pad(np.arange(n), pads, mode=NUMPY_PAD[boundary])


def border_pairs(n: int, pads: tuple[int, int], boundary: str) -> list[tuple[int, int]] | None:
    """``(padded position, padded position of its source pixel)`` for each border sample
    of one axis that copies a pixel; ``None`` where there is nothing to copy."""
    before, after = pads
    if boundary == "constant" or not before + after:
        return None
    source = index_map(n, pads, boundary) + before
    border = np.r_[0:before, before + n : before + n + after]
    return list(zip(border.tolist(), source[border].tolist(), strict=True))


def _at(axis: int, index) -> tuple:
    return (slice(None),) * axis + (index, Ellipsis)


def pad(x, pads, boundary: str):
    """``P x``: pad the leading ``len(pads)`` axes by the boundary rule (``x`` if no padding).

    The image is copied into zeros, then each axis' border samples are copied from
    their source pixels (:func:`border_pairs`), axis after axis: samples in the
    corners are copies of copies, as ``np.pad`` makes them.
    """
    if not any(sum(p) for p in pads):
        return x
    xp = namespace(x)
    spatial = tuple(n + sum(p) for n, p in zip(x.shape, pads, strict=False))
    out = xp.zeros(spatial + tuple(x.shape[len(pads) :]), dtype=x.dtype)
    inner = tuple(slice(b, b + n) for (b, _), n in zip(pads, x.shape, strict=False))
    out[inner + (Ellipsis,)] = x
    for axis, p in enumerate(pads):
        for border, source in border_pairs(x.shape[axis], p, boundary) or ():
            out[_at(axis, border)] = out[_at(axis, source)]
    return out


def fold(arr, pads, boundary: str):
    """``Pᵀ`` on the leading ``len(pads)`` axes: each padded sample is added back onto the
    pixel it was copied from (``arr`` may be written to)."""
    for axis, (before, after) in enumerate(pads):
        n = arr.shape[axis] - before - after
        inner = arr[_at(axis, slice(before, before + n))]
        for border, source in border_pairs(n, (before, after), boundary) or ():
            target = _at(axis, source - before)
            inner[target] = inner[target] + arr[_at(axis, border)]
        arr = inner
    return arr
