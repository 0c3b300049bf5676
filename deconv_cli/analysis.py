"""Is a convolution operator invertible, how well, and what will noise do to its inverse?

:func:`analyze` describes the operator ``A`` of a kernel, a geometry and an image
shape: its dimensions, rank and null space, extreme singular values, condition
number, the predicted error of its exact inverse on noisy data, and a verdict in
words. "Invertible" means what docs/conventions.md says: the nullity is 0, where a singular
value counts as zero when ``σ <= max(m, n) · eps · σ_max`` (numpy's ``matrix_rank``
rule).

How the singular values are obtained, in this order (the first that applies):

1. **FFT, per-frequency SVD** (``--boundary wrap``, an output grid equal to the input
   grid before the stride, the stride dividing the image; or any layer that reads no
   padding, e.g. ``valid`` mode with a kernel no larger than the stride, which equals
   its wrap version): ``A`` is block circulant, so its singular values are those of
   the ``C_out × C_in`` matrices of kernel Fourier coefficients, one matrix per
   frequency (Sedghi, Gupta & Long, "The singular values of convolutional layers",
   ICLR 2019). A stride ``s`` is handled
   by the polyphase decomposition: a stride-``s`` layer is a stride-1 layer with
   ``s²·C_in`` input channels on the ``(H/s) × (W/s)`` grid. A single kernel is the
   ``1 × 1`` case: ``|transfer function|`` at every frequency.
2. **DCT** (``--boundary reflect``, a symmetric kernel with odd sides, ``same``,
   stride 1): ``A = Cᵀ diag(λ) C``, singular values ``|λ|``
   (:func:`deconv_cli.spectral.diagonalize`).
3. **Dense SVD** of the matrix built column by column, for small operators (at most
   :data:`DENSE_LIMIT` unknowns per channel, or in all for a kernel bank); for a
   separable (rank-one) kernel in any geometry, exactly the Kronecker product of two
   1-D operators' SVDs, for sides up to :data:`KRONECKER_LIMIT`.
4. **Iterative estimates** otherwise: ``σ_max`` by ARPACK (``svds``) to a relative
   tolerance :data:`SVDS_TOL`; ``σ_min`` bounded from above by the best Rayleigh
   quotient ``‖A v‖ / ‖v‖`` after :data:`LOBPCG_ITERATIONS` LOBPCG iterations on
   ``AᵀA`` (``AAᵀ`` for wide operators), so the condition number is a lower bound
   (the bound can be loose by orders of magnitude where the weakest singular vectors
   sit at the boundary); the rank from theory where it is known (``full`` mode with
   zero boundary is injective, ``valid`` mode is onto), else "not proven".

The predicted error of the exact inverse (the pseudo-inverse where ``A`` has a null
space) for white noise of standard deviation ``σ`` in the data is
``RMSE = σ · sqrt(Σ 1/σ_i² / n)`` over the nonzero singular values, the expected
root-mean-square of ``A⁺ e`` over the ``n`` unknowns: exact in cases 1–3.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.operators import ConvOperator, Geometry, separable_factors

ILL_CONDITIONED_RMSE = 0.01
"""An invertible operator is *ill-conditioned* when the predicted RMSE of its exact
inverse exceeds this: 1% of the [0, 1] range (PSNR 40 dB)."""

DEFAULT_BITS = 8
"""The noise assumed when none is given: rounding to 8 bits, the least error of any
image stored as an 8-bit file."""

DENSE_LIMIT = 2048
"""Most unknowns (per channel; in all for a kernel bank) for a dense SVD."""

KRONECKER_LIMIT = 2048
"""Longest side for the exact SVD of a separable kernel as two 1-D dense SVDs."""

SVDS_TOL = 1e-6
"""Relative tolerance of the ARPACK estimate of ``σ_max`` for large operators."""

LOBPCG_ITERATIONS = 40
"""LOBPCG iterations bounding ``σ_min`` from above for large operators."""

VERDICTS = ("invertible", "invertible but ill-conditioned", "not invertible")

_EPS = np.finfo(np.float64).eps
_CHUNK_ELEMENTS = 1 << 22  # complex entries of per-frequency matrices held at once
_NAMED_FREQUENCIES = 3
_WEAKEST_STARTS = 4  # LOBPCG start vectors from the stand-in's weakest frequencies


@dataclass
class Analysis:
    """What :func:`analyze` found about an operator ``A`` (``m`` equations, ``n`` unknowns).

    Attributes
    ----------
    input_shape, output_shape : tuple of int
        Shapes of the image ``x`` and of the data ``y = A x``.
    unknowns, equations : int
        ``n`` and ``m``.
    rank, nullity : int
        ``rank + nullity == n``; with ``exact["rank"]`` false the nullity is a lower
        bound (or, when 0, not proven).
    sigma_max, sigma_min : float or None
        The largest and the smallest *nonzero* singular value.
    condition_number : float or None
        ``sigma_max / sigma_min``.
    rank_tolerance : float
        Relative: ``σ <= rank_tolerance · σ_max`` counts as zero (``max(m, n)·eps``).
    invertible : bool
        ``nullity == 0``.
    verdict : str
        One of :data:`VERDICTS`.
    reasons : list of str
        Sentences explaining the verdict.
    method : str
        How the singular values were obtained (``exact: ...`` or ``estimate: ...``).
    exact : dict
        ``{"rank", "sigma_max", "sigma_min", "predicted_rmse"}``: which numbers are exact.
    noise_sigma : float
        Standard deviation of the white noise the prediction assumes.
    noise_source : str
        Where it comes from (``8-bit quantization (default)``, ``given``).
    predicted_rmse : float or None
        Expected RMSE of ``A⁺ e`` for that noise (None where unknown).
    amplification : float or None
        ``predicted_rmse / noise_sigma``.
    singular_values, weights : ndarray or None
        The computed singular values and how many times each occurs (channels,
        conjugate frequencies); None for iterative estimates.
    """

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    unknowns: int
    equations: int
    rank: int
    nullity: int
    sigma_max: float
    sigma_min: float | None
    condition_number: float | None
    rank_tolerance: float
    invertible: bool
    verdict: str
    reasons: list[str]
    method: str
    exact: dict[str, bool]
    noise_sigma: float
    noise_source: str
    predicted_rmse: float | None
    amplification: float | None
    threshold: float = ILL_CONDITIONED_RMSE
    rank_method: str = ""
    singular_values: np.ndarray | None = field(default=None, repr=False)
    weights: np.ndarray | None = field(default=None, repr=False)
    frequency_zeros: list[str] = field(default_factory=list, repr=False)

    def sorted_singular_values(self) -> np.ndarray | None:
        """All computed singular values, each repeated by its weight, largest first."""
        if self.singular_values is None:
            return None
        counts = np.rint(self.weights).astype(np.int64)
        return np.sort(np.repeat(self.singular_values, counts))[::-1]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers as the strings ``"inf"``/``"nan"``)."""
        keys = (
            "input_shape",
            "output_shape",
            "unknowns",
            "equations",
            "rank",
            "nullity",
            "sigma_max",
            "sigma_min",
            "condition_number",
            "rank_tolerance",
            "invertible",
            "verdict",
            "reasons",
            "method",
            "rank_method",
            "exact",
            "noise_sigma",
            "noise_source",
            "predicted_rmse",
            "amplification",
            "threshold",
        )
        return {key: jsonable(getattr(self, key)) for key in keys}


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as strings."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass
class _Spectrum:
    """Singular values of ``A`` (``values`` with ``weights``), and how they were found."""

    values: np.ndarray
    weights: np.ndarray
    method: str
    frequencies: list[str] = field(default_factory=list)  # where the spectrum vanishes
    zero_kind: str = ""  # "transfer function" / "per-frequency matrix" / "DCT eigenvalue"
    zero_count: int = 0  # frequencies (of all) with a vanishing value
    frequency_count: int = 0
    grid: tuple | None = None  # FFT: (values per frequency, column weights, H', W', unit)
    dct: tuple | None = None  # DCT: (|eigenvalues|, Diagonal)


