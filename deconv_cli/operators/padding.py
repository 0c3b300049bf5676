"""The padding ``P`` and its adjoint, the fold ``Pᵀ``, on any number of axes.

Per axis, the boundary rule is an index map from padded positions to image
pixels (:func:`index_map`: ``np.pad`` of ``arange(n)``; ``-1`` for a zero). ``P``
copies pixels along the map (:func:`pad`); ``Pᵀ`` adds every padded sample back
onto the pixel it was copied from (:func:`fold`; a crop for zeros). The grid plans
fill and fold in place with the same map (:func:`border_pairs`), and the tiles
gather windows through it.
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


def pad(x: np.ndarray, pads, boundary: str) -> np.ndarray:
    """``P x``: pad the leading ``len(pads)`` axes by the boundary rule (``x`` if no padding)."""
    if not any(sum(p) for p in pads):
        return x
    full = tuple(pads) + ((0, 0),) * (x.ndim - len(pads))
    return np.pad(x, full, mode=NUMPY_PAD[boundary])


def fold(xp: np.ndarray, pads, boundary: str) -> np.ndarray:
    """``Pᵀ`` on the leading ``len(pads)`` axes: each padded sample is added back onto the
    pixel it was copied from (``xp`` may be written to)."""
    for axis, (before, after) in enumerate(pads):
        n = xp.shape[axis] - before - after
        inner = np.take(xp, range(before, before + n), axis=axis)
        pairs = border_pairs(n, (before, after), boundary)
        if pairs is not None:
            border, source = (np.array(a) for a in zip(*pairs, strict=True))
            moved = np.moveaxis(inner, axis, 0)  # a view: adds go into ``inner``
            np.add.at(moved, source - before, np.moveaxis(np.take(xp, border, axis=axis), axis, 0))
        xp = inner
    return xp
