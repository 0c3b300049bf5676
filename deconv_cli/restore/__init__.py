"""Inversion methods and the registry of their facts.

Every method is a function ``f(blurred, op, options) -> RestoreResult`` in its own
module, registered there with :func:`register`. Its registry entry, a
:class:`Method`, carries every fact the rest of the program needs about it, so that
a new method, or a new option of one, is declared in one place:

- ``name`` and ``summary`` (the ``invert --help`` listing);
- ``options``: the :data:`OPTIONS` it takes. An :class:`Option` (type, range, the
  largest value accepted and why, help text) is shared by every method that takes
  it, as its flag is: ``deconv invert`` generates its method flags from
  :data:`OPTIONS` (they must exist before the method modules are imported, so that
  ``deconv --help`` stays fast) and refuses an option the chosen method does not take;
- ``automatic``: the options that ``None`` leaves to the data (GCV, the discrepancy
  principle, a noise estimate); tiling freezes them (:meth:`Method.freeze`);
- ``stops_by_data``: the stopping rule, when the data decide the iteration count
  (a discrepancy rule): tiling then freezes the count too;
- ``memory``: its peak memory in image-sized arrays (:class:`Footprint`), read by
  :func:`deconv_cli.memory.estimate_bytes`; an unknown method is an error there;
- ``check_kernel``: refuses kernels it cannot use, before any data is read;
  ``banks``: whether it takes conv-layer kernel banks (``auto`` reads it);
- ``roundtrip``: its place in ``deconv roundtrip``'s default table (``None``: not run
  by default).

Errors name parameters, never flags: a :class:`~deconv_cli.errors.DeconvError`
raised with ``parameter="iterations"`` reads ``iterations: ...`` to a library caller;
the command line shows it as ``--iterations: ...`` (:mod:`deconv_cli.cli`).
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from deconv_cli.errors import DeconvError, choice_error, mention

if TYPE_CHECKING:  # numpy and the operator are imported by the methods, not for --help
    import numpy as np

    from deconv_cli.operators import ConvOperator

# Modules that register methods, imported on first use of the registry; their methods
# are listed in this order (whatever order they were imported in).
_MODULES = ("inverse", "linear", "iterative", "richardson_lucy", "tv", "auto")

Callback = Callable[[int, "np.ndarray", float], None]
"""``callback(iteration, x, relative_residual)`` after each iteration of an iterative method."""


@dataclass
class RestoreOptions:
    """Every option a method may use; ``None`` means the method's default (or automatic).

    The fields besides ``jpeg_tables`` and ``callback`` are described in :data:`OPTIONS`.

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
"""The largest ``reg``, ``nsr``, ``tv``, and ``lam`` (times the data scale) accepted.

At 1e9 a regularized result is within about 1e-9 of its limit (flat, or zero): larger
weights change nothing visible, while the solvers' arithmetic breaks down (measured
before this limit: float32 Tikhonov returned NaN from 1e20, TV drifted off the data's
range from 1e15, ``tv=1e300`` overflowed)."""
MAX_NOISE = 1e3
"""The largest ``noise_sigma`` accepted, times the data scale: noise a thousand times
the signal leaves nothing to recover, and the weights derived from it overflow."""

_WEIGHT_WHY = "larger weights change nothing visible and break the arithmetic"


@dataclass(frozen=True)
class Option:
    """A method option (a :class:`RestoreOptions` field): its type, range and help.

    Attributes
    ----------
    name : str
        The field, and the parameter named in errors.
    type : type
        ``int`` or ``float``.
    help : str
        One line for ``invert --help``.
    low : float
        The smallest value accepted (``low_open``: values must be above it).
    high : float or None
        The largest value accepted (``high_open``: values must be below it);
        ``relative``: times the data scale (:func:`data_scale`); ``why``: the reason.
    """

    name: str
    type: type
    help: str
    low: float
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    relative: bool = False
    why: str = ""

    def check(self, value, scale: float | None = 1.0) -> None:
        """Raise :class:`DeconvError` naming this parameter when ``value`` is out of range.

        ``scale`` is the data scale for a relative ``high``; ``None`` checks the type
        and the low bound only (the command line's check while parsing, before the data).
        """
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise DeconvError(f"`{value}` is not a number", parameter=self.name)
        if not math.isfinite(value):
            raise DeconvError(f"`{value}` must be a finite number", parameter=self.name)
        if self.type is int and value != int(value):
            raise DeconvError(f"`{value}` must be a whole number", parameter=self.name)
        if value < self.low or (self.low_open and value == self.low):
            raise DeconvError(f"`{value:g}` must be {self._lowest()}", parameter=self.name)
        if self.high is None or scale is None:
            return
        top = self.high * scale if self.relative else self.high
        if self.high_open and value >= top:
            raise DeconvError(f"`{value:g}` must be below {top:g}", parameter=self.name)
        if value > top:
            relative = self.relative and scale != 1
            unit = f" ({self.high:g} × the data scale, {scale:.3g})" if relative else ""
            raise DeconvError(
                f"`{value:g}` is above the largest accepted, {top:g}{unit}: {self.why}",
                parameter=self.name,
            )

    def _lowest(self) -> str:
        if self.type is int:
            return f"at least {self.low:g}"
        if self.low_open:
            return f"a finite number > {self.low:g}"
        return "0 or positive" if self.low == 0 else f"at least {self.low:g}"


