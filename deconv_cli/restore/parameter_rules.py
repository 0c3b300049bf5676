"""The automatic weights of Tikhonov and Wiener: GCV and the least estimated MSE.

Tikhonov's ``ν`` by generalized cross-validation (GCV; Golub, Heath and Wahba,
Technometrics 21, 1979), which needs no noise level; Wiener's by the larger of its own
GCV and the least estimated MSE with the noise level the Tikhonov fit implies (no
wavelet estimate). Both are exact functions of the spectrum where ``A`` is
diagonalizable (:func:`spectrum_of` the data's transform). Elsewhere they are computed
on a periodic model (:func:`choose_for_operator`): the data, minus its mean, times a
smooth taper (so that tiling it adds no edges), with the kernel's true transfer
function on that grid; the chosen ``ν`` is then used with the exact operator.
(Mirroring the data instead, i.e. the DCT, is exact only for symmetric kernels and
misleads GCV for, e.g., a 30° motion blur.) Kernel banks and strides have no periodic
stand-in: a rule of thumb from the noise level.

The solvers that use these weights are in :mod:`deconv_cli.restore.linear`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli.operators import ConvOperator
from deconv_cli.operators.grid import channel_first, convolution_of, noise_planes, one_kernel
from deconv_cli.restore import RestoreOptions
from deconv_cli.spectral import Diagonal, same_mode

SAMPLE_LIMIT = 2**15
"""Spectral entries used by the parameter rules; larger spectra are sampled."""

NOISE_CROP = 256
"""The noise level is estimated on a central crop of at most this side."""


def _noise_sigma(y: np.ndarray, options: RestoreOptions, ndim: int) -> float:
    """``options.noise_sigma``, or the wavelet estimate on a central crop of the data's
    planes (its last two of ``ndim`` spatial axes)."""
    if options.noise_sigma is not None:
        return float(options.noise_sigma)
    from deconv_cli.noise_model import estimate_noise_sigma

    planes = noise_planes(channel_first(y, ndim))
    h, w = planes.shape[:2]
    top, left = max(0, (h - NOISE_CROP) // 2), max(0, (w - NOISE_CROP) // 2)
    return float(estimate_noise_sigma(planes[top : top + NOISE_CROP, left : left + NOISE_CROP]))


@dataclass
class Spectrum:
    """Spectral entries of one problem (all of them, or a sample of a large spectrum).

    Per entry: ``a = |λ|²``, ``b = |λ_L|²`` (the Laplacian), the data energy and the
    number of coefficients it stands for (conjugate pairs, channels, sampling).
    """

    a: np.ndarray
    b: np.ndarray
    energy: np.ndarray
    count: np.ndarray


def spectrum_of(diagonal: Diagonal, half: np.ndarray) -> Spectrum:
    """The entries of ``T y`` with their eigenvalues; sampled above :data:`SAMPLE_LIMIT`.

    ``half`` is ``transform_rows(y)``: only the sampled blocks of the last axis are
    transformed further.
    """
    d = diagonal.ndim
    sizes = diagonal.eigenvalues.shape
    total = math.prod(sizes)
    channels = half.shape[d] if half.ndim > d else 1
    weights = diagonal.weights.reshape(-1)
    weights = np.broadcast_to(weights, (sizes[-1],)) if weights.size == 1 else weights
    step = 1  # the smallest with step^d · SAMPLE_LIMIT >= the entries (exact integers)
    while step**d * SAMPLE_LIMIT < total:
        step += 1
    if step == 1:
        parts = [(tuple(np.arange(n) for n in sizes), 1.0, None)]
    else:
        # Low frequencies carry most of the energy and the Laplacian varies fast
        # there: take them all; sample the rest on a grid, every index of each axis
        # shifted by a (seeded) random offset so no periodic pattern aliases with it.
        k0 = 8 * step
        jitter = np.random.default_rng(0)
        lows, sampled, near = [], [], []
        for a, n in enumerate(sizes):
            index = np.arange(n)
            wraps = diagonal.kind == "fft" and a < d - 1  # the rfft half does not
            dist = np.minimum(index, n - index) if wraps else index
            picked = np.arange(0, n, step)
            picked = np.minimum(picked + jitter.integers(0, step, picked.size), n - 1)
            lows.append(np.flatnonzero(dist < k0))
            sampled.append(picked)
            near.append(dist[picked] < k0)
        inside = near[0]
        for a in range(1, d):
            inside = np.logical_and.outer(inside, near[a])
        outside = ~inside
        low_count = math.prod(low.size for low in lows)
        factor = (total - low_count) / max(1, int(outside.sum()))
        parts = [(tuple(lows), 1.0, None), (tuple(sampled), factor, outside)]
    columns: list[list[np.ndarray]] = [[], [], [], []]
    for index, factor, mask in parts:
        mesh = np.ix_(*index)
        lam = diagonal.eigenvalues[mesh].astype(np.complex128)
        a = lam.real**2 + lam.imag**2
        last = index[-1]
        sub = diagonal.transform_columns(np.take(half, last, axis=d - 1))[np.ix_(*index[:-1])]
        power = sub.real.astype(np.float64) ** 2
        if np.iscomplexobj(sub):
            power += sub.imag.astype(np.float64) ** 2
        if power.ndim > d:
            power = power.sum(axis=d)
        energy = power * (weights[last] * diagonal.scale * factor)
        count = np.broadcast_to(weights[last] * (channels * factor), a.shape)
        keep = np.ones(a.shape, dtype=bool) if mask is None else mask
        b = diagonal.laplacian_at(index) ** 2
        for column, values in zip(columns, (a, b, energy, count), strict=True):
            column.append(values[keep])
    return Spectrum(*(np.concatenate(c) for c in columns))


@dataclass
class _Groups:
    """Entries grouped by ``t`` (``|λ|²/|λ_L|²`` or ``|λ|²``), at most 1000 groups.

    Per group: ``t``, the sums ``energy``, ``count`` and ``signal`` (a pilot
    estimate of the image's energy, for the Wiener risk). ``fixed``: coefficients
    with ``t = ∞`` (never regularized); ``lost``: energy where ``t = 0`` (always in
    the residual); ``n``: all coefficients.
    """

    t: np.ndarray
    energy: np.ndarray
    count: np.ndarray
    signal: np.ndarray
    fixed: float
    lost: float
    n: float

    def gcv(self, nu: np.ndarray) -> np.ndarray:
        """``n ‖(I − H_ν) y‖² / (n − tr H_ν)²`` for each ``ν``."""
        nu = np.asarray(nu, dtype=np.float64)[..., None]
        shrink = nu / (self.t + nu)
        residual = (shrink**2 * self.energy).sum(axis=-1) + self.lost
        trace = (self.count * (1.0 - shrink)).sum(axis=-1) + self.fixed
        free = self.n - trace  # 0 when H_ν = I (no smoothing): GCV is undefined there
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(free > 0, self.n * residual / free**2, np.inf)

    def noise_variance(self, nu: float) -> float:
        """``‖(I − H_ν) y‖² / (n − tr H_ν)``: the noise variance GCV's fit implies
        (Wahba's estimate)."""
        shrink = nu / (self.t + nu)
        residual = float((shrink**2 * self.energy).sum()) + self.lost
        trace = float((self.count * (1.0 - shrink)).sum()) + self.fixed
        return residual / max(self.n - trace, 1.0)

    def risk(self, nu: np.ndarray, variance: float) -> np.ndarray:
        """``Σ (ν² S + t σ² C) / (t + ν)²``: the filter's squared bias plus noise, per group.

        ``S``, the image's energy in the group, is the smaller of the pilot's and of the
        unbiased ``(energy − σ² C)⁺ / t``: the pilot alone counts amplified noise as
        image where ``t`` is tiny, the unbiased estimate alone is too noisy there.
        """
        nu = np.asarray(nu, dtype=np.float64)[..., None]
        noise = variance * self.count
        signal = np.minimum(self.signal, np.maximum(self.energy - noise, 0.0) / self.t)
        return ((nu**2 * signal + self.t * noise) / (self.t + nu) ** 2).sum(axis=-1)


def _group(
    t: np.ndarray,
    energy: np.ndarray,
    count: np.ndarray,
    signal: np.ndarray | None = None,
    *,
    per_group: int = 1,
    groups: int = 1000,
) -> _Groups:
    n = float(count.sum())
    finite = np.isfinite(t)
    zero = finite & (t <= float(t[finite].max(initial=0.0)) * 1e-30)
    lost = float(energy[zero].sum())
    fixed = float(count[~finite].sum())
    live = finite & ~zero
    signal = energy if signal is None else signal
    if not live.any():
        one = np.ones(1)
        return _Groups(one, 0 * one, 0 * one, 0 * one, fixed, lost, n)
    log_t = np.log(t[live])
    order = np.argsort(log_t)
    log_t = log_t[order]
    energy, count, signal = (v[live][order] for v in (energy, count, signal))
    groups = max(1, min(groups, log_t.size // per_group))
    starts = np.unique(np.linspace(0, log_t.size, groups + 1).astype(np.intp)[:-1])
    count_g = np.add.reduceat(count, starts)
    return _Groups(
        t=np.exp(np.add.reduceat(count * log_t, starts) / count_g),
        energy=np.add.reduceat(energy, starts),
        count=count_g,
        signal=np.add.reduceat(signal, starts),
        fixed=fixed,
        lost=lost,
        n=n,
    )


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a / b
    t[b == 0] = np.inf
    t[a == 0] = 0.0
    return t


def floor_variance(y: np.ndarray, options: RestoreOptions, kind: str) -> float:
    """Wiener's: the noise model's variance where a JPEG or 8-bit floor dominates the
    data's noise (:func:`deconv_cli.noise_model.floor_noise`), else 0."""
    if kind != "wiener":
        return 0.0
    from deconv_cli.noise_model import floor_noise

    floor = floor_noise(y, jpeg_tables=options.jpeg_tables)
    return 0.0 if floor is None else floor.sigma**2


def choose(spectrum: Spectrum, kind: str, floor: float = 0.0) -> tuple[float, str]:
    """``ν`` for Tikhonov (GCV) or Wiener (the larger of GCV's and the least estimated
    MSE's, the noise level from Tikhonov-GCV's fit, at least ``floor``: the variance of
    a JPEG or 8-bit error GCV's white fit reads low)."""
    tikhonov = _group(_ratio(spectrum.a, spectrum.b), spectrum.energy, spectrum.count)
    reg = _minimize(tikhonov.gcv, tikhonov.t)
    if kind == "tikhonov":
        return reg, "GCV"
    variance = max(tikhonov.noise_variance(reg), floor)
    gcv = _group(spectrum.a.copy(), spectrum.energy, spectrum.count)
    by_gcv = _minimize(gcv.gcv, gcv.t)
    # The Wiener risk needs the image's energy per group: the Tikhonov solution's
    # (|gain|² times the data's) is a stable pilot, where (P − σ²)/|λ|² is not.
    with np.errstate(divide="ignore", invalid="ignore"):
        gain2 = spectrum.a / (spectrum.a + reg * spectrum.b) ** 2
    pilot = np.nan_to_num(gain2, nan=0.0, posinf=0.0) * spectrum.energy
    # At least 64 entries a group, so a group's noise energy is known to ~15%.
    wiener = _group(spectrum.a.copy(), spectrum.energy, spectrum.count, pilot, per_group=64)
    by_risk = _minimize(lambda nu: wiener.risk(nu, variance), wiener.t)
    # Both estimate the same optimum and each fell short of it in places; a weight too
    # small costs far more than one too large: the larger.
    sigma = math.sqrt(variance)
    source = "the noise model's floor" if variance == floor else "GCV's fit"
    return max(by_gcv, by_risk), f"max(GCV, least estimated MSE with σ={sigma:.3g} from {source})"


def _minimize(objective, t: np.ndarray) -> float:
    """Minimize ``objective(ν)`` on a log grid spanning ``t``, then refine the best
    bracket by Brent's bounded search (``scipy.optimize.minimize_scalar``) to 1e-3 in
    ``log10 ν``."""
    from scipy.optimize import minimize_scalar

    top = math.log10(float(t.max()))
    bottom = max(math.log10(float(t.min())) - 2, top - 16)
    grid = np.linspace(bottom, top + 2, max(16, int(8 * (top + 2 - bottom)) + 1))
    values = objective(10.0**grid)
    i = int(np.argmin(values))
    lo, hi = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, grid.size - 1)])
    found = minimize_scalar(
        lambda g: float(objective(10.0**g)[()]),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-3},
    )
    return float(10.0 ** (found.x if found.fun <= values[i] else grid[i]))


