"""Blind deconvolution: estimate an unknown blur kernel from one blurred image.

Multi-scale MAP estimation with a sparse (L0) gradient prior, after Pan et al. (2014,
2016) and Xu & Jia (2010): alternately

1. the latent image, ``min_x ‖k * x − y‖² + λ ‖∇x‖₀``, by half-quadratic splitting
   (an auxiliary gradient field ``g``, hard-thresholded, and a closed-form FFT step for
   ``x`` with weight ``β`` doubling from ``2λ``); its gradients are the image's salient
   edges only, which is what makes the kernel step well posed;
2. the kernel, ``min_{k ≥ 0} Σ_d ‖M(∂_d x * k) − ∂_d y‖² + γ ‖k‖²`` over the observed
   pixels only (``M``: the *valid* part of the blur, so a crop's unknown boundary
   costs nothing), by its normal equations and projected gradient; then taps below
   1/20 of the peak set to 0, connected pieces holding under 10% of the mass removed,
   the sum set to 1 and the centroid moved to the centre pixel,

from a coarse level (kernel about 5 px) to the full resolution, each level starting
from the previous kernel upsampled. The latent step solves on the crop padded by a
smooth periodic extension (so the FFT's wrap-around sees no edge); the kernel step
uses only the observed data.

References
----------
J. Pan, Z. Hu, Z. Su, M.-H. Yang, "Deblurring text images via L0-regularized intensity
and gradient prior", CVPR 2014; "L0-regularized intensity and gradient prior for
deblurring text images and beyond", IEEE TPAMI 39(2), 2017.
L. Xu, J. Jia, "Two-phase kernel estimation for robust motion deblurring", ECCV 2010.
D. Perrone, P. Favaro, "Total variation blind deconvolution: the devil is in the
details", CVPR 2014.
A. Levin, Y. Weiss, F. Durand, W. T. Freeman, "Understanding and evaluating blind
deconvolution algorithms", CVPR 2009.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import DeconvError, mention

LAMBDA_START, LAMBDA_END = 4e-3, 1e-3
"""The L0 weight λ of the latent step: from ``LAMBDA_START``, divided by 1.1 after each
iteration, never below ``LAMBDA_END`` (Pan et al.'s schedule, for data on [0, 1], but
stopped at 10⁻³ rather than 10⁻⁴: the finer levels then see only the salient edges,
Xu & Jia's point that edges narrower than the kernel mislead its estimate)."""
ITERATIONS = 5
"""Latent/kernel alternations per pyramid level."""
KERNEL_WEIGHT = 0.1
"""ρ: the kernel step's Tikhonov weight, relative to the latent gradients' energy."""
MIN_EDGES = 0.002
"""Too little structure: fewer than this fraction of the pixels with a gradient above
5 noise standard deviations (a flat or nearly flat image)."""
DEFAULT_MAX_SIZE = 31
"""The default upper bound of the kernel's side (camera shake up to about 27 px)."""

Progress = Callable[[str], None]


@dataclass
class BlindEstimate:
    """The kernel found and the latent (edge) image of the last step.

    Attributes
    ----------
    kernel : (kh, kw) ndarray
        Non-negative, sums to 1, centroid on the centre pixel, trimmed to its support.
    latent : ndarray
        The latent image on the crop's extended domain (shape ``y + bound − 1``), sparse
        in gradients: salient edges only.
    bound : (int, int)
        The kernel size the search used (the upper bound).
    """

    kernel: np.ndarray
    latent: np.ndarray
    bound: tuple[int, int]


# --------------------------------------------------------------------------- operators


def _fft_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    from scipy.fft import next_fast_len

    return tuple(next_fast_len(int(n), real=True) for n in shape)


def blur_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``(image * kernel)`` restricted to the ``valid`` part (a true convolution).

    Shape ``image.shape − kernel.shape + 1``: the pixels the image fully determines.
    """
    from scipy.fft import irfft2, rfft2

    full = tuple(a + b - 1 for a, b in zip(image.shape, kernel.shape, strict=True))
    size = _fft_shape(full)
    out = irfft2(rfft2(image, size) * rfft2(kernel, size), size)
    kh, kw = kernel.shape
    return out[kh - 1 : image.shape[0], kw - 1 : image.shape[1]]


def kernel_gradient(image: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """The adjoint of ``k ↦ blur_valid(image, k)``, applied to ``residual``.

    ``(Aᵀ r)[a, b] = Σ_ij r[i, j] · image[i + kh − 1 − a, j + kw − 1 − b]``: the
    correlation of the image with the residual, over the kernel's support
    ``(kh, kw) = image.shape − residual.shape + 1``. It is the gradient of
    ``½‖blur_valid(image, k) − y‖²`` with respect to ``k`` at ``r = blur − y``.
    """
    from scipy.fft import irfft2, rfft2

    kh = image.shape[0] - residual.shape[0] + 1
    kw = image.shape[1] - residual.shape[1] + 1
    size = _fft_shape(image.shape)
    # correlation of image with residual: conv of image with the flipped residual
    corr = irfft2(rfft2(image, size) * rfft2(residual[::-1, ::-1], size), size)
    # corr[m, n] = Σ r[i, j] image[m − (H−1) + i, ...]; m = H − 1 + kh − 1 − a
    h, w = residual.shape
    return corr[h - 1 : h - 1 + kh, w - 1 : w - 1 + kw][::-1, ::-1]


def _gradients(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences along columns and rows (one pixel shorter on that axis)."""
    return np.diff(image, axis=1), np.diff(image, axis=0)


# --------------------------------------------------------------------------- the steps


def _psf2otf(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The kernel's transfer function on a ``shape`` periodic grid, centre at the origin."""
    from scipy.fft import rfft2

    padded = np.zeros(shape)
    kh, kw = kernel.shape
    padded[:kh, :kw] = kernel
    padded = np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    return rfft2(padded)


def periodic_pad(y: np.ndarray, pad: int) -> np.ndarray:
    """``y`` padded by ``pad`` on every side, blending its reflection into its mean so
    that opposite edges meet: a smooth periodic extension for the FFT."""
    out = np.pad(y, pad, mode="symmetric")
    mean = float(y.mean())
    ramp = np.ones(out.shape[0])
    ramp[:pad] = ramp[out.shape[0] - pad :][::-1] = np.linspace(0, 1, pad + 1)[:-1]
    rows = ramp
    ramp = np.ones(out.shape[1])
    ramp[:pad] = ramp[out.shape[1] - pad :][::-1] = np.linspace(0, 1, pad + 1)[:-1]
    weight = rows[:, None] * ramp[None, :]
    return mean + weight * (out - mean)


def latent_l0(padded: np.ndarray, kernel: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_x ‖k * x − y‖² + λ‖∇x‖₀`` on a periodic grid, by half-quadratic splitting.

    With ``g ≈ ∇x``: ``g = ∇x`` where ``|∇x|² ≥ λ/β``, else 0; then
    ``x = F⁻¹[(K̄ Y + β F(∇ᵀg)) / (|K|² + β |F∇|²)]``; ``β`` from ``2λ``, doubled
    until ``10⁵`` (Pan et al. 2014).
    """
    from scipy.fft import irfft2, rfft2

    shape = padded.shape
    otf = _psf2otf(kernel, shape)
    dx = _psf2otf(np.array([[1.0, -1.0]]), shape)
    dy = _psf2otf(np.array([[1.0], [-1.0]]), shape)
    numerator = np.conj(otf) * rfft2(padded)
    kernel_power = np.abs(otf) ** 2
    gradient_power = np.abs(dx) ** 2 + np.abs(dy) ** 2
    x = padded
    beta = 2 * lam
    while beta < 1e5:
        h = np.roll(x, -1, axis=1) - x
        v = np.roll(x, -1, axis=0) - x
        small = h * h + v * v < lam / beta
        h[small] = 0
        v[small] = 0
        divergence = (np.roll(h, 1, axis=1) - h) + (np.roll(v, 1, axis=0) - v)
        x = irfft2(
            (numerator + beta * rfft2(divergence)) / (kernel_power + beta * gradient_power),
            shape,
        )
        beta *= 2
    return x


def kernel_step(
    latent: np.ndarray, observed: np.ndarray, shape: tuple[int, int], weight: float
) -> np.ndarray:
    """``argmin_k Σ_d ‖blur_valid(∂_d x, k) − ∂_d y‖² + γ‖k‖²``, unconstrained
    (:func:`project_kernel` makes it a blur kernel); ``γ = weight · Σ_d ‖∂_d x‖²``.

    The normal equations ``(Σ_d A_dᵀA_d + γI) k = Σ_d A_dᵀ ∂_d y`` are solved directly:
    the right side by :func:`kernel_gradient` (exact), ``A_dᵀA_d`` as the Toeplitz
    matrix of the gradient's autocorrelation ``R_d[s, t] = Σ g[m, n] g[m + s, n + t]``
    (exact but for the terms the crop's last ``kh − 1`` rows and columns add: a few
    per cent of the sum on a crop ten times the kernel).
    """
    from scipy.fft import irfft2, rfft2

    kh, kw = shape
    gram = np.zeros((2 * kh - 1, 2 * kw - 1))
    rhs = np.zeros(shape)
    energy = 0.0
    for g, d in zip(_gradients(latent), _gradients(observed), strict=True):
        size = _fft_shape((g.shape[0] + kh, g.shape[1] + kw))
        spectrum = rfft2(g, size)
        auto = irfft2(spectrum * np.conj(spectrum), size)
        gram += np.roll(auto, (kh - 1, kw - 1), axis=(0, 1))[: 2 * kh - 1, : 2 * kw - 1]
        rhs += kernel_gradient(g, d)
        energy += float(auto[0, 0])
    rows, cols = np.indices(shape)
    lag_r = rows.reshape(-1, 1) - rows.reshape(1, -1) + kh - 1
    lag_c = cols.reshape(-1, 1) - cols.reshape(1, -1) + kw - 1
    matrix = gram[lag_r, lag_c]
    matrix[np.diag_indices_from(matrix)] += weight * energy
    return _nonnegative(matrix, rhs.reshape(-1)).reshape(shape)


def _nonnegative(matrix: np.ndarray, rhs: np.ndarray, iterations: int = 60) -> np.ndarray:
    """``argmin_{k ≥ 0} ½ kᵀMk − bᵀk`` by accelerated projected gradient (FISTA, step
    ``1/‖M‖₂``), from the clipped unconstrained solution: non-negativity in the
    solve, not only after it, keeps the faint scattered taps of a least-squares
    kernel at zero."""
    from scipy.linalg import solve

    k = np.maximum(solve(matrix, rhs, assume_a="pos"), 0)
    v = np.ones_like(rhs)
    for _ in range(20):  # power iteration for the step
        v = matrix @ v
        v /= np.linalg.norm(v)
    step = 1.0 / float(v @ matrix @ v)
    z, t = k.copy(), 1.0
    for _ in range(iterations):
        previous = k
        k = np.maximum(z - step * (matrix @ z - rhs), 0)
        t, t_old = (1 + math.sqrt(1 + 4 * t * t)) / 2, t
        z = k + ((t_old - 1) / t) * (k - previous)
    return k


def project_kernel(k: np.ndarray) -> np.ndarray:
    """A blur kernel from a least-squares one: taps below 1/20 of the peak set to 0,
    connected pieces (8-neighbour) holding under 10% of the mass removed (but for the
    heaviest, should every piece hold less), sum 1,
    centroid moved to the centre pixel (whole-pixel shift)."""
    from scipy import ndimage

    k = np.where(k > k.max() / 20, k, 0.0) if k.max() > 0 else np.zeros_like(k)
    if k.sum() <= 0:
        out = np.zeros_like(k)
        out[k.shape[0] // 2, k.shape[1] // 2] = 1.0
        return out
    labels, count = ndimage.label(k > 0, structure=np.ones((3, 3)))
    if count > 1:
        mass = ndimage.sum(k, labels, index=np.arange(1, count + 1))
        keep = mass >= min(0.1 * k.sum(), mass.max())  # the heaviest piece always stays
        k = np.where(np.isin(labels, 1 + np.flatnonzero(keep)), k, 0.0)
    k /= k.sum()
    return center_kernel(k)


def center_kernel(k: np.ndarray) -> np.ndarray:
    """``k`` shifted by whole pixels so its centroid is on the centre pixel (mass pushed
    past the edge is dropped and the rest renormalized)."""
    rows, cols = np.indices(k.shape)
    shift = (
        int(round(k.shape[0] // 2 - float((rows * k).sum()))),
        int(round(k.shape[1] // 2 - float((cols * k).sum()))),
    )
    if shift == (0, 0):
        return k
    from scipy import ndimage

    out = ndimage.shift(k, shift, order=0, mode="constant")
    total = out.sum()
    return out / total if total > 0 else k


def center_exactly(k: np.ndarray) -> np.ndarray:
    """``k`` (centroid within half a pixel of the centre) shifted by the remaining
    fraction of a pixel, by linear interpolation, so its centroid is exactly on the
    centre pixel.

    A shift by ``s ∈ (−1, 1)`` per axis, ``k'[i] = (1 − |s|) k[i] + |s| k[i − sign s]``,
    keeps the sum and moves the centroid by exactly ``s``; the window grows by one
    pixel on each side to hold it. A restoration with a kernel half a pixel off the
    truth's position is shifted by half a pixel, which costs more than most kernel
    errors on sharp images.
    """
    from scipy import ndimage

    k = np.pad(k, 1)
    rows, cols = np.indices(k.shape)
    shift = (k.shape[0] // 2 - float((rows * k).sum()), k.shape[1] // 2 - float((cols * k).sum()))
    out = np.maximum(ndimage.shift(k, shift, order=1, mode="constant"), 0)
    return trim_kernel(out / out.sum())


def trim_kernel(k: np.ndarray) -> np.ndarray:
    """The smallest odd, centred window holding every nonzero tap."""
    rows, cols = np.nonzero(k)
    ch, cw = k.shape[0] // 2, k.shape[1] // 2
    rh = int(max(ch - rows.min(), rows.max() - ch))
    rw = int(max(cw - cols.min(), cols.max() - cw))
    return np.ascontiguousarray(k[ch - rh : ch + rh + 1, cw - rw : cw + rw + 1])


# --------------------------------------------------------------------------- the pyramid


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``shape``, anti-aliased when shrinking."""
    from scipy import ndimage

    factors = [n / m for n, m in zip(shape, image.shape, strict=True)]
    if min(factors) < 1:
        image = ndimage.gaussian_filter(image, [0.5 * max(1 / f - 1, 0) ** 0.5 for f in factors])
    out = ndimage.zoom(image, factors, order=1, mode="nearest", grid_mode=True)
    return out[: shape[0], : shape[1]]


def _levels(bound: tuple[int, int]) -> list[tuple[float, tuple[int, int]]]:
    """``(scale, kernel shape)`` from the coarsest level (kernel ≈ 3 px) to 1."""
    levels = []
    scale = 1.0
    while True:
        shape = tuple(max(3, 2 * int(round((b * scale - 1) / 2)) + 1) for b in bound)
        levels.append((scale, shape))
        if max(shape) <= 5:
            break
        scale /= math.sqrt(2)
    return levels[::-1]


def _resize_kernel(k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from scipy import ndimage

    factors = [n / m for n, m in zip(shape, k.shape, strict=True)]
    out = ndimage.zoom(k, factors, order=1, grid_mode=True, mode="grid-constant")
    out = np.maximum(out[: shape[0], : shape[1]], 0)
    fixed = np.zeros(shape)
    fixed[: out.shape[0], : out.shape[1]] = out
    return center_kernel(fixed / fixed.sum())


def check_structure(gray: np.ndarray, noise_sigma: float) -> None:
    """Refuse an image with too little structure to estimate a kernel from."""
    gx, gy = _gradients(gray)
    strong = np.hypot(gx[:-1], gy[:, :-1]) > 5 * max(noise_sigma, 1e-3)
    if strong.mean() < MIN_EDGES:
        raise DeconvError(
            f"too little structure to estimate a blur kernel: {strong.mean():.2%} of the "
            f"pixels have an edge above the noise (need {MIN_EDGES:.1%})"
        )


def check_bound(bound: tuple[int, int], shape: tuple[int, ...]) -> None:
    """Refuse a kernel bound that does not fit the image three times over."""
    if bound[0] * 3 > shape[0] or bound[1] * 3 > shape[1]:
        raise DeconvError(
            f"{mention('kernel_size', f'{bound[0]}x{bound[1]}')} is too large for a "
            f"{shape[0]}x{shape[1]} image: estimating it needs an image at least three "
            "times the kernel on each side"
        )


def estimate_kernel(
    gray: np.ndarray,
    bound: tuple[int, int],
    *,
    progress: Progress | None = None,
) -> BlindEstimate:
    """Estimate the blur kernel of ``gray`` (H×W, on [0, 1]) within ``bound`` (odd sides).

    Parameters
    ----------
    gray : (H, W) ndarray
        A crop of a blurred scene (the boundary is unknown).
    bound : (int, int)
        Odd upper bound of the kernel's shape.
    progress : callable, optional
        Called with a short text at each level.

    Returns
    -------
    BlindEstimate
    """
    levels = _levels(bound)
    kernel = np.zeros(levels[0][1])
    c = kernel.shape[0] // 2, kernel.shape[1] // 2
    kernel[c[0], c[1] - 1 : c[1] + 1] = 0.5  # Pan et al.'s start: a 2-tap bar
    lam = LAMBDA_START
    latent = gray
    for number, (scale, shape) in enumerate(levels, 1):
        if progress is not None:
            progress(f"level {number}/{len(levels)}: kernel {shape[0]}x{shape[1]}")
        size = (max(int(round(gray.shape[0] * scale)), 3 * shape[0]),) + (
            max(int(round(gray.shape[1] * scale)), 3 * shape[1]),
        )
        y = gray if size == gray.shape else _resize(gray, size)
        kernel = _resize_kernel(kernel, shape)
        pad = max(shape)
        padded = periodic_pad(y, pad)
        for _ in range(ITERATIONS):
            full = latent_l0(padded, kernel, lam)
            latent = _extended(full, pad, y.shape, shape)
            kernel = project_kernel(kernel_step(latent, y, shape, KERNEL_WEIGHT))
            lam = max(lam / 1.1, LAMBDA_END)
    return BlindEstimate(center_exactly(trim_kernel(kernel)), latent, bound)


def _extended(full: np.ndarray, pad: int, observed, shape) -> np.ndarray:
    """The part of the padded latent image the observed pixels see through ``shape``."""
    ch, cw = shape[0] // 2, shape[1] // 2
    return full[
        pad - ch : pad + observed[0] + shape[0] - 1 - ch,
        pad - cw : pad + observed[1] + shape[1] - 1 - cw,
    ]
