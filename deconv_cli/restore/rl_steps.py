"""The elementwise steps of a Richardson-Lucy iteration, in the arrays' namespace.

``blocks`` (numpy arrays): each chain of operations fused in place, block by block of
about 64k samples, so that it runs in cache; ``None`` (arrays of another array-API
library): whole-array operations of that library. The iteration itself is
:func:`deconv_cli.restore.richardson_lucy.richardson_lucy`.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.operators.padding import namespace
from deconv_cli.restore.iterative import dot as _dot


def blocks(shape: tuple[int, ...]) -> list[tuple[int, slice]]:
    """(channel, slabs along the first spatial axis) blocks of about 64k samples: each
    chain of elementwise operations runs in cache. (Threads do not pay: many short numpy
    calls contend for the GIL, and the FFTs already use the cores.)"""
    channels, height = shape[:2]
    step = max(1, (1 << 16) // max(math.prod(shape[2:]), 1))
    return [
        (c, slice(r, min(r + step, height)))
        for c in range(channels)
        for r in range(0, height, step)
    ]


def clip_below(a: np.ndarray, floor) -> None:
    """``a = max(a, floor)`` in place. (``np.maximum`` with a scalar runs an unvectorized
    loop, 3x slower than ``clip`` with both bounds; numpy 2.4.)"""
    xp = namespace(a)
    if xp is np:
        np.clip(a, floor, np.inf, out=a)
    else:
        a[...] = xp.clip(a, min=float(floor))


def per_channel(a) -> np.ndarray:
    """A channel-first array's per-channel sums, as float64 numpy."""
    xp = namespace(a)
    sums = xp.sum(a, axis=tuple(range(1, a.ndim)), dtype=xp.float64)
    return np.asarray([float(sums[c]) for c in range(a.shape[0])])


def to_numpy(a) -> np.ndarray:
    """``a`` as a numpy array (through DLPack for another library's array)."""
    return a if isinstance(a, np.ndarray) else np.from_dlpack(a)


def inner(a, b) -> float:
    """``⟨a, b⟩`` in the arrays' namespace."""
    xp = namespace(a)
    return _dot(a, b) if xp is np else float(xp.sum(a * b, dtype=xp.float64))


def predict(blocks, p, x, x_prev, alpha: np.ndarray) -> None:
    """``p = max(x + α (x − x_prev), 0)``, one ``α`` per channel."""
    if blocks is None:
        xp = namespace(x)
        a = xp.reshape(xp.asarray(alpha, dtype=x.dtype), (-1,) + (1,) * (x.ndim - 1))
        p[...] = xp.clip(x + a * (x - x_prev), min=0.0)
        return
    for c, rows in blocks:
        pb, xb = p[c, rows], x[c, rows]
        if alpha[c] > 0:
            np.subtract(xb, x_prev[c, rows], out=pb)
            pb *= x.dtype.type(alpha[c])  # a float64 scalar would compute in float64
            pb += xb
            clip_below(pb, 0)
        else:
            pb[...] = xb


def ratio(blocks, scratch, ax, y, out, floor, need_residual: bool, photons=None):
    """``out = y / max(A p, floor)``; returns ``‖A p − y‖²`` (0 when not needed) and,
    with ``photons = (s, b)``, the Poisson deviance ``Σ 2 [v log(v / w) + w − v]`` of
    ``v = s y + b`` about ``w = s max(A p, floor) + b`` (else 0).

    The floored ``A p`` goes to the contiguous ``scratch`` (two blocks of it with
    ``photons``): where ``ax`` is a view of a grid with gaps between its rows, ufuncs on
    it run one inner loop per row (about twice the cost at 544², see
    ``richardson_lucy``), so it is read once."""
    residual2 = deviance = 0.0
    if blocks is None:
        xp = namespace(y)
        if need_residual:
            residual2 = inner(ax - y, ax - y)
        model = xp.clip(ax, min=float(floor))
        out[...] = y / model
        if photons is not None:
            s, b = photons
            v, w = s * y + b, s * model + b
            deviance = 2 * float(xp.sum(v * xp.log(v / w) + w - v, dtype=xp.float64))
        return residual2, deviance
    for c, rows in blocks:
        ab, yb = ax[c, rows], y[c, rows]
        n = rows.stop - rows.start
        t = scratch[:n]
        if need_residual:
            np.subtract(ab, yb, out=t)
            residual2 += _dot(t, t)
        np.clip(ab, floor, np.inf, out=t)
        np.divide(yb, t, out=out[c, rows])
        if photons is not None:
            deviance += _deviance(yb, t, scratch[n : 2 * n], *photons)
    return residual2, deviance


def _deviance(y, model, v, s: float, b: float) -> float:
    """``2 Σ [v log(v / w) + w − v]``, ``v = s y + b``, ``w = s · model + b``, in place
    (``model`` is overwritten, ``v`` is scratch). The linear part ``s (model − y)`` is
    summed apart, in float64: each term is about 1/2 against ``v`` log ratios of order
    ``√v``, which cancel."""
    linear = s * (float(np.sum(model, dtype=np.float64)) - float(np.sum(y, dtype=np.float64)))
    np.multiply(y, y.dtype.type(s), out=v)
    v += y.dtype.type(b)
    model *= y.dtype.type(s)
    model += y.dtype.type(b)
    np.divide(v, model, out=model)
    np.log(model, out=model)
    return 2 * (_dot(v, model) + linear)


def update(blocks, scratch, x, x_prev, p, b, inv_at1, g, g_prev, steps: bool, change: bool):
    """``x = p · b [/ Aᵀ1]`` and ``g = x − p``. Returns ``‖g‖²`` and ``⟨g, g_prev⟩`` per
    channel (when ``steps``), and ``‖x − x_prev‖²``, ``‖x‖²`` (when ``change``)."""
    gg, gp = np.zeros(x.shape[0]), np.zeros(x.shape[0])
    dd = xx = 0.0
    if blocks is None:
        x[...] = p * b if inv_at1 is None else p * b * inv_at1
        if steps:
            g[...] = x - p
            gg, gp = per_channel(g * g), per_channel(g * g_prev)
        if change:
            dd, xx = inner(x - x_prev, x - x_prev), inner(x, x)
        return gg, gp, dd, xx
    for c, rows in blocks:
        xb, pb, gb = x[c, rows], p[c, rows], g[c, rows]
        np.multiply(pb, b[c, rows], out=xb)
        if inv_at1 is not None:
            xb *= inv_at1[c, rows]
        if steps:
            np.subtract(xb, pb, out=gb)
            gg[c] += _dot(gb, gb)
            gp[c] += _dot(gb, g_prev[c, rows])
        if change:
            t = scratch[: rows.stop - rows.start]
            np.subtract(xb, x_prev[c, rows], out=t)
            dd += _dot(t, t)
            xx += _dot(xb, xb)
    return gg, gp, dd, xx
