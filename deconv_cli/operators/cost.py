"""The one cost model: which plan computes ``V`` (and ``Vᵀ``) fastest, and FFT lengths.

Costs in nanoseconds, measured on this project's 2-core machines (scipy.ndimage
and scipy.fft, 512-2048 px images, scipy 1.17; see ``make bench``); only the
ordering matters. Both the engines of :class:`~deconv_cli.operators.Convolution`
(allocating, any number of axes) and the grid plans of
:mod:`deconv_cli.operators.grid` (buffers kept, one 2-D kernel) are chosen with
these constants.
"""

from __future__ import annotations

import math

import numpy as np

# scipy.ndimage.correlate (N-D, zero taps skipped): per sample: fixed, per non-zero tap
DIRECT_NS = (3.0, 0.8)
DIRECT_TABLE_NS = 3.0  # per call, times (taps in the extent)²: ndimage's offset table
TAPS_NS = (3e3, 1.5)  # one strided slice per non-zero tap: per call, per output sample
SEPARABLE_NS = (8.0, 0.6)  # 1-D passes (allocating): per padded sample: fixed, per tap
# FFT convolution allocating its arrays: per padded sample, per transform, per log2 size.
# float32 transforms (complex64) take about half the time of float64's, while
# scipy.ndimage computes in float64 whatever the input: measured 0.25-0.45 ns against
# 0.4-0.75 (direct 0.55-0.8 ns per tap for both), 512² and 2048², 1 and 2 workers.
# float32's 0.6 (not 0.45) keeps the separable pass, which the constants above price
# high, for a gaussian of 13 taps or fewer, where the two measured about even.
FFT_NS_PER_LOG2 = {np.dtype(np.float32): 0.6, np.dtype(np.float64): 0.9}
# The grid plans (buffers kept, in-place transforms): two transforms per application
GRID_FFT_NS_PER_LOG2 = {np.dtype(np.float32): 0.4, np.dtype(np.float64): 0.65}
GRID_FFT_CALL_NS = 80e3  # and per application
PASS_CALL_NS = 10e3  # a spatial pass, per application
SPATIAL_MARGIN = 0.7  # spatial only where the model says it costs less than this × the FFT
LINE_NS = (1.0, 0.45)  # scipy.ndimage.correlate1d along rows: fixed, per tap
SYMMETRIC = 0.75  # the per-tap cost for symmetric taps (ndimage folds them)
RUNNING_NS = 2.3  # scipy.ndimage.uniform_filter1d along rows, any length
FLAT_NS = 0.18  # one elementwise pass over a flat array
EDGE_NS = 200.0  # a line pass's two edge strips: per line, besides their correlation
COLUMN_FACTOR = 1.3  # a 1-D pass along columns reads strided lines: it costs more


def fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c`` (``c <= 1``) at least ``n``: fast for every FFT backend.

    ``scipy.fft.next_fast_len`` may pick lengths with larger powers of 3 and 5: an
    ``rfft2`` + ``irfft2`` pair (float32, one thread, medians of 7 alternated pairs)
    at its length took 1.05× (n = 1086: 1125 against 1152), 1.19× (1300: 1350
    against 1440), 1.19× (1500: 1500 against 1536) and 0.97× (1000: 1000 against
    1024) the time at this one; the two agree on 526, 574, 700, 1038, 2062, 2110.
    """
    best = 1 << max(0, (n - 1).bit_length())
    for five in (1, 5):
        p3 = five
        while p3 < 2 * n:
            m = p3
            while m < n:
                m *= 2
            best = min(best, m)
            p3 *= 3
    return best


def engine_costs(
    extent: tuple[int, ...],
    taps: int,
    padded: tuple[int, ...],
    outputs: int,
    transforms: int,
    separable: bool,
    dtype: np.dtype,
) -> dict[str, float]:
    """Modelled cost (ns) of one application of ``V`` by each engine.

    ``extent``: the effective kernel's shape; ``taps``: its non-zero taps (over the
    whole bank); ``padded``: the padded spatial shape; ``outputs``: the kept output
    samples; ``transforms``: FFTs per application; ``dtype``: float32 or float64.
    ``scipy.ndimage`` skips zero taps in its loop but builds a table of offsets over
    the kernel's whole extent for every border position: a dilated kernel makes it
    explode (a 3×3 box at dilation 1000: hours), while the sparse taps cost only
    (non-zero taps) × (output samples).
    """
    samples = math.prod(padded)
    costs = {
        "direct": samples * (DIRECT_NS[0] + DIRECT_NS[1] * taps)
        + DIRECT_TABLE_NS * math.prod(extent) ** 2,
        "taps": taps * (TAPS_NS[0] + TAPS_NS[1] * outputs),
    }
    if separable:
        costs["separable"] = samples * (SEPARABLE_NS[0] + SEPARABLE_NS[1] * sum(extent))
    size = math.prod(fast_length(n) for n in padded)
    per_log2 = FFT_NS_PER_LOG2[np.dtype(dtype)]
    costs["fft"] = samples * per_log2 * math.log2(max(size, 2)) * transforms
    return costs