# -- public ----------------------------------------------------------------------------


def noise_level(noise_sigma: float | None = None, bits: int | None = None) -> tuple[float, str]:
    """``(σ, description)`` of the noise to assume: given, from ``bits``, or 8-bit rounding."""
    from deconv_cli.spectral import quantization_sigma

    if noise_sigma is not None and bits is not None:
        raise DeconvError("give a noise level (--noise-sigma) or a bit depth (--bits), not both")
    if noise_sigma is not None:
        sigma = float(noise_sigma)
        if not math.isfinite(sigma) or sigma < 0:
            raise DeconvError(f"--noise-sigma: `{noise_sigma}` must be a finite number >= 0")
        return sigma, "given"
    if bits is not None:
        if isinstance(bits, bool) or int(bits) != bits or not 1 <= int(bits) <= 32:
            raise DeconvError(f"--bits: `{bits}` must be a whole number from 1 to 32")
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
    op = _exact_form(op)
    m, n = op.shape
    rtol = max(m, n) * _EPS
    spectrum = _exact_spectrum(op, dense_limit, kronecker_limit)
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
    op = _exact_form(op)
    m, n = op.shape
    rtol = max(m, n) * _EPS
    spectrum = _exact_spectrum(op, dense_limit, kronecker_limit)
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
        zeros = _zero_reason(op, spectrum, n - rank)
        reasons = _structural_reasons(op) + ([zeros] if zeros else [])
        return n - rank, True, "; ".join(reasons) or f"{spectrum.method}: σ <= {rtol:.1e}·σ_max"
    g = op.geometry
    simple = single_kernel(op) and g.stride == (1, 1) and g.padding is None
    if simple and g.mode == "full" and g.boundary == "constant":
        return 0, True, FULL_THEOREM
    if simple and g.mode == "valid":
        return n - m, True, VALID_THEOREM
    if m < n:
        return n - m, False, "at least n - m: " + "; ".join(_structural_reasons(op))
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


