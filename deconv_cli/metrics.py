"""Reconstruction error metrics: a registry of ``name -> f(reference, candidate, data_range)``.

Every metric takes two arrays of the same shape, H×W (grey), H×W×C (channels last) or
a volume Z×Y×X×C (:mod:`deconv_cli.volumes`; C may be 1), and the data range ``L``
(the width of the value scale; 1 on deconv's [0, 1] scale), and returns a Python float.
With ``d = candidate - reference`` and ``N`` pixel values:

========== ======================================== =====================================
name       definition                               computed with
========== ======================================== =====================================
mse        ``mean(d²)``                             ``skimage.metrics.mean_squared_error``
rmse       ``sqrt(mse)``                            the square root of the above
nrmse      ``‖d‖₂ / ‖reference‖₂``                  ``skimage.metrics.normalized_root_mse``
                                                    (``normalization='euclidean'``)
psnr       ``10 log10(L² / mse)`` dB                ``skimage.metrics.peak_signal_noise_ratio``
ssim       mean structural similarity               ``skimage.metrics.structural_similarity``
                                                    (its defaults: 7×7 uniform window; the
                                                    mean over channels for H×W×C)
mae        ``mean(|d|)``                            numpy (skimage has no MAE)
max_error  ``max(|d|)``                             numpy
========== ======================================== =====================================

Edge cases, chosen so that no metric ever warns or silently guesses:

- identical images: ``psnr`` is ``inf``; the others are 0 (``ssim`` is 1);
- ``nrmse`` of a candidate against an all-zero reference is ``inf`` (0 if the
  candidate is all zero too): the euclidean normalization divides by ``‖reference‖``;
- ``ssim`` needs every spatial side to be at least 7 pixels (its default window, a
  7×7×7 cube on volumes); smaller images raise :class:`~deconv_cli.errors.InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import InputError, choice_error, mention

MetricFunction = Callable[[np.ndarray, np.ndarray, float], float]


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes
    ----------
    name : str
        Registry name, as used by ``--metrics`` and in JSON/CSV keys.
    function : callable
        ``function(reference, candidate, data_range) -> float``.
    higher_is_better : bool
        True for ``psnr`` and ``ssim``: their thresholds are minimums.
    description : str
        One line for help texts.
    """

    name: str
    function: MetricFunction
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {}


def register(name: str, *, higher_is_better: bool = False, description: str = ""):
    """Register ``function`` under ``name`` (a decorator); registration order is column order."""

    def decorator(function: MetricFunction) -> MetricFunction:
        METRICS[name] = Metric(name, function, higher_is_better, description)
        return function

    return decorator


def _pair(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise InputError(
            f"shapes differ: reference {_shape(reference.shape)}, "
            f"candidate {_shape(candidate.shape)}; compare needs images of the same size"
        )
    if reference.size == 0:
        raise InputError("cannot compare empty images")
    return reference, candidate


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)


@register("mse", description="mean squared error")
def mse(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Mean squared error ``mean((candidate - reference)²)``; ``data_range`` is unused."""
    from skimage.metrics import mean_squared_error

    reference, candidate = _pair(reference, candidate)
    return float(mean_squared_error(reference, candidate))


@register("rmse", description="root mean squared error")
def rmse(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Root mean squared error ``sqrt(mse)``; ``data_range`` is unused."""
    return math.sqrt(mse(reference, candidate, data_range))


@register("nrmse", description="RMSE normalized by the reference (euclidean)")
def nrmse(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Normalized RMSE ``‖candidate - reference‖₂ / ‖reference‖₂`` (skimage's 'euclidean').

    Scale-free, so ``data_range`` is unused. An all-zero reference gives ``inf``
    (or 0 when the candidate is all zero as well).
    """
    from skimage.metrics import normalized_root_mse

    reference, candidate = _pair(reference, candidate)
    if not np.any(reference):
        return 0.0 if not np.any(candidate) else math.inf
    return float(normalized_root_mse(reference, candidate, normalization="euclidean"))


@register("psnr", higher_is_better=True, description="peak signal-to-noise ratio, dB")
def psnr(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range² / mse)`` in dB; ``inf`` if identical."""
    from skimage.metrics import peak_signal_noise_ratio

    reference, candidate = _pair(reference, candidate)
    if mse(reference, candidate) == 0.0:
        return math.inf
    return float(peak_signal_noise_ratio(reference, candidate, data_range=data_range))


@register("ssim", higher_is_better=True, description="structural similarity (skimage defaults)")
def ssim(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity with skimage's defaults (7×7 uniform window).

    A 3-D array is H×W×C and a 4-D one Z×Y×X×C (a 7×7×7 window): the result is the
    mean of the per-channel SSIMs (``channel_axis=-1``). Every spatial side must be at
    least 7 pixels.
    """
    from skimage.metrics import structural_similarity

    reference, candidate = _pair(reference, candidate)
    spatial = reference.shape[: 2 if reference.ndim <= 3 else 3]
    if min(spatial) < 7:
        raise InputError(
            f"ssim needs images of at least 7×7 pixels (its window), got {_shape(spatial)}; "
            f"leave ssim out with {mention('metrics')}"
        )
    channel_axis = -1 if reference.ndim >= 3 else None
    return float(
        structural_similarity(
            reference, candidate, data_range=data_range, channel_axis=channel_axis
        )
    )


@register("mae", description="mean absolute error")
def mae(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Mean absolute error ``mean(|candidate - reference|)``; ``data_range`` is unused."""
    reference, candidate = _pair(reference, candidate)
    return float(np.mean(np.abs(candidate - reference)))


@register("max_error", description="largest absolute error")
def max_error(reference: np.ndarray, candidate: np.ndarray, data_range: float = 1.0) -> float:
    """Largest absolute error ``max(|candidate - reference|)``; ``data_range`` is unused."""
    reference, candidate = _pair(reference, candidate)
    return float(np.max(np.abs(candidate - reference)))


def metric_names() -> list[str]:
    """All registered metric names, in their display order."""
    return list(METRICS)


def resolve_metrics(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate metric names and return them in registry order, without duplicates.

    ``None`` or an empty list means every metric. Unknown names raise
    :class:`~deconv_cli.errors.InputError` listing the valid ones.
    """
    if not names:
        return metric_names()
    for name in names:
        if name not in METRICS:
            raise choice_error(InputError, "metrics", name, METRICS)
    wanted = set(names)
    return [name for name in METRICS if name in wanted]


def compute_metrics(
    reference: np.ndarray,
    candidate: np.ndarray,
    names: list[str] | tuple[str, ...] | None = None,
    *,
    data_range: float = 1.0,
) -> dict[str, float]:
    """Compute the named metrics (all by default) of ``candidate`` against ``reference``.

    Parameters
    ----------
    reference, candidate : (H, W) or (H, W, C) ndarray
        Images of the same shape, on a scale whose range is ``data_range``.
    names : list of str, optional
        Registry names; every metric if omitted.
    data_range : float
        Width of the value scale (1 for deconv's [0, 1] scale); used by psnr and ssim.

    Returns
    -------
    dict
        ``{name: value}`` in registry order.
    """
    reference, candidate = _pair(reference, candidate)
    return {
        name: METRICS[name].function(reference, candidate, data_range)
        for name in resolve_metrics(names)
    }
