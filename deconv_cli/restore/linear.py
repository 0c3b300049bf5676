"""Tikhonov and Wiener: regularized linear inverses, closed form where diagonalizable.

(Over 500 lines: the closed forms, the parameter rules and CG share one spectral
representation of the problem, :class:`_Spectrum`; the rules are the candidate to move
out, with ``gcv_noise_sigma``, which TV imports from here.)

Both minimize ``‖A x − y‖² + ν ‖L x‖²``: Tikhonov with ``L`` the discrete Laplacian
(``2d + 1`` points on ``d`` spatial axes: 3 in 1-D, 5 in 2-D, 7 in 3-D; the boundary
convention of ``A``), Wiener with ``L = I`` and ``ν`` a
constant noise-to-signal power ratio. The minimizer solves the normal equations
``(AᵀA + ν LᵀL) x = Aᵀ y``.

Where a fast transform diagonalizes ``A`` (and then ``L`` too) the solution is one
filter, ``x = T⁻¹( conj(λ) / (|λ|² + ν |λ_L|²) · T y )``. Elsewhere (other boundaries,
``full``/``valid`` modes, ``--boundary unknown``, strides, kernel banks) conjugate
gradients solve the normal equations from ``x₀ = 0``, with a DCT preconditioner where
one helps (see :func:`_preconditioner`).

Automatic parameters: Tikhonov's ``ν`` by generalized cross-validation (GCV; Golub,
Heath and Wahba, Technometrics 21, 1979), which needs no noise level; Wiener's by the
larger of its own GCV and the least estimated MSE with the noise level the Tikhonov
fit implies (no wavelet estimate). Both are exact functions of the spectrum where ``A``
is diagonalizable. Elsewhere they are computed on a periodic model: the
data, minus its mean, times a smooth taper (so that tiling it adds no edges), with
the kernel's true transfer function on that grid; the chosen ``ν`` is then used
with the exact operator. (Mirroring the data instead, i.e. the DCT, is exact only
for symmetric kernels and misleads GCV for, e.g., a 30° motion blur.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli.operators import Convolution, ConvOperator, Geometry, is_symmetric_kernel
from deconv_cli.operators.grid import channel_first, convolution_of, noise_planes, one_kernel
from deconv_cli.restore import Footprint, RestoreOptions, RestoreResult, check, register
from deconv_cli.restore.inverse import check_data
from deconv_cli.spectral import Diagonal, approximate, diagonalize, same_mode

DEFAULT_ITERATIONS = 1000
DEFAULT_TOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 1e-4}
"""CG stops when ``‖Aᵀy − (AᵀA + νLᵀL) x‖ / ‖Aᵀy‖`` falls below this."""
CLOSED_FORM_OR_CG = Footprint(25.0, diagonal=4.5)
"""Peak memory of tikhonov and wiener: the closed form where diagonalizable, else CG."""

PRECONDITIONER_DAMPING = 1e-3
"""Added to the preconditioner's denominator, relative to ``max |λ|²``."""

SAMPLE_LIMIT = 2**15
"""Spectral entries used by the parameter rules; larger spectra are sampled."""

NOISE_CROP = 256
"""The noise level is estimated on a central crop of at most this side."""


def laplacian_stencil(ndim: int) -> np.ndarray:
    """The ``2d + 1``-point Laplacian on ``d`` axes: ``−2d`` at the centre of a ``3^d``
    array, 1 at its ``2d`` neighbours along the axes (in 2-D the 5-point stencil)."""
    stencil = np.zeros((3,) * ndim)
    centre = (1,) * ndim
    stencil[centre] = -2.0 * ndim
    for axis in range(ndim):
        for side in (0, 2):
            stencil[centre[:axis] + (side,) + centre[axis + 1 :]] = 1.0
    return stencil


