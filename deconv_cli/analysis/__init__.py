"""Is a convolution operator invertible, how well, and what will noise do to its inverse?

:func:`analyze` describes the operator ``A`` of a kernel, a geometry and an image
shape: its dimensions, rank and null space, extreme singular values, condition
number, the predicted error of its exact inverse on noisy data, and a verdict in
words. "Invertible" means what docs/conventions.md says: the nullity is 0, where a singular
value counts as zero when ``σ <= max(m, n) · eps · σ_max`` (numpy's ``matrix_rank``
rule).

The operator has 2 or 3 spatial axes (an image or a volume); every
path below holds on both. How the singular values are obtained, in this order (the
first that applies; :mod:`.exact`, then :mod:`.estimates`):

1. **FFT, per-frequency SVD** (``--boundary wrap``, an output grid equal to the input
   grid before the stride, the stride dividing the image; or any layer that reads no
   padding, e.g. ``valid`` mode with a kernel no larger than the stride, which equals
   its wrap version): ``A`` is block circulant, so its singular values are those of
   the ``C_out × C_in`` matrices of kernel Fourier coefficients, one matrix per
   frequency (Sedghi, Gupta & Long, "The singular values of convolutional layers",
   ICLR 2019). A stride ``s`` is handled by the polyphase decomposition: a stride-``s``
   layer is a stride-1 layer with ``s^d·C_in`` input channels on the ``(H/s) × (W/s)``
   (``× (Z/s)``) grid. A single kernel is the ``1 × 1`` case: ``|transfer function|``
   at every frequency.
2. **DCT** (``--boundary reflect``, a kernel with odd sides symmetric about each
   axis, ``same``, stride 1): ``A = Cᵀ diag(λ) C``, singular values ``|λ|``
   (:func:`deconv_cli.spectral.diagonalize`).
3. **Dense SVD** of the matrix built column by column, for small operators (at most
   :data:`DENSE_LIMIT` unknowns per channel, or in all for a kernel bank); for a
   separable (rank-one) kernel in any geometry, exactly the Kronecker product of the
   1-D operators' SVDs (one per axis), for sides up to :data:`KRONECKER_LIMIT`.
4. **Iterative estimates** otherwise: ``σ_max`` by ARPACK (``svds``) to a relative
   tolerance :data:`SVDS_TOL`; ``σ_min`` bounded from above by the best Rayleigh
   quotient ``‖A v‖ / ‖v‖`` after :data:`LOBPCG_ITERATIONS` LOBPCG iterations on
   ``AᵀA`` (``AAᵀ`` for wide operators), so the condition number is a lower bound
   (the bound can be loose by orders of magnitude where the weakest singular vectors
   sit at the boundary); the rank from theory where it is known (``full`` mode with
   zero boundary is injective, ``valid`` mode is onto), else "not proven".

The verdict and its reasons are assembled in :mod:`.verdict`. The predicted error
of the exact inverse (the pseudo-inverse where ``A`` has a null
space) for white noise of standard deviation ``σ`` in the data is
``RMSE = σ · sqrt(Σ 1/σ_i² / n)`` over the nonzero singular values, the expected
root-mean-square of ``A⁺ e`` over the ``n`` unknowns: exact in cases 1–3.
"""

from __future__ import annotations

import math

import numpy as np

from deconv_cli.analysis.estimates import (
    LOBPCG_ITERATIONS,
    SVDS_TOL,
    sigma_max,
    sigma_min_bound,
)
from deconv_cli.analysis.exact import (
    Spectrum,
    channel_block,
    channels,
    dense_matrix,
    exact_form,
    exact_spectrum,
    frequency_name,
    single_kernel,
    strides,
)
from deconv_cli.analysis.verdict import (
    ILL_CONDITIONED_RMSE,
    VERDICTS,
    Analysis,
    assemble,
    jsonable,
    structural_reasons,
    zeros_reason,
)
from deconv_cli.errors import DeconvError, mention
from deconv_cli.operators import ConvOperator

