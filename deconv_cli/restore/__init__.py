"""Inversion methods: a registry of functions ``f(blurred, op, options) -> RestoreResult``.

Each method family lives in its own module and registers itself with
:func:`register`; ``deconv invert --method`` takes its choices from
:data:`REGISTRY`, so a new method needs no CLI edit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deconv_cli.errors import DeconvError, choice_error
from deconv_cli.operators import ConvOperator

# Modules that register methods, imported on first use of the registry.
_MODULES = ("inverse", "linear", "richardson_lucy", "iterative", "tv", "auto")

Callback = Callable[[int, np.ndarray, float], None]
"""``callback(iteration, x, relative_residual)`` after each iteration of an iterative method."""


@dataclass
class RestoreOptions:
    """Every option a method may use; ``None`` means the method's default (or automatic).

    Attributes
    ----------
    iterations : int or None
        Maximum iterations of an iterative method.
    tol : float or None
        Stopping tolerance (``0`` runs exactly ``iterations``).
    reg : float or None
        Tikhonov weight λ (``None``: chosen automatically).
    nsr : float or None
        Wiener noise-to-signal power ratio (``None``: estimated).
    rcond : float or None
        Relative cutoff of the pseudo-inverse.
    lam : float or None
        TV weight (``None``: from the estimated noise level).
    tv : float or None
        Weight of the TV term in Richardson-Lucy (``None``: off).
    noise_sigma : float or None
        Known noise level; estimated from the data when ``None``.
    jpeg_tables : JpegTables or None
        The quantization tables of the JPEG file the data was read from, for the noise
        estimate (:func:`deconv_cli.noise_model.estimate_noise`).
    callback : Callback or None
    """

    iterations: int | None = None
    tol: float | None = None
    reg: float | None = None
    nsr: float | None = None
    rcond: float | None = None
    lam: float | None = None
    tv: float | None = None
    noise_sigma: float | None = None
    jpeg_tables: object | None = None
    callback: Callback | None = None


MAX_WEIGHT = 1e9
"""The largest ``--reg``, ``--nsr``, ``--tv``, and ``--lam`` (times the data scale) accepted.

At 1e9 a regularized result is within about 1e-9 of its limit (flat, or zero): larger
weights change nothing visible, while the solvers' arithmetic breaks down (measured
before this limit: float32 Tikhonov returned NaN from 1e20, TV drifted off the data's
range from 1e15, ``--tv 1e300`` overflowed)."""
MAX_NOISE = 1e3
"""The largest ``--noise-sigma`` accepted, times the data scale: noise a thousand times
the signal leaves nothing to recover, and the weights derived from it overflow."""

_WEIGHT_WHY = "larger weights change nothing visible and break the arithmetic"
_LIMITS = (  # flag, field, limit, relative to the data scale, why
    ("--reg", "reg", MAX_WEIGHT, False, _WEIGHT_WHY),
    ("--nsr", "nsr", MAX_WEIGHT, False, _WEIGHT_WHY),
    ("--tv", "tv", MAX_WEIGHT, False, _WEIGHT_WHY),
    ("--lam", "lam", MAX_WEIGHT, True, _WEIGHT_WHY),
    ("--noise-sigma", "noise_sigma", MAX_NOISE, True, "such noise leaves nothing to recover"),
)


def data_scale(y: np.ndarray) -> float:
    """1 for data on a [0, 1] scale; else its 99.9th percentile of |y| (TV's λ and the
    noise level scale with it)."""
    top = float(np.percentile(np.abs(y), 99.9)) if y.size else 0.0
    return 1.0 if top <= 1.5 else top


def check_limits(options: RestoreOptions, data: np.ndarray) -> None:
    """Refuse a weight or noise level above :data:`MAX_WEIGHT` / :data:`MAX_NOISE`."""
    scale = None
    for flag, name, limit, relative, why in _LIMITS:
        value = getattr(options, name)
        if value is None:
            continue
        if relative and scale is None:
            scale = data_scale(data)
        top = limit * scale if relative else limit
        if value > top:
            unit = f" ({limit:g} × the data scale, {scale:.3g})" if relative and scale != 1 else ""
            raise DeconvError(
                f"{flag}: `{value:g}` is above the largest accepted, {top:g}{unit}: {why}"
            )


@dataclass
class RestoreResult:
    """A recovered image and how it was obtained."""

    image: np.ndarray
    method: str
    params: dict[str, object] = field(default_factory=dict)
    iterations: int | None = None
    residual: float | None = None  # ||A x - y|| / ||y||
    converged: bool | None = None
    notes: list[str] = field(default_factory=list)


Function = Callable[[np.ndarray, ConvOperator, RestoreOptions], RestoreResult]


@dataclass(frozen=True)
class Method:
    """A registered inversion method."""

    name: str
    summary: str
    function: Function
    options: tuple[str, ...]  # the RestoreOptions fields it uses
    iterative: bool
    check_kernel: Callable[[np.ndarray], None] | None = None  # refuses kernels it cannot use


REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    summary: str,
    *,
    options: tuple[str, ...] = (),
    iterative: bool = False,
    check_kernel: Callable[[np.ndarray], None] | None = None,
):
    """Decorator: add ``function`` to the registry under ``name``; ``check_kernel(kernel)``
    raises :class:`DeconvError` for a kernel the method cannot use, before any data is read."""

    def add(function: Function) -> Function:
        REGISTRY[name] = Method(name, summary, function, options, iterative, check_kernel)
        return function

    return add


def methods() -> dict[str, Method]:
    """All registered methods, in registration order."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return REGISTRY


def get_method(name: str) -> Method:
    """The method called ``name``, or an error listing the registered ones."""
    registry = methods()
    if name not in registry:
        raise choice_error(DeconvError, "--method", name, registry)
    return registry[name]