def _weight(name: str, help: str, *, relative: bool = False) -> Option:
    return Option(name, float, help, 0.0, True, MAX_WEIGHT, relative=relative, why=_WEIGHT_WHY)


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        Option("iterations", int, "Most iterations of an iterative method.", 1),
        Option("tol", float, f"Stopping tolerance; 0 runs exactly {mention('iterations')}.", 0),
        _weight("reg", "Tikhonov weight λ (default: chosen by GCV)."),
        _weight("nsr", "Wiener noise-to-signal ratio (default: estimated)."),
        Option("rcond", float, "Relative singular-value cutoff of pinv.", 0.0, True, 1.0, True),
        _weight("lam", "TV weight λ (default: from the estimated noise level).", relative=True),
        _weight("tv", "TV regularization weight for richardson-lucy."),
        Option(
            "noise_sigma",
            float,
            "Known noise standard deviation (default: estimated from the image).",
            0.0,
            True,
            MAX_NOISE,
            relative=True,
            why="such noise leaves nothing to recover",
        ),
    )
}
"""The options of the methods, in the order of ``invert --help``; each is a field of
:class:`RestoreOptions` and a flag of ``deconv invert`` (``noise_sigma``: ``--noise-sigma``)."""


def data_scale(y: np.ndarray) -> float:
    """1 for data on a [0, 1] scale; else its 99.9th percentile of |y| (TV's λ and the
    noise level scale with it)."""
    import numpy as np

    top = float(np.percentile(np.abs(y), 99.9)) if y.size else 0.0
    return 1.0 if top <= 1.5 else top


def check_options(options: RestoreOptions, data: np.ndarray) -> None:
    """Refuse any option of ``options`` outside its :data:`OPTIONS` range (the relative
    limits against the scale of ``data``): the check of every inversion the commands
    and :func:`deconv_cli.invert` run, before the work."""
    scale = None
    for option in OPTIONS.values():
        value = getattr(options, option.name)
        if value is None:
            continue
        if option.relative and scale is None:
            scale = data_scale(data)
        option.check(value, scale if option.relative else 1.0)


def check(name: str, value) -> None:
    """Refuse ``value`` for the option ``name`` where a method function uses it.

    The methods' own check, for a caller of their functions (``richardson_lucy(y, op,
    tv=...)``): the :data:`OPTIONS` range, the limits relative to the data's scale
    left to :func:`check_options`, with one difference on purpose: an option whose range is
    open at 0 (``reg``, ``nsr``, ``lam``, ``tv``, ``rcond``, ``noise_sigma``) accepts 0
    here, which turns its term off (no regularization, no truncation, no noise) and
    gives the unregularized solution to compare with. The command line and
    :func:`deconv_cli.invert` refuse 0 (:func:`check_options`): there a weight of 0 is a
    slip, and ``None`` already means "choose it from the data". ``None`` (the default)
    is always accepted.
    """
    option = OPTIONS[name]
    if value is None or (value == 0 and option.low == 0 and option.low_open):
        return
    option.check(value, None if option.relative else 1.0)


@dataclass
class RestoreResult:
    """A recovered image and how it was obtained.

    ``notes`` are sentences (why a choice, a warning); the options they name are
    written with :func:`~deconv_cli.errors.mention`, so the command line says them as
    flags and :func:`deconv_cli.invert` as parameters (:func:`~deconv_cli.errors.spoken`).
    """

    image: np.ndarray
    method: str
    params: dict[str, object] = field(default_factory=dict)
    iterations: int | None = None
    residual: float | None = None  # ||A x - y|| / ||y||
    converged: bool | None = None
    notes: list[str] = field(default_factory=list)


Function = Callable[["np.ndarray", "ConvOperator", RestoreOptions], RestoreResult]


@dataclass(frozen=True)
class Footprint:
    """A method's peak memory, in arrays the size of the image (channels included).

    ``copies`` in general; ``diagonal`` where the FFT or DCT diagonalizes ``A`` (a closed
    form), ``bank`` for a conv-layer kernel bank, when they differ. Measured by
    ``benchmarks/bench_tiles.py calibrate`` (the largest slope over 1024² and 2048²,
    float64 and float32, a gaussian and a motion blur), rounded up; float32 jobs keep
    some float64 work arrays, hence one count for both.
    """

    copies: float
    diagonal: float | None = None
    bank: float | None = None

    def __call__(self, *, diagonal: bool, bank: bool) -> float:
        if diagonal and self.diagonal is not None:
            return self.diagonal
        if bank and self.bank is not None:
            return self.bank
        return self.copies


