"""The geometry of a convolution: mode, boundary, stride, dilation, padding, per axis.

A :class:`Geometry` holds per-axis tuples for any number of spatial axes; a tuple
whose entries are all equal (the defaults, ``(1, 1)``) applies to any number of
axes (:meth:`Geometry.axes`). :func:`axis_pads` is the padding rule of one axis,
:func:`effective_taps` the kernel ``V`` correlates with (dilated, flipped for a
true convolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli.errors import GeometryError, choice_error, mention

MODES = ("same", "full", "valid")
BOUNDARIES = ("constant", "reflect", "mirror", "nearest", "wrap")
BOUNDARY_ALIASES = {
    "zero": "constant",
    "zeros": "constant",
    "edge": "nearest",
    "replicate": "nearest",
    "circular": "wrap",
    "periodic": "wrap",
    "symmetric": "reflect",
}


def parse_pair(value, name: str, *, minimum: int = 1):
    """Parse ``S``, ``SxT`` or ``SxTxU`` (or a tuple of any length) into a tuple of
    ints ``>= minimum``: one per spatial axis (z, y, x on volumes).

    A single number means the same on every axis (stored as two equal entries,
    which :meth:`Geometry.axes` applies to any number of axes); ``None`` stays ``None``.
    """
    if value is None:
        return None
    if isinstance(value, tuple):
        parts = list(value)
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = str(value).lower().replace("×", "x").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise GeometryError(f"`{value}` is not an integer or `NxM` pair", parameter=name) from None
    if len(numbers) == 1:
        numbers *= 2
    if not isinstance(value, tuple) and len(numbers) not in (2, 3) or min(numbers) < minimum:
        raise GeometryError(
            f"`{value}` must be N, NxM or NxMxL with integers >= {minimum}", parameter=name
        )
    return tuple(numbers)


@dataclass(frozen=True)
class Geometry:
    """The flags that, with a kernel and an image shape, define the operator.

    Use :meth:`create` to build one from user values: it resolves aliases and
    validates; the dataclass fields are always normalized. ``stride``, ``dilation``
    and ``padding`` are per spatial axis.
    """

    mode: str = "same"
    boundary: str = "reflect"
    correlate: bool = False
    stride: tuple[int, ...] = (1, 1)
    dilation: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] | None = None

    @classmethod
    def create(
        cls,
        *,
        mode: str | None = None,
        boundary: str = "reflect",
        correlate: bool = False,
        stride=1,
        dilation=1,
        padding=None,
    ) -> Geometry:
        """Validate user values (aliases allowed) and return a normalized geometry."""
        padding = parse_pair(padding, "padding", minimum=0)
        if padding is not None and mode is not None:
            raise GeometryError(
                "implies `valid` after padding; give no mode with it", parameter="padding"
            )
        mode = "valid" if padding is not None else (mode or "same")
        if mode not in MODES:
            raise choice_error(GeometryError, "mode", mode, MODES)
        boundary = BOUNDARY_ALIASES.get(boundary, boundary)
        if boundary not in BOUNDARIES:
            raise choice_error(
                GeometryError, "boundary", boundary, BOUNDARIES + tuple(BOUNDARY_ALIASES)
            )
        return cls(
            mode=mode,
            boundary=boundary,
            correlate=bool(correlate),
            stride=parse_pair(stride, "stride"),
            dilation=parse_pair(dilation, "dilation"),
            padding=padding,
        )

    def axes(self, ndim: int):
        """``(stride, dilation, padding)`` as tuples of ``ndim`` entries (padding may be None).

        A tuple of another length applies only when its entries are all equal.
        """
        return (
            _per_axis(self.stride, ndim, "stride"),
            _per_axis(self.dilation, ndim, "dilation"),
            None if self.padding is None else _per_axis(self.padding, ndim, "padding"),
        )

    def describe(self) -> str:
        """One line for summaries, e.g. ``same, reflect, stride 2x2``."""
        parts = [f"padding {_axes(self.padding)}" if self.padding else self.mode, self.boundary]
        if self.correlate:
            parts.append("correlation")
        if any(s != 1 for s in self.stride):
            parts.append(f"stride {_axes(self.stride)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"dilation {_axes(self.dilation)}")
        return ", ".join(parts)


def _per_axis(values: tuple[int, ...], ndim: int, name: str) -> tuple[int, ...]:
    if len(values) == ndim:
        return tuple(values)
    if len(set(values)) == 1:
        return (values[0],) * ndim
    raise GeometryError(
        f"`{_axes(values)}` gives {len(values)} axes, the kernel has {ndim} spatial axes",
        parameter=name,
    )


def _axes(p: tuple[int, ...]) -> str:
    return str(p[0]) if len(set(p)) == 1 else "x".join(map(str, p))


def check_extent(parameter: str, what: str, shape: tuple[int, ...]) -> None:
    """Refuse a geometry whose padded image or dilated kernel exceeds the pixel limit.

    The limit is 4x the one for reading images (:attr:`deconv_cli.config.Config.max_pixels`):
    room for any sensible padding of the largest image deconv reads, while absurd
    flags give an error line instead of an allocation failure.
    """
    from deconv_cli import config

    limit = 4 * config.current().max_pixels
    total = math.prod(shape)
    if total > limit:
        raise GeometryError(
            f"the {what} would be {'x'.join(map(str, shape))} = {total:,} "
            f"pixels, above the limit of {limit:,} (4x {mention('max_pixels')})",
            parameter=parameter,
        )


def effective_taps(bank: np.ndarray, dilation: tuple[int, ...], correlate: bool) -> np.ndarray:
    """The bank ``V`` cross-correlates with: each spatial axis dilated, all flipped for a
    true convolution. ``bank`` is ``(C_out, C_in/groups, *spatial)``."""
    spatial = bank.shape[2:]
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, spatial, strict=True))
    check_extent("dilation", "dilated kernel", extent)
    dilated = np.zeros(bank.shape[:2] + extent, dtype=np.float64)
    dilated[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = bank
    if not correlate:
        dilated = dilated[(slice(None), slice(None)) + (slice(None, None, -1),) * len(spatial)]
    return np.ascontiguousarray(dilated)


def shared_kernel(bank: np.ndarray, groups: int = 1) -> np.ndarray | None:
    """The one kernel a bank applies to every channel alike, mixing none, or ``None``.

    ``bank`` is ``(C_out, C_in/groups, *k)`` with output channel ``o`` reading the
    input channels of its group, ``g·C_in/groups + i``. The bank is one shared kernel
    ``k`` when ``C_out = C_in`` and output ``o`` reads input ``o`` only, through ``k``:
    its dense ``(C_out, C_in)`` block matrix is ``I ⊗ k``. Read from the bank alone
    (exactly equal kernels, exact zeros elsewhere): a ``(1, 1, *k)`` bank, a depthwise
    bank of one kernel (``groups = C``) and a ``C × C`` diagonal bank all qualify.
    """
    co, cig = bank.shape[:2]
    if co != cig * groups:
        return None
    own = np.arange(co) % cig  # output o's own channel, as an index within its group
    kernel = bank[0, own[0]]
    if not np.all(bank[np.arange(co), own] == kernel):
        return None
    others = np.ones((co, cig), dtype=bool)
    others[np.arange(co), own] = False
    return kernel if not np.any(bank[others]) else None


def as_bank(kernel: np.ndarray, spatial: int = 2) -> tuple[np.ndarray, bool]:
    """``(bank, is_bank)``: a kernel of the commands' layout as a bank ``(C_out, C_in,
    *k)`` with ``spatial`` axes.

    A kernel of 2 to ``spatial`` axes applies to each channel alike (``(1, 1, *k)``);
    a 4-D array is a bank of 2-D kernels, a ``spatial + 2``-D one a bank of
    ``spatial``-D kernels. Missing leading spatial axes get length 1: a 2-D kernel
    blurs each plane of a volume (``kz = 1``).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    is_bank = kernel.ndim == 4 or kernel.ndim == spatial + 2
    if kernel.size == 0 or not (is_bank or 2 <= kernel.ndim <= spatial):
        allowed = "2-D or a 4-D bank (C_out, C_in, kh, kw)"
        if spatial == 3:
            allowed = "2-D, 3-D, or a bank (C_out, C_in, *k) of 2-D or 3-D kernels"
        raise GeometryError(
            f"a kernel on {spatial} spatial axes must be {allowed}, got shape {kernel.shape}"
        )
    bank = kernel if is_bank else kernel[None, None]
    lift = spatial + 2 - bank.ndim
    return bank.reshape(bank.shape[:2] + (1,) * lift + bank.shape[2:]), is_bank


def effective_kernel(kernel: np.ndarray, geometry: Geometry, spatial: int = 2) -> np.ndarray:
    """The kernel ``V`` cross-correlates with, for a kernel of the commands' layout
    (:func:`as_bank`) on ``spatial`` axes.

    Returns a ``(C_out, C_in, *K)`` array (a per-channel kernel as ``(1, 1, *K)``).
    """
    _, dilation, _ = geometry.axes(spatial)
    return effective_taps(as_bank(kernel, spatial)[0], dilation, geometry.correlate)


def axis_pads(k: int, geometry: Geometry, padding: int | None) -> tuple[int, int]:
    """Padding (before, after) on one axis for an extent-``k`` effective kernel;
    ``padding``: that axis' explicit padding, if any."""
    if padding is not None:
        return padding, padding
    if geometry.mode == "full":
        return k - 1, k - 1
    if geometry.mode == "valid":
        return 0, 0
    # "same" centres the kernel as scipy.ndimage does (origin 0): a correlation puts
    # the centre at k // 2; a convolution (flipped kernel) at (k - 1) // 2.
    before = k // 2 if geometry.correlate else (k - 1) // 2
    return before, k - 1 - before