# -- exact paths -----------------------------------------------------------------------


def _exact_form(op: ConvOperator) -> ConvOperator:
    """``op`` in float64 with an ungrouped bank: the paths below read a bank's
    ``(C_out, C_in)`` pairs, so a grouped bank becomes its block-diagonal one, zero
    between groups (output block ``j`` reads input block ``j`` only)."""
    if op.dtype == np.float64 and op.groups == 1:
        return op
    kernel = op.kernel
    if op.groups > 1:
        co, cig = kernel.shape[:2]
        cog = co // op.groups
        kernel = np.zeros((co, cig * op.groups) + kernel.shape[2:])
        for j in range(op.groups):
            kernel[j * cog : (j + 1) * cog, j * cig : (j + 1) * cig] = op.kernel[
                j * cog : (j + 1) * cog
            ]
    return ConvOperator(kernel, op.input_shape, op.geometry)


def single_kernel(op: ConvOperator) -> bool:
    """One 2-D kernel applied to every channel (a 1×1 bank counts)."""
    return op.effective.shape[:2] == (1, 1)


def _channels(op: ConvOperator) -> int:
    """Channels sharing one kernel (the operator is block diagonal over them)."""
    if not single_kernel(op):
        return 1
    return op.input_shape[2] if len(op.input_shape) == 3 else 1


