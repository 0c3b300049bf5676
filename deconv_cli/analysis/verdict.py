"""From singular values (exact or estimated) to the verdict: :class:`Analysis`, the
reasons in words, the predicted error of the exact inverse."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deconv_cli.analysis.exact import Spectrum, axes_text, single_kernel, spatial_shape, strides
from deconv_cli.operators import ConvOperator

ILL_CONDITIONED_RMSE = 0.01
"""An invertible operator is *ill-conditioned* when the predicted RMSE of its exact
inverse exceeds this: 1% of the [0, 1] range (PSNR 40 dB)."""

VERDICTS = ("invertible", "invertible but ill-conditioned", "not invertible")


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


def zeros_reason(op: ConvOperator, spectrum: Spectrum, nullity: int) -> str | None:
    """The sentence naming the frequencies where the spectrum vanishes, when they (and
    not the dimensions or channels) explain the null space."""
    if nullity <= 0 or not spectrum.frequencies:
        return None
    co, ci = op.effective.shape[:2]
    phases = math.prod(strides(op))
    if spectrum.zero_kind == "per-frequency matrix" and co < ci * phases:
        return None  # every frequency loses rank: the channel count says why
    if spectrum.zero_kind == "transfer function" and phases > 1:
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


def structural_reasons(op: ConvOperator) -> list[str]:
    """Why the dimensions or channels force a null space, one sentence each."""
    m, n = op.shape
    g = op.geometry
    reasons = []
    if m < n:
        reasons.append(
            f"fewer equations than unknowns: {m} data values ({_dims(op.output_shape)}) "
            f"for {n} unknowns ({_dims(op.input_shape)})"
        )
    shape, stride = spatial_shape(op), strides(op)
    if g.mode == "valid" and g.padding is None and op.stride1_shape != shape:
        reasons.append(
            f"valid mode drops the border: {_dims(shape)} -> "
            f"{_dims(op.stride1_shape)} before any stride"
        )
    phases = math.prod(stride)
    co, ci = op.effective.shape[:2]
    if phases > 1 and single_kernel(op):
        reasons.append(
            f"the stride {axes_text(stride)} discards samples: it keeps 1 of every "
            f"{phases} outputs of a single kernel"
        )
    if not single_kernel(op) and co < ci * phases:
        if phases == 1:
            reasons.append(f"the kernel bank has fewer output than input channels ({co} < {ci})")
        else:
            reasons.append(
                f"the kernel bank has fewer output channels than input channels per phase: "
                f"{co} < {ci}×{phases} (a stride-{axes_text(stride)} layer is a stride-1 "
                f"layer with {ci * phases} input channels)"
            )
    return reasons


def assemble(
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
    """The :class:`Analysis` of ``op`` from its rank and extreme singular values: the
    verdict, and the reasons in words (``zero_reason`` and ``extra`` appended)."""
    m, n = op.shape
    invertible = nullity == 0
    reasons: list[str] = []
    if not invertible:
        size = f"{nullity}" if exact["rank"] else f"at least {nullity}"
        reasons.append(
            f"A has a null space of dimension {size}: "
            f"{'σ' if exact['rank'] else 'some σ'} <= {rtol:.2g}·σ_max counts as zero"
        )
        reasons += structural_reasons(op)
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
