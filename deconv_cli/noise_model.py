"""What the data's noise is: its level, its signal dependence, its quantization floor.

:func:`estimate_noise` returns a :class:`NoiseEstimate`. The white level comes from the
principal components of the data's patches (Chen, Zhu & Heng 2015); the signal
dependence from the noise energy of patches against their brightness (after Foi et
al. 2008); the floor from the grid the values lie on (8-bit data) and, for JPEG data,
from the block-DCT quantization (:mod:`deconv_cli.noise_jpeg`).
:func:`estimate_noise_sigma` is the wavelet (Donoho MAD) estimate of white noise, kept
for images too small for patches and for callers that mask clipped pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 0.6744897501960817  # the 75th percentile of the standard normal
PATCH = 8  # patch side: 64 dimensions, as Chen et al.; 5 and 7 did worse on textures
MAX_PATCHES = 40_000  # a regular subsample: eigenvalues within ~1% (sqrt(2/N)), 20 MB
BINS = 16  # brightness classes for the variance-vs-mean fit
POISSON_SHARE = 0.2  # signal-dependent if the gain explains this share of the variance
FLOOR_SHARE = 2 / 3
GRID_LEVELS = 16  # fewer distinct values (a binary mask) is not quantized data
GRIDS = ((1.0, "integer"), (1 / 255, "8-bit"), (1 / 65535, "16-bit"))


@dataclass(frozen=True)
class NoiseEstimate:
    """The noise of data ``y`` about ``A x``.

    Per pixel ``var(y) ≈ base_sigma² + gain · max(A x, 0)``; over the image, the
    white-equivalent level is ``sigma² = base_sigma² + gain · mean(max(y, 0))``.

    Attributes
    ----------
    sigma : float
        Standard deviation of the noise over the image, in data units, white-equivalent,
        including the floor that quantization or JPEG compression leaves.
    gain : float
        The signal-dependent part of the variance per unit of signal (0 for white noise;
        ``1 / photons`` for Poisson counts scaled so that ``photons`` counts read 1.0).
    kind : str
        ``"gaussian"``, ``"poisson-gaussian"``, ``"gaussian + 8-bit"``, ``"jpeg q≈90"``, ...
    base_sigma : float or None
        The signal-independent part; None means ``sigma`` (white noise).
    """

    sigma: float
    gain: float
    kind: str
    base_sigma: float | None = None

    def describe(self) -> str:
        """One line: the kind, σ and, when signal dependent, the gain."""
        text = f"{self.kind}, σ = {self.sigma:.3g}"
        if self.gain:
            text += f" (σ₀ = {self.variance(0.0) ** 0.5:.3g}, gain = {self.gain:.3g})"
        return text

    def variance(self, signal) -> np.ndarray | float:
        """The noise variance at signal level ``signal`` (``A x``, or the data)."""
        base = self.sigma if self.base_sigma is None else self.base_sigma
        return base**2 + self.gain * np.maximum(signal, 0)


def estimate_noise(
    data: np.ndarray, *, jpeg_tables=None, clipped: np.ndarray | None = None
) -> NoiseEstimate:
    """Estimate the noise of ``data`` (H×W or H×W×C): its level, signal dependence, floor.

    Parameters
    ----------
    data : ndarray, shape (H, W) or (H, W, C)
        The observed data, on the scale the solver sees (8-bit files read as ``k / 255``).
    jpeg_tables : JpegTables, optional
        The quantization tables of the JPEG file ``data`` was decoded from
        (:func:`deconv_cli.noise_jpeg.jpeg_tables_from_file`). Without them, JPEG-decoded
        data is recognized from its block-DCT coefficients.
    clipped : bool ndarray like ``data``, optional
        Pixels to leave out (clipped data has a smaller spread).

    Returns
    -------
    NoiseEstimate

    Notes
    -----
    White level: the covariance ``C`` of the image's 8×8 patches is the signal's plus
    ``σ² I``; a blurred image's patches span few dimensions, so the smallest eigenvalues
    are ``σ²``. Chen, Zhu & Heng (2015) take the largest tail ``λ_i ≥ … ≥ λ_64`` whose
    mean is not above its median (noise eigenvalues are symmetric about ``σ²``; signal
    ones pull the mean up) and ``σ² =`` that mean.

    Signal dependence: each patch's energy in that noise subspace estimates its local
    variance; against the patch means, in 16 brightness classes (medians, robust to
    texture), a least-squares line ``v = a m + b`` (Foi et al. 2008, on patches instead
    of wavelet level sets) gives the gain ``a``. It is reported when ``a · mean(y)`` is at
    least a fifth of ``σ²``, and then ``σ₀² = σ² − a · mean(y)``.

    Floor: data whose values lie on a grid of step ``Δ`` (``k / 255``: 8-bit files) carry
    a rounding error of variance ``Δ² / 12``; the level is ``max(σ², Δ² / 12)``: above
    ``Δ`` the error is white and already in ``σ²``, below it the floor dominates. JPEG
    data: :func:`deconv_cli.noise_jpeg.jpeg_error_variance`, the larger of it and ``σ²``.

    References
    ----------
    G. Chen, F. Zhu, P. A. Heng, "An efficient statistical method for image noise level
    estimation", ICCV 2015. A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical
    Poissonian-Gaussian noise modeling and fitting for single-image raw-data", IEEE TIP
    17(10), 2008.
    """
    from deconv_cli import noise_jpeg

    stack = np.asarray(data)
    stack = stack[..., None] if stack.ndim == 2 else stack
    masks = None if clipped is None else np.asarray(clipped).reshape(stack.shape)
    variances, means, energies, dims = [], [], [], []
    for c in range(stack.shape[-1]):
        channel = stack[..., c]
        mask = None if masks is None else masks[..., c]
        found = _patch_noise(channel, mask)
        if found is None:
            variances.append(estimate_noise_sigma(channel, mask) ** 2)
            continue
        variances.append(found[0])
        means.append(found[1])
        energies.append(found[2])
        dims.append(found[3])
    seen = float(np.mean(variances))
    floor = noise_jpeg.jpeg_error(stack, jpeg_tables)
    if floor is None:
        step, name = _grid(stack)
        floor = (step**2 / 12, name) if step else (0.0, "")
    variance = max(seen, floor[0])
    level = float(np.mean(np.maximum(_sample(stack), 0)))
    gain = _gain(np.concatenate(means), np.concatenate(energies), min(dims)) if means else 0.0
    base, kind = max(variance - gain * level, 0.0) ** 0.5, "poisson-gaussian"
    if not (gain > 0 and gain * level >= POISSON_SHARE * variance):
        gain, base, kind = 0.0, None, "gaussian"
    if floor[1]:
        # named by the floor alone when it explains two thirds of the variance seen
        kind = floor[1] if FLOOR_SHARE * seen <= floor[0] else f"{kind} + {floor[1]}"
    sigma = variance**0.5
    return NoiseEstimate(
        sigma=sigma if np.isfinite(sigma) else 0.0, gain=gain, kind=kind, base_sigma=base
    )


FLOOR_KINDS = ("jpeg", "8-bit")
"""Noise kinds named by their floor alone (:func:`estimate_noise`: the floor explains at
least two thirds of the variance seen)."""


def floor_noise(data: np.ndarray, *, jpeg_tables=None) -> NoiseEstimate | None:
    """The noise estimate of ``data`` where a JPEG or 8-bit floor dominates it, else None.

    Such an error is not white: a fit of the blur model to the data (GCV) absorbs part of
    it as signal and reads its level low (25-50% at JPEG q 90), so the parameter rules
    take this level instead where it applies; elsewhere the fit's level counts every
    error the model cannot explain (see docs/noise.md). Data not on the 8-bit grid
    (without JPEG tables) has no such floor: None without the full estimate.
    """
    stack = np.asarray(data)
    if jpeg_tables is None and _grid(stack[..., None] if stack.ndim == 2 else stack)[0] != 1 / 255:
        return None
    noise = estimate_noise(data, jpeg_tables=jpeg_tables)
    return noise if noise.kind.startswith(FLOOR_KINDS) else None


def _patch_noise(channel: np.ndarray, mask: np.ndarray | None):
    """``(σ², patch means, patch noise energies)`` from the PCA of the 8×8 patches, or
    None when the image has too few patches (fewer than 4 per dimension)."""
    from numpy.lib.stride_tricks import sliding_window_view

    r, d = PATCH, PATCH * PATCH
    h, w = channel.shape
    if h < r or w < r:
        return None
    step = max(1, int(np.ceil(np.sqrt((h - r + 1) * (w - r + 1) / MAX_PATCHES))))
    patches = sliding_window_view(channel, (r, r))[::step, ::step].reshape(-1, d)
    patches = patches.astype(np.float64, copy=False)
    if mask is not None:
        seen = sliding_window_view(mask, (r, r))[::step, ::step].any(axis=(-1, -2))
        patches = patches[~seen.reshape(-1)]
    if len(patches) < 4 * d:
        return None
    centred = patches - patches.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / len(centred))
    values = np.clip(values, 0, None)  # ascending
    k = d
    while k > 1 and values[:k].mean() > np.median(values[:k]):
        k -= 1
    noise = centred @ vectors[:, :k]
    energies = np.einsum("ij,ij->i", noise, noise) / k
    return float(values[:k].mean()), patches.mean(axis=1), energies, k


def _gain(means: np.ndarray, energies: np.ndarray, k: int) -> float:
    """The slope ``a ≥ 0`` of the local noise variance against the local mean."""
    if len(means) < 4 * BINS:
        return 0.0
    order = np.argsort(means)
    level = np.array([means[i].mean() for i in np.array_split(order, BINS)])
    spread = np.array([np.median(energies[i]) for i in np.array_split(order, BINS)])
    spread_of_levels = float(np.var(level))
    if not spread_of_levels > 0:
        return 0.0
    slope = float(np.mean((level - level.mean()) * (spread - spread.mean()))) / spread_of_levels
    # a noise-only energy is v·χ²_k/k, whose median is v·(1 - 2/(9k))³ (Wilson-Hilferty)
    return max(float(slope), 0.0) / (1 - 2 / (9 * k)) ** 3


def _sample(stack: np.ndarray) -> np.ndarray:
    """About 100,000 values of ``stack``, regularly spaced (no copy of a large image)."""
    flat = stack.reshape(-1)  # a view for the contiguous data the solvers pass
    return flat[:: max(1, flat.size // 100_000)]


def _grid(stack: np.ndarray) -> tuple[float, str]:
    """The step ``Δ`` of the grid all values lie on (integers, ``k/255``, ``k/65535``)
    and its name, or ``(0.0, "")``; data with fewer than 16 distinct values is not
    taken for quantized (a mask)."""
    sample = _sample(stack).astype(np.float64)
    if np.unique(sample).size < GRID_LEVELS:
        return 0.0, ""
    for step, name in GRIDS:
        scaled = sample / step
        if np.all(np.abs(scaled - np.round(scaled)) < 1e-2):
            return step, name
    return 0.0, ""


DB2_HIGH = np.array([-(1 + 3**0.5), 3 + 3**0.5, -(3 - 3**0.5), 1 - 3**0.5]) / (4 * 2**0.5)
"""The Daubechies-2 decomposition high-pass filter ``g[j] = (-1)^(j+1) h[3-j]``, with
``h = [1-√3, 3-√3, 3+√3, 1+√3] / 4√2`` the low-pass one (PyWavelets' ``dec_hi``)."""


def estimate_noise_sigma(
    image: np.ndarray, clipped: np.ndarray | None = None, *, spatial: int = 2
) -> float:
    """Standard deviation of white gaussian noise in ``image``, estimated from its wavelets.

    Parameters
    ----------
    image : ndarray, shape (*spatial) or (*spatial, C)
        An image (``spatial=2``: H×W or H×W×C) or a volume (``spatial=3``: Z×Y×X or
        Z×Y×X×C): the first ``spatial`` axes are the spatial ones, a further axis the
        channels.
    clipped : bool ndarray like ``image``, optional
        Data to leave out: the coefficients that see a clipped datum are not counted.
        Clipped noise (a dark background) has a smaller spread, and counting it
        underestimated σ by 5-11% on images in a black frame (measured).
    spatial : int
        The number of spatial axes, 1 to 3.

    Returns
    -------
    float
        ``median |d| / 0.6745`` over the finest all-high-pass db2 wavelet coefficients
        ``d`` (the diagonal band in 2-D), exact zeros left out, averaged over channels;
        0 when no coefficient is nonzero (a constant image shows no noise).

    Notes
    -----
    Donoho's estimate, as ``skimage.restoration.estimate_sigma`` computes it, without
    PyWavelets, skimage and scipy.stats (half a second of imports per process). The
    band is the high-pass filter :data:`DB2_HIGH` applied along each spatial axis and
    decimated by 2, with PyWavelets' ``symmetric`` extension (the edge sample
    repeated): along an axis of length ``n``, ``d[k] = Σ_j g[j] x[2k+1-j]`` for
    ``k = 0 … ⌊(n+3)/2⌋-1``, ``x`` extended by 3 samples on each side, as
    ``pywt.dwtn(x, "db2")["dd…d"]``.
    """
    data = np.asarray(image)
    if not 1 <= spatial <= 3 or data.ndim not in (spatial, spatial + 1):
        raise ValueError(f"image of shape {data.shape} has not {spatial} spatial axes")
    stack = data[..., None] if data.ndim == spatial else data
    masks = None
    if clipped is not None:
        masks = np.asarray(clipped).reshape(stack.shape)
    sigmas = []
    for c in range(stack.shape[-1]):
        detail = stack[..., c].astype(np.float64)
        for axis in range(spatial):
            detail = _high_pass(detail, axis)
        if masks is not None:
            kept = detail[~_seen_by_detail(masks[..., c])]
            detail = kept if kept.size else detail
        detail = detail[detail != 0]
        sigmas.append(float(np.median(np.abs(detail))) / MAD_TO_SIGMA if detail.size else 0.0)
    sigma = float(np.mean(sigmas))
    return sigma if np.isfinite(sigma) else 0.0


def _high_pass(x: np.ndarray, axis: int, taps: np.ndarray = DB2_HIGH) -> np.ndarray:
    """The finest db2 detail coefficients of ``x`` along ``axis`` (see
    :func:`estimate_noise_sigma`): ``d[k] = Σ_j g[j] x[2k+1-j]``, ``g = taps``."""
    n = x.shape[axis]
    width = [(0, 0)] * x.ndim
    width[axis] = (3, 3)
    padded = np.pad(x, width, mode="symmetric")  # padded[m] = x[m - 3]
    count = (n + 3) // 2
    out = np.zeros(x.shape[:axis] + (count,) + x.shape[axis + 1 :])
    for j, tap in enumerate(taps):
        start = 4 - j  # x[2k+1-j] = padded[2k+4-j]
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, start + 2 * count - 1, 2)
        out += tap * padded[tuple(index)]
    return out


def _seen_by_detail(mask: np.ndarray) -> np.ndarray:
    """Which coefficients of the finest all-high-pass db2 band see a datum of ``mask``
    (through the symmetric extension too): :func:`_high_pass` along every axis with
    all taps 1, on the mask, is positive exactly there."""
    seen = mask.astype(np.float64)
    for axis in range(seen.ndim):
        seen = _high_pass(seen, axis, np.ones(4))
    return seen > 0