def _wrap_spectrum(op: ConvOperator) -> _Spectrum | None:
    """Per-frequency SVDs of the block-circulant operator, with strides by polyphase."""
    g = op.geometry
    h, w = op.input_shape[:2]
    sh, sw = g.stride
    if h % sh or w % sw:
        return None
    circulant = g.boundary == "wrap" and op.stride1_shape == (h, w)
    inside = _reads_no_padding(op)
    if not (circulant or inside):
        return None
    eff = op.effective
    co, ci, kh, kw = eff.shape
    (bh, _), (bw, _) = op.pads
    hr, wr = h // sh, w // sw
    # Tap a sits at row r_a = (bh - a) mod H of the circulant's first column; on the
    # stride grid it feeds phase u_a = -r_a mod sh at reduced row (r_a + u_a) / sh.
    ty = _phase_transform(bh, kh, h, sh, np.arange(hr), hr)  # (hr, sh, kh)
    tx = _phase_transform(bw, kw, w, sw, np.arange(wr // 2 + 1), wr)  # (wx, sw, kw)
    wx = tx.shape[0]
    first = np.einsum("ocab,xvb->xvoca", eff, tx).reshape(-1, kh)  # (wx·sw·co·ci, kh)
    columns = ci * sh * sw
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, wx * co * columns))
    values = []
    for start in range(0, hr, rows_per_chunk):
        block = ty[start : start + rows_per_chunk]
        ny = block.shape[0]
        m_f = block.reshape(ny * sh, kh) @ first.T
        m_f = m_f.reshape(ny, sh, wx, sw, co, ci).transpose(0, 2, 4, 5, 1, 3)
        m_f = m_f.reshape(ny * wx, co, columns)
        if co == 1 or columns == 1:
            values.append(np.sqrt(np.sum(np.abs(m_f) ** 2, axis=(1, 2)))[:, None])
        else:
            if co < columns:  # LAPACK is much faster on tall matrices than on wide ones
                m_f = m_f.transpose(0, 2, 1)
            values.append(np.linalg.svd(m_f, compute_uv=False))
    values = np.concatenate(values).reshape(hr, wx, -1)
    freq_weights = np.full(wx, 2.0)
    freq_weights[0] = 1.0
    if wr % 2 == 0:
        freq_weights[-1] = 1.0
    weights = np.broadcast_to(freq_weights[None, :, None], values.shape) * _channels(op)

    single = co == 1 and columns == 1
    if single:
        method = "exact: FFT (|transfer function| at each frequency; wrap makes A circulant)"
    else:
        method = (
            f"exact: FFT per-frequency SVD of the {co}×{columns} matrices "
            "(Sedghi, Gupta & Long, ICLR 2019)"
        )
        if sh * sw > 1:
            method += (
                f"; stride {_pair(g.stride)} by polyphase: a stride-1 layer with "
                f"{sh * sw}×{ci} input channels on the {hr}x{wr} grid"
            )
    if not circulant:
        method += "; the layer reads no padding, so it equals its wrap-boundary version"
    spectrum = _Spectrum(values.ravel(), np.ascontiguousarray(weights).ravel(), method)
    spectrum.zero_kind = "transfer function" if single else "per-frequency matrix"
    spectrum.frequency_count = hr * wr
    unit = "cycles/pixel" if sh * sw == 1 else "cycles/sample of the output grid"
    spectrum.grid = (values, freq_weights, hr, wr, unit)
    return spectrum