def choose_for_operator(
    y: np.ndarray, op: ConvOperator, kind: str, options: RestoreOptions
) -> tuple[float, str, str | None]:
    """``ν`` for a non-diagonalizable operator, from the tapered data on a periodic grid
    (``options.noise_sigma``: the noise level for the fallback of kernel banks and
    strides)."""
    if not one_kernel(op) or any(s != 1 for s in convolution_of(op).stride):
        return _fallback(y, op, kind, options.noise_sigma)
    spectrum, taper_energy = _tapered_spectrum(y, op)
    weight, rule = choose(spectrum, kind, floor_variance(y, options, kind) * taper_energy)
    return weight, f"{rule} on the tapered data, periodic model", None


def _tapered_spectrum(y: np.ndarray, op: ConvOperator) -> Spectrum:
    """The spectrum of the data on a periodic model of ``op`` (one kernel, stride 1)."""
    d = convolution_of(op).ndim
    # A smooth (C∞) taper makes the data periodic without the jumps or kinks a
    # periodic model would read as signal (Moisan's periodic component keeps kinks
    # that mislead GCV at low noise); removing the mean first keeps the taper from
    # leaking the strong zero frequency into the kernel's spectral zeros.
    taper = _taper(y.shape[0])
    for n in y.shape[1:d]:
        taper = np.multiply.outer(taper, _taper(n))
    centred = y - y.mean(axis=tuple(range(d)))
    data = centred * (taper[..., None] if y.ndim > d else taper)
    diagonal = same_mode(op, "wrap", y.shape[:d], dtype=np.float64)
    return spectrum_of(diagonal, diagonal.transform_rows(data)), float(np.mean(taper**2))


