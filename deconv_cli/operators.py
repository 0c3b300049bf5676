"""The convolution operator ``A``: forward, exact adjoint, shapes, fast engines.

Every geometry is one composition (the PyLops way, no special cases)::

    A = S ∘ V ∘ P

``P`` pads the image with the boundary rule (the extent set by ``mode`` or
``padding``), ``V`` is a *valid* cross-correlation with the effective kernel
(dilated, and flipped for a true convolution), ``S`` keeps every stride-th sample,
top-left anchored. The adjoint is ``Aᵀ = Pᵀ ∘ Vᵀ ∘ Sᵀ``: zero-upsampling, a *full*
convolution with the same kernel, and folding the padded border back onto the
pixels it was copied from (cropping, for zero padding).

Images are ``H×W`` or ``H×W×C``. A 2-D kernel is applied to each channel alike; a
4-D kernel bank ``(C_out, C_in, kh, kw)`` maps ``C_in`` input channels to ``C_out``
output channels, as a deep-learning conv layer does (a channel axis of size one is
dropped on either side).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from deconv_cli.errors import DeconvError, GeometryError, choice_error

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
# scipy.ndimage boundary names -> numpy.pad modes (ndimage "reflect" is numpy "symmetric").
_NUMPY_PAD = {
    "constant": "constant",
    "reflect": "symmetric",
    "mirror": "reflect",
    "nearest": "edge",
    "wrap": "wrap",
}
ENGINES = ("auto", "direct", "taps", "separable", "fft")


def parse_pair(value: str | int | tuple[int, int] | None, name: str, *, minimum: int = 1):
    """Parse ``S`` or ``SxT`` into a pair of ints ``>= minimum`` (``None`` stays ``None``)."""
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
    if len(numbers) != 2 or min(numbers) < minimum:
        raise GeometryError(
            f"`{value}` must be N or NxM with integers >= {minimum}", parameter=name
        )
    return (numbers[0], numbers[1])


@dataclass(frozen=True)
class Geometry:
    """The flags that, with a kernel and an image shape, define the operator.

    Use :meth:`create` to build one from user values: it resolves aliases and
    validates; the dataclass fields are always normalized.
    """

    mode: str = "same"
    boundary: str = "reflect"
    correlate: bool = False
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | None = None

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

    def describe(self) -> str:
        """One line for summaries, e.g. ``same, reflect, stride 2x2``."""
        parts = [f"padding {_pair(self.padding)}" if self.padding else self.mode, self.boundary]
        if self.correlate:
            parts.append("correlation")
        if self.stride != (1, 1):
            parts.append(f"stride {_pair(self.stride)}")
        if self.dilation != (1, 1):
            parts.append(f"dilation {_pair(self.dilation)}")
        return ", ".join(parts)


def _pair(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def effective_kernel(kernel: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The kernel ``V`` cross-correlates with: dilated, and flipped for a true convolution.

    Returns a ``(C_out, C_in, KH, KW)`` array (a 2-D kernel as ``(1, 1, KH, KW)``).
    """
    bank = kernel if kernel.ndim == 4 else kernel[None, None]
    dh, dw = geometry.dilation
    co, ci, kh, kw = bank.shape
    check_extent("dilation", "dilated kernel", (dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    dilated = np.zeros((co, ci, dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=np.float64)
    dilated[:, :, ::dh, ::dw] = bank
    if not geometry.correlate:
        dilated = dilated[:, :, ::-1, ::-1]
    return np.ascontiguousarray(dilated)


def check_extent(parameter: str, what: str, shape: tuple[int, int]) -> None:
    """Refuse a geometry whose padded image or dilated kernel exceeds the pixel limit.

    The limit is 4x the one for reading images (:func:`deconv_cli.io.max_pixels`):
    room for any sensible padding of the largest image deconv reads, while absurd
    flags give an error line instead of an allocation failure.
    """
    from deconv_cli.io import max_pixels

    limit = 4 * max_pixels()
    if shape[0] * shape[1] > limit:
        raise GeometryError(
            f"the {what} would be {shape[0]}x{shape[1]} = {shape[0] * shape[1]:,} "
            f"pixels, above the limit of {limit:,} (4x --max-pixels)",
            parameter=parameter,
        )


def _axis_pads(n: int, k: int, geometry: Geometry, axis: int) -> tuple[int, int]:
    """Padding (before, after) on one axis for an extent-``k`` effective kernel."""
    if geometry.padding is not None:
        p = geometry.padding[axis]
        return p, p
    if geometry.mode == "full":
        return k - 1, k - 1
    if geometry.mode == "valid":
        return 0, 0
    # "same" centres the kernel as scipy.ndimage does (origin 0): a correlation puts
    # the centre at k // 2; a convolution (flipped kernel) at (k - 1) // 2.
    before = k // 2 if geometry.correlate else (k - 1) // 2
    return before, k - 1 - before


def _stride1_length(n: int, k: int, geometry: Geometry, axis: int) -> int:
    before, after = _axis_pads(n, k, geometry, axis)
    return n + before + after - k + 1


def input_shape_for(
    kernel: np.ndarray,
    output_shape: tuple[int, ...],
    geometry: Geometry,
    requested: tuple[int, int] | None = None,
) -> tuple[int, ...]:
    """The image shape whose forward image has ``output_shape``.

    A stride ``s`` maps ``s`` consecutive input lengths to one output length; the
    smallest is chosen (as ``conv_transpose2d`` does) unless ``requested`` (``H, W``)
    names another valid one.
    """
    eff = effective_kernel(kernel, geometry)
    co, ci = eff.shape[:2]
    spatial = []
    for axis in (0, 1):
        n_out, k, s = output_shape[axis], eff.shape[2 + axis], geometry.stride[axis]
        # n1 = n + pads - k + 1 and pads depend on n only through the mode, which
        # makes n = n1 + k - 1 - (before + after).
        before, after = _axis_pads(0, k, geometry, axis)
        lo = s * (n_out - 1) + 1 + k - 1 - before - after
        candidates = range(max(lo, 1), lo + s)
        if requested is None:
            if not candidates:
                raise GeometryError(
                    f"no image shape maps to output length {n_out} on axis {axis} "
                    f"with this kernel and geometry"
                )
            spatial.append(candidates[0])
        elif requested[axis] in candidates:
            spatial.append(requested[axis])
        else:
            raise GeometryError(
                f"`{requested[0]}x{requested[1]}` does not map to the input's shape; on axis "
                f"{axis} the length must be in {candidates.start}..{candidates.stop - 1}",
                parameter="output_shape",
            )
    if kernel.ndim == 4:
        channels = _channel_count(output_shape)
        if channels != co:
            raise GeometryError(
                f"the kernel bank has {co} output channels but the image has {channels}"
            )
        return tuple(spatial) + ((ci,) if ci > 1 else ())
    return tuple(spatial) + tuple(output_shape[2:])


def _channel_count(shape: tuple[int, ...]) -> int:
    return shape[2] if len(shape) == 3 else 1


def fft_workers() -> int:
    """Threads for scipy.fft: the cores this process may use (``DECONV_FFT_WORKERS`` overrides)."""
    env = os.environ.get("DECONV_FFT_WORKERS")
    if env and env.strip():
        try:
            return max(1, int(env.strip()))
        except ValueError:
            raise DeconvError(
                f"DECONV_FFT_WORKERS: `{env}` is not a whole number of threads "
                "(unset it to use every core this process may use)"
            ) from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def fast_length(n: int) -> int:
    """Smallest ``2^a 3^b 5^c`` (``c <= 1``) at least ``n``: fast for every FFT backend.

    ``scipy.fft.next_fast_len`` may pick lengths with large powers of 3 or 5 that
    are markedly slower on some backends.
    """
    best = 1 << max(0, (n - 1).bit_length())
    for five in (1, 5):
        p3 = five
        while p3 < 2 * n:
            m = p3
            while m < n:
                m *= 2
            best = min(best, m)
            p3 *= 3
    return best


class ConvOperator:
    """The linear operator ``A`` of one kernel, geometry and image shape.

    Parameters
    ----------
    kernel : (kh, kw) or (C_out, C_in, kh, kw) ndarray
        A 2-D kernel (per channel) or a conv-layer kernel bank, as stored: a
        convolution kernel unless ``geometry.correlate``.
    input_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    geometry : Geometry
    dtype : numpy dtype, optional
        ``float64`` (default) or ``float32``: the precision of the computation.
    engine : {"auto", "direct", "separable", "fft"}
        How ``V`` is computed; ``auto`` picks the cheapest by an operation count.
        All engines compute the same operator (to rounding).
    """

    def __init__(
        self,
        kernel: np.ndarray,
        input_shape: tuple[int, ...],
        geometry: Geometry = Geometry(),
        *,
        dtype=np.float64,
        engine: str = "auto",
    ) -> None:
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim not in (2, 4) or kernel.size == 0:
            raise GeometryError(
                "a kernel must be 2-D or a 4-D bank (C_out, C_in, kh, kw), "
                f"got shape {kernel.shape}"
            )
        if len(input_shape) not in (2, 3) or min(input_shape) < 1:
            raise GeometryError(f"an image must be HxW or HxWxC, got shape {input_shape}")
        self.kernel = kernel
        self.geometry = geometry
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise GeometryError(f"dtype `{self.dtype}` is not float32 or float64")
        self.input_shape = tuple(int(n) for n in input_shape)
        self.is_bank = kernel.ndim == 4
        self.effective = effective_kernel(kernel, geometry)
        co, ci, kh, kw = self.effective.shape
        channels = _channel_count(self.input_shape)
        if self.is_bank and channels != ci:
            raise GeometryError(
                f"the kernel bank takes {ci} input channels but the image has {channels}"
            )
        h, w = self.input_shape[:2]
        self.pads = (_axis_pads(h, kh, geometry, 0), _axis_pads(w, kw, geometry, 1))
        self.padded_shape = (h + sum(self.pads[0]), w + sum(self.pads[1]))
        check_extent("padding" if geometry.padding else "mode", "padded image", self.padded_shape)
        self.stride1_shape = (self.padded_shape[0] - kh + 1, self.padded_shape[1] - kw + 1)
        if min(self.stride1_shape) < 1:
            raise GeometryError(
                f"the kernel ({kh}x{kw} after dilation) is larger than the "
                f"{'padded ' if geometry.mode != 'valid' or geometry.padding else ''}image "
                f"({self.padded_shape[0]}x{self.padded_shape[1]}): "
                f"`{geometry.mode}` mode has no output; use a smaller kernel or --mode same/full"
            )
        sh, sw = geometry.stride
        spatial = (-(-self.stride1_shape[0] // sh), -(-self.stride1_shape[1] // sw))
        if self.is_bank:
            self.output_shape = spatial + ((co,) if co > 1 else ())
        else:
            self.output_shape = spatial + self.input_shape[2:]
        self._engine = _make_engine(engine, self)

    # -- public --------------------------------------------------------------

    @property
    def engine(self) -> str:
        """The name of the engine computing the correlation."""
        return self._engine.name

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: equations and unknowns of the flattened operator."""
        return math.prod(self.output_shape), math.prod(self.input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A x``: pad, correlate (valid), subsample."""
        x = self._check(x, self.input_shape, "image")
        y = self._engine.forward(self._pad(_as3d(x)))
        return y.reshape(self.output_shape)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y``: zero-upsample, full convolution, fold the padding back."""
        y = self._check(y, self.output_shape, "data")
        xp = self._engine.adjoint(_as3d(y))
        return self._unpad(xp).reshape(self.input_shape)

    def with_input_shape(self, input_shape: tuple[int, ...]) -> ConvOperator:
        """The same kernel and geometry on another image shape."""
        return ConvOperator(
            self.kernel, input_shape, self.geometry, dtype=self.dtype, engine=self._engine.name
        )

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` on flattened (float64) vectors."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            self.shape,
            matvec=lambda v: self.forward(v.reshape(self.input_shape)).ravel(),
            rmatvec=lambda v: self.adjoint(v.reshape(self.output_shape)).ravel(),
            dtype=self.dtype,
        )

    def describe(self) -> str:
        """One line: shapes, geometry and engine."""
        shape = "x".join(map(str, self.input_shape))
        out = "x".join(map(str, self.output_shape))
        return f"{shape} -> {out} ({self.geometry.describe()}; {self.engine} engine)"

    # -- internals -------------------------------------------------------------

    def _check(self, a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        a = np.asarray(a)
        if a.shape != shape:
            raise GeometryError(
                f"the {what} has shape {'x'.join(map(str, a.shape))}, the operator expects "
                f"{'x'.join(map(str, shape))}"
            )
        return a.astype(self.dtype, copy=False)

    def _pad(self, x: np.ndarray) -> np.ndarray:
        pads = (*self.pads, (0, 0))
        if not any(sum(p) for p in self.pads):
            return x
        mode = _NUMPY_PAD[self.geometry.boundary]
        return np.pad(x, pads, mode=mode)

    def _unpad(self, xp: np.ndarray) -> np.ndarray:
        """``Pᵀ``: each padded sample is added back onto the pixel it was copied from."""
        boundary = self.geometry.boundary
        for axis, (before, after) in enumerate(self.pads):
            n = xp.shape[axis] - before - after
            inner = np.take(xp, range(before, before + n), axis=axis)
            if boundary == "constant" or not before + after:
                xp = inner
                continue
            source = np.pad(np.arange(n), (before, after), mode=_NUMPY_PAD[boundary])
            border = np.r_[0:before, before + n : before + n + after]
            moved = np.moveaxis(inner, axis, 0)  # a view: adds go into ``inner``
            np.add.at(moved, source[border], np.moveaxis(np.take(xp, border, axis=axis), axis, 0))
            xp = inner
        return xp


def _as3d(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 3 else a[:, :, None]


# -- engines -------------------------------------------------------------------
#
# An engine computes V then S (forward) and Sᵀ then Vᵀ (adjoint) on H×W×C arrays.
# For a bank, C is C_in on the padded side and C_out on the data side; otherwise the
# one 2-D kernel is applied to every channel.


class _Engine:
    name = ""

    def __init__(self, op: ConvOperator) -> None:
        self.op = op
        self.kernel = op.effective.astype(op.dtype)
        self.stride = op.geometry.stride

    def upsample(self, y: np.ndarray) -> np.ndarray:
        """``Sᵀ``: put the samples back on the stride-1 grid, zeros elsewhere."""
        if self.stride == (1, 1):
            return y
        sh, sw = self.stride
        h1, w1 = self.op.stride1_shape
        up = np.zeros((h1, w1, y.shape[2]), dtype=y.dtype)
        up[::sh, ::sw] = y
        return up


class _Direct(_Engine):
    """Spatial-domain correlation with ``scipy.ndimage`` (zero weights are skipped)."""

    name = "direct"

    def forward(self, xp: np.ndarray) -> np.ndarray:
        sh, sw = self.stride
        return self._valid(xp, self.kernel)[::sh, ::sw]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        kh, kw = self.kernel.shape[2:]
        y1 = np.pad(self.upsample(y), ((kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        flipped = self.kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        return self._valid(y1, flipped)

    def _valid(self, x: np.ndarray, bank: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        co, ci, kh, kw = bank.shape
        rows = slice(kh // 2, kh // 2 + x.shape[0] - kh + 1)
        cols = slice(kw // 2, kw // 2 + x.shape[1] - kw + 1)
        if not self.op.is_bank:
            return ndimage.correlate(x, bank[0, 0][:, :, None], mode="constant")[rows, cols]
        out = np.zeros((rows.stop - rows.start, cols.stop - cols.start, co), dtype=x.dtype)
        for o in range(co):
            for i in range(ci):
                out[:, :, o] += ndimage.correlate(x[:, :, i], bank[o, i], mode="constant")[
                    rows, cols
                ]
        return out


class _Taps(_Engine):
    """Sparse taps: one shifted, strided slice of the padded image per non-zero tap.

    ``y[i, j] = Σ_{(a, b): K[a, b] ≠ 0} K[a, b] · x_p[s i + a, t j + b]`` computes
    only the kept output samples, so its cost is (non-zero taps) × (output samples)
    whatever the kernel's extent: a dilated kernel's zeros cost nothing. The adjoint
    adds each tap's weighted data back onto the same slices. One tap is one
    vectorized pass, so a long run answers signals between taps.
    """

    name = "taps"

    def __init__(self, op: ConvOperator) -> None:
        super().__init__(op)
        self.taps = [tuple(int(n) for n in t) for t in np.argwhere(self.kernel)]

    def _window(self, a: int, b: int, shape: tuple[int, ...]) -> tuple[slice, slice]:
        """The padded samples tap ``(a, b)`` reads for an output of ``shape``."""
        sh, sw = self.stride
        return slice(a, a + sh * (shape[0] - 1) + 1, sh), slice(b, b + sw * (shape[1] - 1) + 1, sw)

    def _channels(self, o: int, i: int) -> tuple[slice, slice]:
        """The output and input channels tap ``(o, i, ·, ·)`` connects: one each in a
        bank, all of them (alike) otherwise."""
        if self.op.is_bank:
            return slice(o, o + 1), slice(i, i + 1)
        return slice(None), slice(None)

    def forward(self, xp: np.ndarray) -> np.ndarray:
        h, w = self.op.output_shape[:2]
        banked = self.op.is_bank
        out = np.zeros((h, w, self.kernel.shape[0] if banked else xp.shape[2]), dtype=xp.dtype)
        scratch = np.empty((h, w, 1 if banked else xp.shape[2]), dtype=xp.dtype)
        for o, i, a, b in self.taps:
            rows, cols = self._window(a, b, (h, w))
            co, ci = self._channels(o, i)
            np.multiply(xp[rows, cols, ci], self.kernel[o, i, a, b], out=scratch)
            out[:, :, co] += scratch
        return out

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        banked = self.op.is_bank
        channels = self.kernel.shape[1] if banked else y.shape[2]
        xp = np.zeros((*self.op.padded_shape, channels), dtype=y.dtype)
        scratch = np.empty((*y.shape[:2], 1 if banked else y.shape[2]), dtype=y.dtype)
        for o, i, a, b in self.taps:
            rows, cols = self._window(a, b, y.shape[:2])
            co, ci = self._channels(o, i)
            np.multiply(y[:, :, co], self.kernel[o, i, a, b], out=scratch)
            xp[rows, cols, ci] += scratch
        return xp


class _Separable(_Engine):
    """Two 1-D passes for a rank-one 2-D kernel (gaussian, box): ``kh + kw`` taps a pixel."""

    name = "separable"

    def __init__(self, op: ConvOperator) -> None:
        super().__init__(op)
        self.column, self.row = separable_factors(op.effective[0, 0])
        self.column = self.column.astype(op.dtype)
        self.row = self.row.astype(op.dtype)

    def forward(self, xp: np.ndarray) -> np.ndarray:
        sh, sw = self.stride
        y = _valid1d(xp, self.column, 0)[::sh]
        return _valid1d(y, self.row, 1)[:, ::sw]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        sh, sw = self.stride
        h1, w1 = self.op.stride1_shape
        up = np.zeros((y.shape[0], w1, y.shape[2]), dtype=y.dtype)
        up[:, ::sw] = y
        t = _full1d(up, self.row, 1)
        up = np.zeros((h1, t.shape[1], t.shape[2]), dtype=t.dtype)
        up[::sh] = t
        return _full1d(up, self.column, 0)


def _valid1d(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    from scipy import ndimage

    k = taps.size
    n = x.shape[axis] - k + 1
    out = ndimage.correlate1d(x, taps, axis=axis, mode="constant")
    return np.take(out, range(k // 2, k // 2 + n), axis=axis)


def _full1d(y: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    k = taps.size
    pads = [(0, 0)] * y.ndim
    pads[axis] = (k - 1, k - 1)
    return _valid1d(np.pad(y, pads), taps[::-1], axis)


def separable_factors(kernel: np.ndarray, rtol: float = 1e-12):
    """``(column, row)`` with ``outer(column, row) == kernel`` to ``rtol``, or ``None``.

    A rank-one matrix is the outer product of its column and row through any nonzero
    entry, divided by that entry; the largest one is the best conditioned. (An SVD
    would cost seconds for the kernels of thousands of taps a user may give.)
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    i, j = np.unravel_index(int(np.argmax(np.abs(kernel))), kernel.shape)
    pivot = float(kernel[i, j])
    if pivot == 0.0:
        return np.zeros(kernel.shape[0]), np.zeros(kernel.shape[1])
    scale = math.sqrt(abs(pivot))
    column = kernel[:, j] / scale
    row = kernel[i, :] / (scale if pivot > 0 else -scale)
    if np.max(np.abs(np.outer(column, row) - kernel)) > rtol * abs(pivot):
        return None
    return column, row


class _FFT(_Engine):
    """Real FFTs of a fast padded length; the kernel spectrum is computed once."""

    name = "fft"

    def __init__(self, op: ConvOperator) -> None:
        super().__init__(op)
        self.size = tuple(fast_length(n) for n in op.padded_shape)

    @cached_property
    def spectrum(self) -> np.ndarray:
        """The kernel's rfft2 at the padded size: ``(L0, L1//2+1, C_out, C_in)`` for a
        bank, ``(L0, L1//2+1, 1)`` (broadcast over channels) otherwise.

        Computed as a short rfft of the kernel rows then a column fft: the kernel is
        small, so this costs about half of one image-sized transform.
        """
        import scipy.fft

        rows = scipy.fft.rfft(self.kernel, n=self.size[1], axis=3, workers=fft_workers())
        spec = scipy.fft.fft(rows, n=self.size[0], axis=2, workers=fft_workers())
        spec = np.ascontiguousarray(spec.transpose(2, 3, 0, 1))
        return spec if self.op.is_bank else spec[:, :, 0]

    @cached_property
    def conjugate_spectrum(self) -> np.ndarray:
        return self.spectrum.conj()

    def forward(self, xp: np.ndarray) -> np.ndarray:
        import scipy.fft

        h1, w1 = self.op.stride1_shape
        spec = scipy.fft.rfft2(xp, s=self.size, axes=(0, 1), workers=fft_workers())
        # a correlation multiplies by the conjugate kernel spectrum
        if self.op.is_bank:
            spec = np.einsum("abi,abOi->abO", spec, self.conjugate_spectrum)
        else:
            spec *= self.conjugate_spectrum
        out = scipy.fft.irfft2(spec, s=self.size, axes=(0, 1), workers=fft_workers())
        sh, sw = self.stride
        return out[:h1:sh, :w1:sw]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        import scipy.fft

        spec = scipy.fft.rfft2(self.upsample(y), s=self.size, axes=(0, 1), workers=fft_workers())
        if self.op.is_bank:
            spec = np.einsum("abO,abOi->abi", spec, self.spectrum)
        else:
            spec *= self.spectrum
        out = scipy.fft.irfft2(spec, s=self.size, axes=(0, 1), workers=fft_workers())
        hp, wp = self.op.padded_shape
        return out[:hp, :wp]


_ENGINE_CLASSES = {"direct": _Direct, "taps": _Taps, "separable": _Separable, "fft": _FFT}

# Costs in nanoseconds, measured on this project's 2-core machines (float64,
# scipy.ndimage and scipy.fft; see `make bench`); only the ordering matters.
_DIRECT_NS = (3.0, 1.0)  # per padded pixel: fixed, per non-zero tap
_DIRECT_TABLE_NS = 3.0  # per call, times (kh·kw)²: ndimage's offset table spans the extent
_TAPS_NS = (3e3, 1.5)  # per non-zero tap: per call, per output sample
_SEPARABLE_NS = (8.0, 0.6)  # per padded pixel: fixed, per tap of both passes
_FFT_NS_PER_LOG2 = 0.9  # per padded pixel, per transform, per log2 of the transform size


def _make_engine(name: str, op: ConvOperator) -> _Engine:
    if name not in ENGINES:
        raise choice_error(GeometryError, "engine", name, ENGINES)
    if name == "auto":
        name = _cheapest_engine(op)
    elif name == "separable" and (op.is_bank or separable_factors(op.effective[0, 0]) is None):
        raise GeometryError("engine `separable` needs a rank-one 2-D kernel")
    return _ENGINE_CLASSES[name](op)


def _cheapest_engine(op: ConvOperator) -> str:
    """The engine of least modelled cost for one application of ``V`` (ns).

    ``scipy.ndimage`` skips zero taps in its loop but builds a table of offsets over
    the kernel's whole extent for every border position, ``(kh·kw)²`` work: a
    dilated kernel makes it explode (a 3×3 box at dilation 1000: hours), while the
    sparse taps cost only (non-zero taps) × (output samples).
    """
    co, ci, kh, kw = op.effective.shape
    taps = np.count_nonzero(op.effective)
    padded = math.prod(op.padded_shape)
    outputs = math.prod(op.output_shape[:2])
    costs = {
        "direct": padded * (_DIRECT_NS[0] + _DIRECT_NS[1] * taps)
        + _DIRECT_TABLE_NS * (kh * kw) ** 2,
        "taps": taps * (_TAPS_NS[0] + _TAPS_NS[1] * outputs),
    }
    if not op.is_bank and separable_factors(op.effective[0, 0]) is not None:
        costs["separable"] = padded * (_SEPARABLE_NS[0] + _SEPARABLE_NS[1] * (kh + kw))
    size = math.prod(fast_length(n) for n in op.padded_shape)
    transforms = co + ci if op.is_bank else 2
    costs["fft"] = padded * _FFT_NS_PER_LOG2 * math.log2(size) * transforms
    return min(costs, key=costs.get)