def _reads_no_padding(op: ConvOperator) -> bool:
    """Whether every output reads only image samples and there are ``H/s`` of them per axis.

    Then no boundary rule is ever used and ``A`` equals the strided circulant operator
    with the same offsets (e.g. ``valid`` mode with the kernel no larger than the
    stride: patch-wise layers such as the Haar bank).
    """
    sh, sw = op.geometry.stride
    h, w = op.input_shape[:2]
    if op.output_shape[:2] != (h // sh, w // sw):
        return False
    for (before, _), n, s, k in zip(op.pads, (h, w), (sh, sw), op.effective.shape[2:], strict=True):
        if before != 0 or s * (n // s - 1) + k - 1 > n - 1:
            return False
    return True


def _phase_transform(
    before: int, k: int, n: int, s: int, freqs: np.ndarray, reduced: int
) -> np.ndarray:
    """``T[f, u, a]``: DFT weight of tap ``a`` at reduced frequency ``f`` in phase ``u``."""
    r = (before - np.arange(k)) % n
    phase = (-r) % s
    position = ((r + phase) // s) % reduced
    transform = np.zeros((freqs.size, s, k), dtype=np.complex128)
    exponent = np.exp(-2j * np.pi * np.outer(freqs, position) / reduced)
    transform[:, phase, np.arange(k)] = exponent
    return transform


def _dct_spectrum(op: ConvOperator) -> _Spectrum | None:
    from deconv_cli.spectral import diagonalize

    diagonal = diagonalize(op, dtype=np.float64)
    if diagonal is None or diagonal.kind != "dct":
        return None
    magnitude = np.abs(diagonal.eigenvalues).astype(np.float64)
    spectrum = _Spectrum(
        magnitude.ravel(),
        np.full(magnitude.size, float(_channels(op))),
        "exact: DCT (reflect boundary and a symmetric kernel: A = Cᵀ diag(λ) C, σ = |λ|)",
    )
    spectrum.zero_kind = "DCT eigenvalue"
    spectrum.frequency_count = magnitude.size
    spectrum.dct = (magnitude, diagonal)
    return spectrum


def _exact_spectrum(op: ConvOperator, dense_limit: int, kronecker_limit: int) -> _Spectrum | None:
    """Every singular value, by the first exact path that applies (module docstring)."""
    return (
        _wrap_spectrum(op)
        or _dct_spectrum(op)
        or _kronecker_spectrum(op, kronecker_limit)
        or _dense_spectrum(op, dense_limit)
    )


def _kronecker_spectrum(op: ConvOperator, limit: int) -> _Spectrum | None:
    """A separable kernel: ``A = A_rows ⊗ A_cols`` in every geometry, σ = products."""
    if not single_kernel(op) or max(op.input_shape[:2]) > limit:
        return None
    kernel = op.kernel if op.kernel.ndim == 2 else op.kernel[0, 0]
    factors = separable_factors(kernel)
    if factors is None:
        return None
    from scipy.linalg import svdvals

    left, right = (svdvals(_axis_matrix(op, f, axis)) for axis, f in enumerate(factors))
    values = np.multiply.outer(left, right).ravel()
    return _Spectrum(
        values,
        np.full(values.size, float(_channels(op))),
        "exact: dense SVD (a separable kernel: A is the Kronecker product of two 1-D "
        "operators, whose SVDs multiply)",
    )


def _axis_matrix(op: ConvOperator, taps: np.ndarray, axis: int) -> np.ndarray:
    """The 1-D operator along one axis, column by column."""
    g = op.geometry

    def along(value, other):
        return (value, other) if axis == 0 else (other, value)

    geometry = Geometry(
        mode=g.mode,
        boundary=g.boundary,
        correlate=g.correlate,
        stride=along(g.stride[axis], 1),
        dilation=along(g.dilation[axis], 1),
        padding=None if g.padding is None else along(g.padding[axis], 0),
    )
    n = op.input_shape[axis]
    kernel = taps[:, None] if axis == 0 else taps[None, :]
    return _block_matrix(kernel, along(n, 1), geometry)


def _block_matrix(kernel: np.ndarray, shape: tuple[int, int], geometry: Geometry) -> np.ndarray:
    """The matrix of one 2-D kernel on one ``shape`` channel: unit images as channels."""
    n = shape[0] * shape[1]
    columns = []
    for start in range(0, n, 512):
        stop = min(n, start + 512)
        probe = np.zeros((n, stop - start))
        probe[np.arange(start, stop), np.arange(stop - start)] = 1.0
        block = ConvOperator(kernel, (*shape, stop - start), geometry, engine="direct")
        out = block.forward(probe.reshape(*shape, stop - start))
        columns.append(out.reshape(-1, stop - start))
    return np.concatenate(columns, axis=1)


def dense_matrix(op: ConvOperator) -> np.ndarray:
    """The matrix of ``op`` on one channel (single kernel) or whole (bank).

    Rows and columns are grouped by channel (channel-major), a permutation of the
    flattened operator's: the singular values are the same.
    """
    h, w = op.input_shape[:2]
    if single_kernel(op):
        kernel = op.kernel if op.kernel.ndim == 2 else op.kernel[0, 0]
        return _block_matrix(kernel, (h, w), op.geometry)
    co, ci = op.kernel.shape[:2]
    blocks = [
        [_block_matrix(op.kernel[o, c], (h, w), op.geometry) for c in range(ci)] for o in range(co)
    ]
    return np.block(blocks)


def _dense_spectrum(op: ConvOperator, limit: int) -> _Spectrum | None:
    h, w = op.input_shape[:2]
    size = h * w if single_kernel(op) else op.shape[1]
    if size > limit:
        return None
    from scipy.linalg import svdvals

    values = svdvals(dense_matrix(op))
    what = "one channel's block" if _channels(op) > 1 else "the operator"
    return _Spectrum(
        values,
        np.full(values.size, float(_channels(op))),
        f"exact: dense SVD of {what}'s matrix, built column by column",
    )


# -- from singular values to a verdict -------------------------------------------------------


def _from_spectrum(
    op: ConvOperator, spectrum: _Spectrum, rtol: float, sigma_noise: float, source: str
) -> Analysis:
    m, n = op.shape
    values, weights = spectrum.values, spectrum.weights
    rank, nonzero, smax = _rank(spectrum, rtol)
    nullity = n - rank
    smin = float(values[nonzero].min()) if nonzero.any() else None
    inverse_sum = float(np.sum(weights[nonzero] / values[nonzero] ** 2))
    amplification = math.sqrt(inverse_sum / n) if nonzero.any() else None
    _name_zero_frequencies(spectrum, rtol * smax)
    result = _assemble(
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
        zero_reason=_zero_reason(op, spectrum, nullity),
    )
    result.singular_values = values
    result.weights = weights
    result.frequency_zeros = spectrum.frequencies
    return result


def _rank(spectrum: _Spectrum, rtol: float) -> tuple[int, np.ndarray, float]:
    """The rank (the weights of the σ > rtol·σ_max), those σ's mask, and ``σ_max``."""
    values, weights = spectrum.values, spectrum.weights
    smax = float(values.max()) if values.size else 0.0
    nonzero = values > rtol * smax if smax > 0 else np.zeros(values.shape, bool)
    return int(round(float(weights[nonzero].sum()))), nonzero, smax


def _name_zero_frequencies(spectrum: _Spectrum, cutoff: float) -> None:
    """Fill ``spectrum.frequencies`` with a few frequencies where the spectrum vanishes."""
    if spectrum.grid is not None:
        values, freq_weights, hr, wr, unit = spectrum.grid
        vanishing = (values <= cutoff).any(axis=2)
        counts = np.broadcast_to(freq_weights[None, :], vanishing.shape)
        spectrum.zero_count = int(round(float(counts[vanishing].sum())))
        for iy, ix in np.argwhere(vanishing)[:_NAMED_FREQUENCIES]:
            fy = iy / hr if iy <= hr // 2 else iy / hr - 1
            spectrum.frequencies.append(f"(fy, fx) = ({fy:.4g}, {ix / wr:.4g}) {unit}")
    elif spectrum.dct is not None:
        magnitude, diagonal = spectrum.dct
        vanishing = magnitude <= cutoff
        spectrum.zero_count = int(np.count_nonzero(vanishing))
        for index in np.argwhere(vanishing)[:_NAMED_FREQUENCIES]:
            spectrum.frequencies.append(diagonal.frequency(tuple(int(i) for i in index)))


def _zero_reason(op: ConvOperator, spectrum: _Spectrum, nullity: int) -> str | None:
    if nullity <= 0 or not spectrum.frequencies:
        return None
    co, ci = op.effective.shape[:2]
    sh, sw = op.geometry.stride
    if spectrum.zero_kind == "per-frequency matrix" and co < ci * sh * sw:
        return None  # every frequency loses rank: the channel count says why
    if spectrum.zero_kind == "transfer function" and sh * sw > 1:
        return None
    examples = "; ".join(spectrum.frequencies)
    what = {
        "transfer function": "the kernel's transfer function vanishes",
        "per-frequency matrix": "the per-frequency channel matrix loses rank",
        "DCT eigenvalue": "the DCT eigenvalues vanish",
    }[spectrum.zero_kind]
    return (
        f"spectral zeros: {what} at {spectrum.zero_count} of {spectrum.frequency_count} "
        f"frequencies, e.g. {examples}"
    )


def _structural_reasons(op: ConvOperator) -> list[str]:
    """Why the dimensions or channels force a null space, one sentence each."""
    m, n = op.shape
    g = op.geometry
    reasons = []
    if m < n:
        reasons.append(
            f"fewer equations than unknowns: {m} data values ({_dims(op.output_shape)}) "
            f"for {n} unknowns ({_dims(op.input_shape)})"
        )
    h, w = op.input_shape[:2]
    if g.mode == "valid" and g.padding is None and op.stride1_shape != (h, w):
        reasons.append(
            f"valid mode drops the border: {h}x{w} -> "
            f"{op.stride1_shape[0]}x{op.stride1_shape[1]} before any stride"
        )
    sh, sw = g.stride
    co, ci = op.effective.shape[:2]
    if sh * sw > 1 and single_kernel(op):
        reasons.append(
            f"the stride {_pair(g.stride)} discards samples: it keeps 1 of every "
            f"{sh * sw} outputs of a single kernel"
        )
    if not single_kernel(op) and co < ci * sh * sw:
        if sh * sw == 1:
            reasons.append(f"the kernel bank has fewer output than input channels ({co} < {ci})")
        else:
            reasons.append(
                f"the kernel bank has fewer output channels than input channels per phase: "
                f"{co} < {ci}×{sh * sw} (a stride-{_pair(g.stride)} layer is a stride-1 "
                f"layer with {ci * sh * sw} input channels)"
            )
    return reasons


def _assemble(
    op: ConvOperator,
    *,
    rank: int,
    nullity: int,
    smax: float,
    smin: float | None,
    rtol: float,
    method: str,
    rank_method: str,
    exact: dict[str, bool],
    sigma_noise: float,
    source: str,
    amplification: float | None,
    zero_reason: str | None = None,
    extra: list[str] | None = None,
    worst_case: bool = False,
) -> Analysis:
    m, n = op.shape
    invertible = nullity == 0
    reasons: list[str] = []
    if not invertible:
        size = f"{nullity}" if exact["rank"] else f"at least {nullity}"
        reasons.append(
            f"A has a null space of dimension {size}: "
            f"{'σ' if exact['rank'] else 'some σ'} <= {rtol:.2g}·σ_max counts as zero"
        )
        reasons += _structural_reasons(op)
        if zero_reason:
            reasons.append(zero_reason)
    reasons += extra or []
    predicted = None if amplification is None else sigma_noise * amplification
    noise = f"{_noise_name(source)} (σ ≈ {sigma_noise:.2g})"
    if invertible:
        verdict = "invertible"
        if predicted is not None:
            words = (
                f"{noise} is amplified ≈{amplification:.3g}× by the exact inverse: "
                f"predicted RMSE {predicted:.3g}"
            )
            if predicted > ILL_CONDITIONED_RMSE:
                verdict = "invertible but ill-conditioned"
                reasons.append(f"{words} > {ILL_CONDITIONED_RMSE:g} (1% of the range)")
            else:
                reasons.append(f"{words} <= {ILL_CONDITIONED_RMSE:g} (1% of the range)")
        elif smin is not None and worst_case:
            worst = sigma_noise / smin
            words = (
                f"{noise} along the least-determined direction becomes ≥ {worst:.3g} "
                "in the exact inverse (σ_noise / σ_min; the mean error is not known "
                "for this geometry)"
            )
            if worst > ILL_CONDITIONED_RMSE:
                verdict = "invertible but ill-conditioned"
            reasons.append(words)
    else:
        verdict = "not invertible"
        if predicted is not None:
            reasons.append(
                f"the pseudo-inverse A⁺ (minimum-norm least squares) recovers the rest: "
                f"{noise} gives it a predicted RMSE of {predicted:.3g} (besides the "
                "null-space part of the image, which is lost)"
            )
    return Analysis(
        input_shape=tuple(op.input_shape),
        output_shape=tuple(op.output_shape),
        unknowns=n,
        equations=m,
        rank=rank,
        nullity=nullity,
        sigma_max=smax,
        sigma_min=smin,
        condition_number=None if not smin else smax / smin,
        rank_tolerance=rtol,
        invertible=invertible,
        verdict=verdict,
        reasons=reasons,
        method=method,
        rank_method=rank_method,
        exact=exact,
        noise_sigma=sigma_noise,
        noise_source=source,
        predicted_rmse=predicted,
        amplification=amplification,
    )


def _noise_name(source: str) -> str:
    """``8-bit quantization (default)`` -> ``8-bit quantization noise`` (for sentences)."""
    if source == "given":
        return "white noise"
    name = source.split(" (")[0]
    return name if "noise" in name else f"{name} noise"


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _pair(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


# -- large operators: iterative estimates and theory ------------------------------------------


def _from_estimates(
    op: ConvOperator, rtol: float, sigma_noise: float, source: str, iterations: int, seed: int
) -> Analysis:
    """``σ_max`` by ARPACK, an upper bound on ``σ_min`` by LOBPCG, the rank by theory."""
    from deconv_cli.spectral import inverse_amplification

    m, n = op.shape
    block = op.with_input_shape(op.input_shape[:2]) if _channels(op) > 1 else op
    smax = _sigma_max(block, seed)
    bound = _sigma_min_bound(block, iterations, seed)
    g = op.geometry
    simple = single_kernel(op) and g.stride == (1, 1) and g.padding is None
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
    result = _assemble(
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


def _sigma_max(op: ConvOperator, seed: int) -> float:
    from scipy.sparse.linalg import svds

    a = op.as_linear_operator()
    if min(a.shape) < 3:
        return float(np.linalg.norm(dense_matrix(op), 2))
    v0 = np.random.default_rng(seed).standard_normal(min(a.shape))
    value = svds(a, k=1, which="LM", tol=SVDS_TOL, v0=v0, return_singular_vectors=False)
    return float(value[0])


def _sigma_min_bound(op: ConvOperator, iterations: int, seed: int) -> float:
    """An upper bound on the smallest (m-th, for wide ``A``) singular value.

    Every Rayleigh quotient ``‖A v‖ / ‖v‖`` is at least ``σ_min``; LOBPCG on the
    Gram matrix drives it down. Tall operators start from the weakest frequencies of
    the diagonalizable stand-in (:func:`deconv_cli.spectral.approximate`). The bound
    can be far above ``σ_min`` when the smallest singular vectors sit at the
    boundary, which is why it is reported as a bound.
    """
    from scipy.sparse.linalg import LinearOperator, lobpcg

    from deconv_cli.spectral import approximate

    a = op.as_linear_operator()
    m, n = a.shape
    tall = m >= n
    dim = n if tall else m
    apply = a.matvec if tall else a.rmatvec

    def quotient(v: np.ndarray) -> float:
        norm = float(np.linalg.norm(v))
        return float(np.linalg.norm(apply(v))) / norm if norm > 0 else math.inf

    def gram(v: np.ndarray) -> np.ndarray:
        v = np.ravel(v)
        return a.rmatvec(a.matvec(v)) if tall else a.matvec(a.rmatvec(v))

    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal(dim)]
    stand_in = approximate(op, dtype=np.float64) if tall else None
    if stand_in is not None:
        magnitude = np.abs(stand_in.eigenvalues)
        for index in np.argsort(magnitude, axis=None)[:_WEAKEST_STARTS]:
            coefficient = np.zeros(magnitude.shape, dtype=stand_in.eigenvalues.dtype)
            coefficient[np.unravel_index(index, magnitude.shape)] = 1.0
            starts.append(stand_in.inverse_transform(coefficient).ravel())
    else:
        starts += [rng.standard_normal(dim) for _ in range(2)]
    best = min(quotient(v) for v in starts)
    block = np.column_stack(starts)
    if dim > 5 * block.shape[1]:
        g = LinearOperator((dim, dim), matvec=gram, dtype=np.float64)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, vectors = lobpcg(g, block, largest=False, maxiter=iterations, tol=1e-30)
            best = min([best] + [quotient(v) for v in np.asarray(vectors).T])
        except (np.linalg.LinAlgError, ValueError, ArithmeticError):
            pass
    return best