__all__ = [
    "DEFAULT_BITS",
    "DENSE_LIMIT",
    "ILL_CONDITIONED_RMSE",
    "KRONECKER_LIMIT",
    "LOBPCG_ITERATIONS",
    "SVDS_TOL",
    "VERDICTS",
    "Analysis",
    "analyze",
    "dense_matrix",
    "jsonable",
    "noise_level",
    "null_space",
    "single_kernel",
]

DEFAULT_BITS = 8
"""The noise assumed when none is given: rounding to 8 bits, the least error of any
image stored as an 8-bit file."""

DENSE_LIMIT = 2048
"""Most unknowns (per channel; in all for a kernel bank) for a dense SVD."""

KRONECKER_LIMIT = 2048
"""Longest side for the exact SVD of a separable kernel as 1-D dense SVDs."""

_EPS = np.finfo(np.float64).eps
_NAMED_FREQUENCIES = 3


def noise_level(noise_sigma: float | None = None, bits: int | None = None) -> tuple[float, str]:
    """``(σ, description)`` of the noise to assume: given, from ``bits``, or 8-bit rounding."""
    from deconv_cli.spectral import quantization_sigma

    if noise_sigma is not None and bits is not None:
        raise DeconvError(
            f"give a noise level ({mention('noise_sigma')}) or a bit depth ({mention('bits')}), "
            "not both"
        )
    if noise_sigma is not None:
        sigma = float(noise_sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise DeconvError(
                f"`{noise_sigma}` must be a finite number >= 0", parameter="noise_sigma"
            )
        return sigma, "given"
    if bits is not None:
        if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= 32:
            raise DeconvError(f"`{bits}` must be a whole number from 1 to 32", parameter="bits")
        return quantization_sigma(int(bits)), f"{int(bits)}-bit quantization"
    return quantization_sigma(DEFAULT_BITS), f"{DEFAULT_BITS}-bit quantization (default)"


def analyze(
    op: ConvOperator,
    *,
    noise_sigma: float | None = None,
    bits: int | None = None,
    noise_source: str | None = None,
    dense_limit: int = DENSE_LIMIT,
    kronecker_limit: int = KRONECKER_LIMIT,
    iterations: int = LOBPCG_ITERATIONS,
    seed: int = 0,
) -> Analysis:
    """Rank, null space, singular values, condition and a verdict for ``op``.

    Parameters
    ----------
    op : ConvOperator
    noise_sigma : float, optional
        Standard deviation of white noise in the data, on the [0, 1] scale.
    bits : int, optional
        Or: the data is rounded to ``bits``-bit integers (``σ = q/√12``). Without
        either, 8-bit rounding (:data:`DEFAULT_BITS`) is assumed.
    noise_source : str, optional
        Overrides the description of the noise in the report.
    dense_limit, kronecker_limit : int
        Size limits of the dense paths (see the module docstring).
    iterations : int
        LOBPCG iterations for the ``σ_min`` bound of large operators.
    seed : int
        Seed of the random start vectors of the iterative estimates.

    Returns
    -------
    Analysis
    """
    sigma_noise, source = noise_level(noise_sigma, bits)
    source = noise_source or source
    op = exact_form(op)
    m, n = op.shape
    rtol = max(m, n) * _EPS
    spectrum = exact_spectrum(op, dense_limit, kronecker_limit)
    if spectrum is not None:
        return _from_spectrum(op, spectrum, rtol, sigma_noise, source)
    return _from_estimates(op, rtol, sigma_noise, source, iterations, seed)


def null_space(
    op: ConvOperator, *, dense_limit: int = DENSE_LIMIT, kronecker_limit: int = KRONECKER_LIMIT
) -> tuple[int, bool, str]:
    """The dimension of ``op``'s null space, whether it is exact, and why.

    :func:`analyze`'s exact paths (FFT, DCT, Kronecker, dense SVD) and its theorems
    (``full`` mode with zero boundary is injective, ``valid`` mode is onto), without
    the iterative estimates: cheap enough to run before every exact inverse.

    Returns
    -------
    nullity : int
    exact : bool
        ``False`` when ``nullity`` is only a lower bound (``n - m``), or 0 unproven.
    reason : str
        One sentence: which frequencies vanish, which dimensions or channels force
        the null space, or which theorem applies.
    """
    op = exact_form(op)
    m, n = op.shape
    rtol = max(m, n) * _EPS
    spectrum = exact_spectrum(op, dense_limit, kronecker_limit)
    if spectrum is not None:
        rank, _, smax = _rank(spectrum, rtol)
        if rank == n:
            smin = float(spectrum.values.min())
            return (
                0,
                True,
                (
                    f"{spectrum.method}: σ_min/σ_max = {smin / smax:.2e} "
                    f"(condition number {smax / smin:.3g})"
                ),
            )
        _name_zero_frequencies(spectrum, rtol * smax)
        zeros = zeros_reason(op, spectrum, n - rank)
        reasons = structural_reasons(op) + ([zeros] if zeros else [])
        return n - rank, True, "; ".join(reasons) or f"{spectrum.method}: σ <= {rtol:.1e}·σ_max"
    g = op.geometry
    simple = single_kernel(op) and set(strides(op)) == {1} and g.padding is None
    if simple and g.mode == "full" and g.boundary == "constant":
        return 0, True, FULL_THEOREM
    if simple and g.mode == "valid":
        return n - m, True, VALID_THEOREM
    if m < n:
        return n - m, False, "at least n - m: " + "; ".join(structural_reasons(op))
    return (
        0,
        False,
        (
            f"not determined: too large for an exact SVD (more than {dense_limit} unknowns) "
            "and not diagonalizable; no dimension forces a null space"
        ),
    )


FULL_THEOREM = "theory: full mode with zero boundary and a non-zero kernel is injective"
VALID_THEOREM = (
    "theory: valid mode is onto (its adjoint, a full convolution, is injective), so the "
    "nullity is n - m"
)


def _from_spectrum(
    op: ConvOperator, spectrum: Spectrum, rtol: float, sigma_noise: float, source: str
) -> Analysis:
    m, n = op.shape
    values, weights = spectrum.values, spectrum.weights
    rank, nonzero, smax = _rank(spectrum, rtol)
    nullity = n - rank
    smin = float(values[nonzero].min()) if nonzero.any() else None
    inverse_sum = float(np.sum(weights[nonzero] / values[nonzero] ** 2))
    amplification = math.sqrt(inverse_sum / n) if nonzero.any() else None
    _name_zero_frequencies(spectrum, rtol * smax)
    result = assemble(
        op,
        rank=rank,
        nullity=nullity,
        smax=smax,
        smin=smin,
        rtol=rtol,
        method=spectrum.method,
        rank_method=spectrum.method,
        exact={"rank": True, "sigma_max": True, "sigma_min": True, "predicted_rmse": True},
        sigma_noise=sigma_noise,
        source=source,
        amplification=amplification,
        zero_reason=zeros_reason(op, spectrum, nullity),
    )
    result.singular_values = values
    result.weights = weights
    result.frequency_zeros = spectrum.frequencies
    return result


def _rank(spectrum: Spectrum, rtol: float) -> tuple[int, np.ndarray, float]:
    """The rank (the weights of the σ > rtol·σ_max), those σ's mask, and ``σ_max``."""
    values, weights = spectrum.values, spectrum.weights
    smax = float(values.max()) if values.size else 0.0
    nonzero = values > rtol * smax if smax > 0 else np.zeros(values.shape, bool)
    return int(round(float(weights[nonzero].sum()))), nonzero, smax


def _name_zero_frequencies(spectrum: Spectrum, cutoff: float) -> None:
    """Fill ``spectrum.frequencies`` with a few frequencies where the spectrum vanishes."""
    if spectrum.grid is not None:
        values, last_weights, grid, unit = spectrum.grid
        vanishing = (values <= cutoff).any(axis=-1)
        counts = np.broadcast_to(last_weights, vanishing.shape)
        spectrum.zero_count = int(round(float(counts[vanishing].sum())))
        for index in np.argwhere(vanishing)[:_NAMED_FREQUENCIES]:
            spectrum.frequencies.append(frequency_name(tuple(index), grid, unit))
    elif spectrum.dct is not None:
        magnitude, diagonal = spectrum.dct
        vanishing = magnitude <= cutoff
        spectrum.zero_count = int(np.count_nonzero(vanishing))
        for index in np.argwhere(vanishing)[:_NAMED_FREQUENCIES]:
            spectrum.frequencies.append(diagonal.frequency(tuple(int(i) for i in index)))


def _from_estimates(
    op: ConvOperator, rtol: float, sigma_noise: float, source: str, iterations: int, seed: int
) -> Analysis:
    """``σ_max`` by ARPACK, an upper bound on ``σ_min`` by LOBPCG, the rank by theory."""
    from deconv_cli.spectral import inverse_amplification

    m, n = op.shape
    block = channel_block(op) if channels(op) > 1 else op
    smax = sigma_max(block, seed)
    bound = sigma_min_bound(block, iterations, seed)
    g = op.geometry
    simple = single_kernel(op) and set(strides(op)) == {1} and g.padding is None
    extra: list[str] = []
    # The bound is on σ_min (tall A) or on the m-th singular value (wide A): at or below
    # the tolerance, a vector A (or Aᵀ) nearly annihilates proves a numerical null space.
    numerically_singular = bound <= rtol * smax
    full_theorem = simple and g.mode == "full" and g.boundary == "constant"
    if m < n:
        nullity = n - m + (1 if numerically_singular else 0)
        rank_exact = simple and g.mode == "valid" and not numerically_singular
        if rank_exact:
            rank_method = VALID_THEOREM
        else:
            rank_method = "theory: at least n - m (fewer equations than unknowns)"
        if numerically_singular:
            rank_method += (
                f"; plus a vector with ‖Aᵀ v‖ <= {rtol:.2g}·σ_max‖v‖ was found, so at "
                "least n - m + 1"
            )
    elif numerically_singular:
        nullity, rank_exact = 1, False
        rank_method = (
            f"estimate: a vector with ‖A v‖ <= {rtol:.2g}·σ_max‖v‖ was found, so the "
            "nullity is at least 1"
        )
        if full_theorem:
            extra.append(
                "full mode with zero boundary is injective in exact arithmetic, but not "
                "numerically: its smallest singular value is below the rank tolerance"
            )
    elif full_theorem:
        nullity, rank_exact = 0, True
        rank_method = FULL_THEOREM
    else:
        nullity, rank_exact = 0, False
        rank_method = "estimate: no vanishing singular value found (injectivity not proven)"
        extra.append(
            f"injectivity is not proven for a {n}-unknown operator of this geometry: "
            f"no vector with ‖A v‖ <= {rtol:.2g}·σ_max‖v‖ was found"
        )
    amplification = inverse_amplification(op) if simple else None
    if amplification is not None and nullity == 0:
        extra.append(
            "the predicted RMSE is that of the same kernel with a wrap/reflect boundary "
            "(an estimate: the boundary changes few singular values)"
        )
    if nullity > 0:
        amplification = None
    sigma_min = bound if bound > rtol * smax else None
    method = (
        f"estimate: σ_max by ARPACK svds (tol {SVDS_TOL:g}); σ_min <= the best Rayleigh "
        f"quotient after {iterations} LOBPCG iterations on "
        f"{'AᵀA' if m >= n else 'AAᵀ'} (an upper bound)"
    )
    result = assemble(
        op,
        rank=n - nullity,
        nullity=nullity,
        smax=smax,
        smin=sigma_min,
        rtol=rtol,
        method=method,
        rank_method=rank_method,
        exact={
            "rank": rank_exact,
            "sigma_max": False,
            "sigma_min": False,
            "predicted_rmse": False,
        },
        sigma_noise=sigma_noise,
        source=source,
        amplification=amplification if amplification is not None else None,
        extra=extra,
        worst_case=True,
    )
    return result