LEAST_SQUARES = Footprint(17.0)
"""CGLS or LSQR on the operator: the footprint of every least-squares path."""


@dataclass(frozen=True)
class Method:
    """A registered inversion method and its facts (see the module notes)."""

    name: str
    summary: str
    function: Function
    options: tuple[str, ...]
    automatic: tuple[str, ...]
    iterative: bool
    memory: Footprint
    stops_by_data: Callable[[RestoreOptions], bool] | None
    check_kernel: Callable[[np.ndarray], None] | None
    banks: bool
    roundtrip: int | None

    def check_taken(self, given: dict[str, object]) -> None:
        """Refuse the options of ``given`` (name -> value, ``None``: not given) that this
        method does not take, naming them and those it takes."""
        unused = [name for name, value in given.items() if value is not None]
        unused = [name for name in unused if name not in self.options]
        if unused:
            takes = ", ".join(mention(name) for name in self.options) or "no options"
            raise DeconvError(
                f"{', '.join(mention(name) for name in unused)} does not apply to "
                f"{mention('method', self.name)} (it takes {takes})"
            )

    def freeze(self, options: RestoreOptions, pilot: RestoreResult) -> RestoreOptions:
        """``options`` with the choices ``pilot`` (a run of this method) made from its data
        made explicit: the :attr:`automatic` options it reports in its ``params``, and
        the iteration count where :attr:`stops_by_data` (then ``tol = 0`` runs exactly
        that many). The callback is dropped."""
        fixed = replace(options, callback=None)
        for name in self.automatic:
            if getattr(options, name) is None and isinstance(pilot.params.get(name), float):
                fixed = replace(fixed, **{name: pilot.params[name]})
        if self.stops_by_data is not None and self.stops_by_data(fixed):
            fixed = replace(fixed, iterations=pilot.iterations, tol=0.0)
        return fixed


REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    summary: str,
    *,
    options: tuple[str, ...] = (),
    automatic: tuple[str, ...] = (),
    iterative: bool = False,
    memory: Footprint = LEAST_SQUARES,
    stops_by_data: Callable[[RestoreOptions], bool] | None = None,
    check_kernel: Callable[[np.ndarray], None] | None = None,
    banks: bool = True,
    roundtrip: int | None = None,
):
    """Decorator: add ``function`` to the registry under ``name`` with its facts.

    Parameters
    ----------
    name, summary : str
    options : tuple of str
        The :data:`OPTIONS` the method takes.
    automatic : tuple of str
        Those of ``options`` it chooses from the data when ``None``, reporting the value
        chosen in ``result.params`` under the option's name.
    iterative : bool
        It reports iterations through ``options.callback`` (progress is shown).
    memory : Footprint
        Its peak memory (default: that of least squares).
    stops_by_data : callable, optional
        ``stops_by_data(options)``: whether the data set its iteration count (a
        discrepancy rule) with these options.
    check_kernel : callable, optional
        ``check_kernel(kernel)`` raises :class:`DeconvError` for a kernel the method
        cannot use, before any data is read.
    banks : bool
        It takes conv-layer kernel banks.
    roundtrip : int, optional
        Its place among the methods ``deconv roundtrip`` runs by default.
    """
    unknown = [o for o in options if o not in OPTIONS] + [a for a in automatic if a not in options]
    if unknown:
        raise TypeError(f"method {name}: options {unknown} are not in OPTIONS or not taken")

    def add(function: Function) -> Function:
        REGISTRY[name] = Method(
            name,
            summary,
            function,
            options,
            automatic,
            iterative,
            memory,
            stops_by_data,
            check_kernel,
            banks,
            roundtrip,
        )
        return function

    return add


def methods() -> dict[str, Method]:
    """All registered methods: by module in the order of ``_MODULES``, then in the order
    each module registers them (others last)."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    rank = {f"{__name__}.{module}": i for i, module in enumerate(_MODULES)}
    order = sorted(REGISTRY.values(), key=lambda m: rank.get(m.function.__module__, len(rank)))
    return {m.name: m for m in order}


def get_method(name: str) -> Method:
    """The method called ``name``, or an error naming ``method`` and the registered ones."""
    registry = methods()
    if name not in registry:
        raise choice_error(DeconvError, "method", name, registry)
    return registry[name]


def roundtrip_methods() -> tuple[str, ...]:
    """The methods ``deconv roundtrip`` runs by default, in their table's order."""
    chosen = [m for m in methods().values() if m.roundtrip is not None]
    return tuple(m.name for m in sorted(chosen, key=lambda m: m.roundtrip))