@register(
    "tikhonov",
    "Tikhonov with a Laplacian (--reg or GCV): closed form where diagonalizable, else CG",
    options=("reg", "iterations", "tol"),
    automatic=("reg",),
    iterative=True,
    memory=CLOSED_FORM_OR_CG,
    roundtrip=1,
)
def tikhonov(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    """Minimize ``‖A x − y‖² + ν ‖L x‖²`` with ``L`` the discrete Laplacian.

    Parameters
    ----------
    blurred : ndarray
        The data ``y``, shape ``op.output_shape``.
    op : ConvOperator or Convolution
        Any geometry, 1 to 3 spatial axes (arrays ``*spatial`` or ``*spatial × C``).
    options : RestoreOptions
        ``reg``: ``ν`` (``None``: chosen by GCV); ``iterations``/``tol``: the CG
        solver where ``A`` is not diagonalizable (default 1000 and 1e-6 on the
        relative normal-equation residual, 1e-4 for float32); ``callback`` once per
        CG iteration (once in closed form).

    Returns
    -------
    RestoreResult
        ``params`` holds ``reg``, ``reg_rule`` (``given`` or ``GCV``), ``solver``
        and ``regularizer``.

    Notes
    -----
    ``L`` applies the ``2d + 1``-point stencil (:func:`laplacian_stencil`) with the
    operator's boundary rule (reflect for ``valid`` mode, where the unknown image has
    no outside), so its eigenvalues in the diagonalizing basis are
    ``−Σ_a 4 sin²(π k_a / P_a)`` (in 2-D ``−4 sin²(πk/P) − 4 sin²(πl/Q)``).
    GCV minimizes ``n ‖(I − H_ν) y‖² / (n − tr H_ν)²`` with ``H_ν`` the influence
    matrix ``A (AᵀA + νLᵀL)⁻¹ Aᵀ``.
    """
    return _solve(blurred, op, options, "tikhonov")


@register(
    "wiener",
    "Wiener filter, constant noise-to-signal ratio (--nsr, or from GCV and the estimated MSE)",
    options=("nsr", "noise_sigma", "iterations", "tol"),
    automatic=("nsr", "noise_sigma"),
    iterative=True,
    memory=CLOSED_FORM_OR_CG,
    roundtrip=2,
)
def wiener(blurred: np.ndarray, op: ConvOperator, options: RestoreOptions) -> RestoreResult:
    """The Wiener filter ``conj(H) / (|H|² + nsr)`` (``‖A x − y‖² + nsr ‖x‖²``).

    Parameters
    ----------
    blurred : ndarray
    op : ConvOperator or Convolution
        Any geometry, 1 to 3 spatial axes (arrays ``*spatial`` or ``*spatial × C``).
    options : RestoreOptions
        ``nsr``: the noise-to-signal power ratio (``None``: chosen from the data);
        ``noise_sigma``: the noise level for the rule of thumb used for kernel banks
        and strides (``None``: estimated); ``iterations``/``tol``/``callback`` as for
        :func:`tikhonov`.

    Notes
    -----
    The automatic ``nsr`` is the larger of two estimates of the best one: the
    minimizer of the filter's own GCV, ``n ‖(I − H_ν) y‖² / (n − tr H_ν)²`` with
    ``H_ν = A (AᵀA + ν)⁻¹ Aᵀ``, and the minimizer of the estimated ``E‖x̂ − x‖² =
    Σ (ν² |X|² + a σ²) / (a + ν)²`` (``a = |λ|²``, summed over coefficients grouped by
    ``a``; the image's power ``|X|²`` per group the smaller of the Tikhonov-GCV
    solution's and the data's less the noise's, over ``a``), with ``σ²`` the residual
    variance of the Tikhonov-GCV fit (Wahba). Measured on 96² crops (camera, coins,
    text, moon, brick; gaussian, motion and disk blurs; σ 0.001-0.03; the unknown
    boundary): GCV alone fell up to 1.65 dB short of the best of a sweep (too small at
    σ ≥ 0.01), the MSE rule alone up to 0.42 dB (too small at σ = 0.001); the larger
    of the two stayed within 0.2 dB on 12 of these cases (see docs/deblur.md).
    """
    return _solve(blurred, op, options, "wiener")


# -- driver ----------------------------------------------------------------------


def _solve(
    blurred: np.ndarray, op: ConvOperator, options: RestoreOptions, kind: str
) -> RestoreResult:
    y = check_data(blurred, op)
    given = options.reg if kind == "tikhonov" else options.nsr
    check("reg" if kind == "tikhonov" else "nsr", given)
    diagonal = diagonalize(op)
    params: dict[str, object] = {}
    notes: list[str] = []
    if diagonal is not None:
        rows = diagonal.transform_rows(y)
        spectrum = _spectrum(diagonal, rows)
        if given is None:
            weight, rule = _choose(spectrum, kind, _floor_variance(y, options, kind))
        else:
            weight, rule = float(given), "given"
        residual = _residual(spectrum, kind, weight, y)
        x = _filter(diagonal, rows, kind, weight)
        params["solver"] = f"closed form ({diagonal.kind.upper()})"
        iterations, converged = None, None
        if options.callback is not None:
            options.callback(1, x, residual)
    else:
        if given is not None:
            weight, rule = float(given), "given"
        else:
            weight, rule, why = _choose_for_operator(y, op, kind, options)
            if why:
                notes.append(why)
        x, residual, iterations, converged, solver, cg_notes = _cg(y, op, kind, weight, options)
        params["solver"] = solver
        notes.extend(cg_notes)
    name = "reg" if kind == "tikhonov" else "nsr"
    params = {name: float(weight), f"{name}_rule": rule, **params}
    if kind == "tikhonov":
        params["regularizer"] = f"laplacian ({_laplacian_boundary(op)})"
    return RestoreResult(
        image=x.astype(op.dtype, copy=False),
        method=kind,
        params=params,
        iterations=iterations,
        residual=residual,
        converged=converged,
        notes=notes,
    )


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


def _laplacian_boundary(op: ConvOperator) -> str:
    g = op.geometry
    if g.mode == "valid" and g.padding is None:
        return "reflect"
    return g.boundary


# -- closed form -------------------------------------------------------------------


def _filter(diagonal: Diagonal, rows: np.ndarray, kind: str, weight: float) -> np.ndarray:
    """``T⁻¹( conj(λ)/(|λ|² + ν|λ_L|²) · T y )`` from ``rows = transform_rows(y)`` (overwritten).

    The gain is computed block by block inside :meth:`Diagonal.filter_columns`, so
    the closed form costs little more than its transforms; where
    ``|λ|² + ν|λ_L|² = 0`` the gain is 0.
    """
    real = rows.real.dtype
    complex_ = np.iscomplexobj(diagonal.eigenvalues)
    eigenvalues = diagonal.eigenvalues.astype(rows.dtype if complex_ else real, copy=False)
    nu = real.type(weight)

    def gain(columns: slice) -> np.ndarray:
        index = diagonal.block(columns)
        lam = eigenvalues[index]
        if complex_:
            denominator = lam.real**2
            denominator += lam.imag**2
        else:
            denominator = lam * lam
        if kind == "tikhonov":
            laplacian = diagonal.laplacian_at(index, real)
            laplacian *= laplacian
            laplacian *= nu
            denominator += laplacian
        else:
            denominator += nu
        if denominator.min() <= 0:
            denominator[denominator <= 0] = np.inf
        # conj(λ) · (1/d) on real parts: numpy's complex-by-real division is far slower.
        np.reciprocal(denominator, out=denominator)
        if not complex_:
            denominator *= lam
            return denominator
        out = np.empty_like(lam)
        np.multiply(lam.real, denominator, out=out.real)
        np.multiply(lam.imag, denominator, out=out.imag)
        np.negative(out.imag, out=out.imag)
        return out

    diagonal.filter_columns(rows, gain)
    return diagonal.inverse_rows(rows)


def _residual(spectrum: _Spectrum, kind: str, weight: float, y: np.ndarray) -> float:
    """``‖A x − y‖ / ‖y‖`` of the closed form, from the spectrum (sampled above 2^15 entries).

    The residual keeps ``ν|λ_L|² / (|λ|² + ν|λ_L|²)`` of each data coefficient.
    """
    b = spectrum.b if kind == "tikhonov" else np.ones_like(spectrum.a)
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = weight * b / (spectrum.a + weight * b)
    kept[~np.isfinite(kept)] = 1.0
    flat = y.reshape(-1)
    norm2 = float(np.dot(flat, flat)) or 1.0
    return math.sqrt(float(np.sum(kept**2 * spectrum.energy)) / norm2)


# -- parameter choice ----------------------------------------------------------------


@dataclass
class _Spectrum:
    """Spectral entries of one problem (all of them, or a sample of a large spectrum).

    Per entry: ``a = |λ|²``, ``b = |λ_L|²`` (the Laplacian), the data energy and the
    number of coefficients it stands for (conjugate pairs, channels, sampling).
    """

    a: np.ndarray
    b: np.ndarray
    energy: np.ndarray
    count: np.ndarray


def _spectrum(diagonal: Diagonal, half: np.ndarray) -> _Spectrum:
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
    return _Spectrum(*(np.concatenate(c) for c in columns))


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


def _floor_variance(y: np.ndarray, options: RestoreOptions, kind: str) -> float:
    """Wiener's: the noise model's variance where a JPEG or 8-bit floor dominates the
    data's noise (:func:`deconv_cli.noise_model.floor_noise`), else 0."""
    if kind != "wiener":
        return 0.0
    from deconv_cli.noise_model import floor_noise

    floor = floor_noise(y, jpeg_tables=options.jpeg_tables)
    return 0.0 if floor is None else floor.sigma**2


def _choose(spectrum: _Spectrum, kind: str, floor: float = 0.0) -> tuple[float, str]:
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


def _choose_for_operator(
    y: np.ndarray, op: ConvOperator, kind: str, options: RestoreOptions
) -> tuple[float, str, str | None]:
    """``ν`` for a non-diagonalizable operator, from the tapered data on a periodic grid
    (``options.noise_sigma``: the noise level for the fallback of kernel banks and
    strides)."""
    if not one_kernel(op) or any(s != 1 for s in convolution_of(op).stride):
        return _fallback(y, op, kind, options.noise_sigma)
    spectrum, taper_energy = _tapered_spectrum(y, op)
    weight, rule = _choose(spectrum, kind, _floor_variance(y, options, kind) * taper_energy)
    return weight, f"{rule} on the tapered data, periodic model", None


def _tapered_spectrum(y: np.ndarray, op: ConvOperator) -> _Spectrum:
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
    return _spectrum(diagonal, diagonal.transform_rows(data)), float(np.mean(taper**2))


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


# -- conjugate gradients ----------------------------------------------------------------


def _laplacian_operator(op: ConvOperator):
    """``v ↦ LᵀL v`` on arrays of ``op``'s input layout: the stencil on every channel
    with the boundary of :func:`_laplacian_boundary`."""
    core = convolution_of(op)
    channels = core.input_shape[-1]
    stencil = laplacian_stencil(core.ndim)
    laplacian = Convolution(
        np.broadcast_to(stencil, (channels, 1) + stencil.shape),
        core.input_shape,
        Geometry(mode="same", boundary=_laplacian_boundary(op)),
        groups=channels,
        dtype=op.dtype,
    )

    def normal(v: np.ndarray) -> np.ndarray:
        lv = laplacian.forward(v.reshape(core.input_shape))
        return laplacian.adjoint(lv).reshape(v.shape)

    return normal


def _preconditioner(op: ConvOperator, kind: str, weight: float):
    """``r ↦ C⁻¹ diag(1/(S + ν|λ_L|² + c)) C r`` with ``C`` the DCT-II, or ``None``.

    ``S`` approximates the symbol of ``AᵀA`` in the DCT basis: ``|λ|²`` of the
    reflect-boundary stand-in for a symmetric kernel; for another kernel under a
    reflect boundary, ``|K(ω)|²`` averaged over the flips ``ω_a → −ω_a`` of every
    axis but the last (the DCT cannot tell them apart; the real FFT's last axis holds
    one of each pair). Elsewhere (a non-symmetric kernel with another
    boundary or ``--boundary unknown``, banks, strides) plain CG from zero did
    better in our measurements: a periodic stand-in's boundary mismatch sends
    preconditioned iterates far off before they converge.
    """
    import scipy.fft

    g = op.geometry
    core = convolution_of(op)
    if not one_kernel(op) or any(s != 1 for s in core.stride):
        return None
    kernel = op.effective[0, 0]
    shape = core.input_shape[:-1]
    if is_symmetric_kernel(kernel):
        stand_in = approximate(op, dtype=np.float64)
        power = stand_in.eigenvalues.astype(np.float64) ** 2
    elif g.boundary == "reflect" and g.padding is None and g.mode != "valid":
        if any(k > 2 * n for k, n in zip(kernel.shape, shape, strict=True)):
            return None
        power = np.abs(scipy.fft.rfftn(kernel, s=tuple(2 * n for n in shape))) ** 2
        for axis, n in enumerate(shape[:-1]):
            power = 0.5 * (
                np.take(power, np.arange(n), axis=axis)
                + np.take(power, (-np.arange(n)) % (2 * n), axis=axis)
            )
        power = np.ascontiguousarray(power[..., : shape[-1]])
    else:
        return None
    basis = Diagonal("dct", shape, power, np.ones((1,) * len(shape)), 1.0)
    reg = 1.0 if kind == "wiener" else basis.laplacian() ** 2
    # The damping keeps the stand-in's mismatch from being amplified.
    inverse_filter = 1.0 / (power + weight * reg + PRECONDITIONER_DAMPING * power.max())

    def precondition(r: np.ndarray) -> np.ndarray:
        return basis.apply(r, inverse_filter)

    return precondition


def _cg(y: np.ndarray, op: ConvOperator, kind: str, weight: float, options: RestoreOptions):
    """CG from ``x₀ = 0`` on ``(AᵀA + ν LᵀL) x = Aᵀy``, DCT-preconditioned where that helps."""
    check("iterations", options.iterations)
    check("tol", options.tol)
    iterations = DEFAULT_ITERATIONS if options.iterations is None else int(options.iterations)
    tol = DEFAULT_TOL[op.dtype] if options.tol is None else float(options.tol)
    laplacian = _laplacian_operator(op) if kind == "tikhonov" else None

    def normal(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        av = op.forward(v)
        out = op.adjoint(av)
        if laplacian is None:
            out += weight * v
        else:
            out += weight * laplacian(v)
        return av, out

    precondition = _preconditioner(op, kind, weight)
    solver = "CG" if precondition is None else "CG (DCT-preconditioned)"

    rhs = op.adjoint(y)
    rhs_norm = _norm(rhs) or 1.0
    y_norm = _norm(y) or 1.0
    x = np.zeros(op.input_shape, dtype=op.dtype)
    r = rhs.copy()
    data_r = y.copy()
    z = r.copy() if precondition is None else precondition(r)
    p = z.astype(op.dtype, copy=True)
    rz = _dot(r, z)
    k = 0
    converged = tol > 0 and _norm(r) / rhs_norm <= tol
    while not converged and k < iterations:
        k += 1
        ap, np_ = normal(p)
        curvature = _dot(p, np_)
        if curvature <= 0:
            break
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * np_
        data_r -= alpha * ap
        relative = _norm(r) / rhs_norm
        if options.callback is not None:
            options.callback(k, x, _norm(data_r) / y_norm)
        if tol > 0 and relative <= tol:
            converged = True
            break
        z = r if precondition is None else precondition(r)
        rz_new = _dot(r, z)
        if rz_new == 0:  # the residual vanished: solved exactly
            break
        p *= rz_new / rz
        p += z
        rz = rz_new
    notes = []
    if tol > 0 and not converged:
        notes.append(
            f"CG stopped at the iteration cap ({iterations}) with normal-equation residual "
            f"{_norm(r) / rhs_norm:.2e} > tol {tol:g}; raise --iterations or --tol"
        )
    residual = _norm(op.forward(x) - y) / y_norm
    return x, residual, k, (converged if tol > 0 else None), solver, notes


def _norm(a: np.ndarray) -> float:
    flat = a.reshape(-1)
    return math.sqrt(float(np.dot(flat, flat)))


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)))