def gcv_noise_sigma(y: np.ndarray, op: ConvOperator) -> float:
    """The noise level the Tikhonov-GCV fit of ``y`` implies: ``√(‖(I − H_ν) y‖² /
    (n − tr H_ν))`` at GCV's ``ν`` (Wahba 1983), on the tapered periodic model of ``op``
    (one kernel, stride 1), corrected for the taper's energy.

    It counts as noise whatever the blur model cannot explain at GCV's balance:
    white noise, and also signal-dependent noise and compression artefacts that a
    wavelet estimate of white noise misses.
    """
    spectrum, taper_energy = _tapered_spectrum(y, op)
    groups = _group(_ratio(spectrum.a, spectrum.b), spectrum.energy, spectrum.count)
    nu = _minimize(groups.gcv, groups.t)
    return math.sqrt(groups.noise_variance(nu) / taper_energy)


def _taper(n: int) -> np.ndarray:
    """A Planck taper: 1 inside, a C∞ ramp to 0 over ``n // 4`` samples at each end."""
    width = n // 4
    window = np.ones(n)
    if width < 1:
        return window
    z = (np.arange(width) + 0.5) / width
    with np.errstate(over="ignore"):
        ramp = 1.0 / (1.0 + np.exp(1.0 / z - 1.0 / (1.0 - z)))
    window[:width] = ramp
    window[n - width :] = ramp[::-1]
    return window


FALLBACK_FACTOR = {"tikhonov": 30.0, "wiener": 100.0}
"""``ν = factor · σ²`` where no spectral stand-in exists: about what GCV and the MSE rule
chose on natural images (camera; σ = 0.01 and 0.001) with the Laplacian (30-40 σ²)
and the identity (80-1000 σ²)."""


def _fallback(
    y: np.ndarray, op: ConvOperator, kind: str, sigma: float | None
) -> tuple[float, str, str]:
    """Kernel banks and strides have no periodic stand-in: a rule of thumb from the noise level."""
    if sigma is None:
        sigma = _noise_sigma(y, RestoreOptions(), convolution_of(op).ndim)
    factor = FALLBACK_FACTOR[kind]
    weight = max(factor * sigma**2, 1e-12)
    flag = "--reg" if kind == "tikhonov" else "--nsr"
    return (
        weight,
        f"{factor:g}·σ² (σ={sigma:.3g})",
        f"no spectral stand-in for a kernel bank or a stride: {flag[2:]} = {factor:g}·σ² "
        f"from the estimated noise level, a rule of thumb; give {flag} to choose it",
    )
