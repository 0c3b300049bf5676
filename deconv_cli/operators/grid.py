"""The operator of one 2-D kernel on a grid, every buffer kept: the iterative solvers' plan.

:class:`GridOperator` computes ``A`` (any boundary, mode, padding, stride,
dilation) on a periodic grid large enough that circular correlation equals the
linear one. Richardson-Lucy, TV and CGLS run on it: it keeps the kernel spectrum
and every buffer across iterations, so an iteration costs its Fourier transforms
plus a few elementwise passes. :class:`~deconv_cli.operators.spatial.SpatialGridOperator`
has the same layout and calls and computes in space, cheaper for thin and small
kernels; :func:`grid_operator` derives one of the two from a
:class:`~deconv_cli.operators.ConvOperator` by the cost model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.operators import cost
from deconv_cli.operators.core import ConvOperator
from deconv_cli.operators.cost import fast_length
from deconv_cli.operators.padding import border_pairs
from deconv_cli.operators.threads import fft_workers


class _Transforms:
    """Unnormalized real 2-D FFTs over the last two axes, into reused buffers.

    Uses scipy's pocketfft bindings directly when they are there (they write into
    a given output and invert in place, which saves a copy and an allocation per
    transform), else the public ``scipy.fft``. Kept on a measured gain: one
    ``forward()`` + ``adjoint()`` of a 15×15 kernel through the public ``scipy.fft``
    took 1.27× (512² float32), 1.13× (512² float64) and 1.13× (1024² float32) the
    time of the bindings (medians of 11 alternated pairs, one FFT thread, scipy 1.17).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.workers = fft_workers()
        self.complex_dtype = np.result_type(dtype, np.complex64)
        try:
            from scipy.fft._pocketfft import pypocketfft
        except ImportError:  # pragma: no cover - depends on the scipy build
            pypocketfft = None
        self._pocketfft = pypocketfft

    @cached_property
    def spectrum(self) -> np.ndarray:
        """The shared spectrum buffer, made on first use (TV keeps its own)."""
        return np.empty(self.shape[:-1] + (self.shape[-1] // 2 + 1,), dtype=self.complex_dtype)

    def forward(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``rfft2(a)`` into ``out`` (default: the shared spectrum buffer), returned."""
        out = self.spectrum if out is None else out
        if self._pocketfft is not None:
            return self._pocketfft.r2c(
                a, axes=(-2, -1), forward=True, inorm=0, out=out, nthreads=self.workers
            )
        import scipy.fft

        out[...] = scipy.fft.rfft2(a, axes=(-2, -1), workers=self.workers)
        return out

    def inverse(self, spectrum: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Unnormalized ``irfft2`` into ``out``; overwrites ``spectrum``."""
        if self._pocketfft is not None:
            pf = self._pocketfft
            pf.c2c(
                spectrum, axes=(-2,), forward=False, inorm=0, out=spectrum, nthreads=self.workers
            )
            return pf.c2r(
                spectrum,
                axes=(-1,),
                lastsize=self.shape[-1],
                forward=False,
                inorm=0,
                out=out,
                nthreads=self.workers,
            )
        import scipy.fft

        out[...] = scipy.fft.irfft2(
            spectrum, s=self.shape[-2:], axes=(-2, -1), norm="forward", workers=self.workers
        )
        return out


class _Grid(ABC):
    """The layout the grid operators share: ``A = S ∘ V ∘ P`` on a ``C × H × W`` grid.

    The padded image ``P x`` sits at the top-left of the grid (padding filled by the
    boundary rule; a zero padding may be left implicit), the valid correlation ``V``
    is anchored at the top-left, and ``S`` keeps the strided valid samples. Use: write
    the image into :attr:`image` (a view of the grid), call ``forward()`` (returns a
    view of ``A x``); write data into :attr:`data` (a view) and call ``adjoint()``
    (returns a view of ``Aᵀ y``). The returned views are overwritten by the next call.
    """

    def _place(self, op: ConvOperator, grid: tuple[int, int], corner=None) -> None:
        """Buffers and views; the image's top-left ``corner`` in the grid (default: after
        the padding)."""
        if op.is_bank:
            raise DeconvError(f"{type(self).__name__} needs a 2-D kernel, not a kernel bank")
        self.op = op
        self.dtype = op.dtype
        self.channels = op.input_shape[2] if len(op.input_shape) == 3 else 1
        h, w = op.input_shape[:2]
        top, left = corner or (op.pads[0][0], op.pads[1][0])
        self.padded = op.padded_shape
        self.grid = grid
        self.interior = (slice(None), slice(top, top + h), slice(left, left + w))
        h1, w1 = op.stride1_shape
        sh, sw = op.geometry.stride
        self.observed = (slice(None), slice(0, h1, sh), slice(0, w1, sw))
        boundary = op.geometry.boundary
        self._maps = [border_pairs(op.input_shape[a], op.pads[a], boundary) for a in (0, 1)]

    # -- buffers, made on first use (TV runs its own and needs none of them) -----------

    @cached_property
    def _image_grid(self) -> np.ndarray:
        return np.zeros((self.channels,) + self.grid, dtype=self.dtype)

    @cached_property
    def _data_grid(self) -> np.ndarray:
        return np.zeros((self.channels,) + self.grid, dtype=self.dtype)

    @cached_property
    def _result(self) -> np.ndarray:
        return np.empty((self.channels,) + self.grid, dtype=self.dtype)

    @cached_property
    def image(self) -> np.ndarray:
        """The image, a view of the grid that :meth:`forward` reads."""
        return self._image_grid[self.interior]

    @cached_property
    def data(self) -> np.ndarray:
        """The data, a view of the grid that :meth:`adjoint` reads."""
        return self._data_grid[self.observed]

    # -- layout ---------------------------------------------------------------------

    @staticmethod
    def internal(a: np.ndarray) -> np.ndarray:
        """An ``H×W[×C]`` array as a ``C×H×W`` view."""
        return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)

    @staticmethod
    def external(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A ``C×H×W`` array as an ``H×W[×C]`` view of the operator's ``shape``."""
        return a[0] if len(shape) == 2 else np.moveaxis(a, 0, -1)

    # -- the operator ---------------------------------------------------------------

    def fill_padding(self, grid: np.ndarray) -> None:
        """``P``: fill the padding around the image in ``grid`` by the boundary rule."""
        rows, cols = self._maps
        hp = self.padded[0]
        if rows is not None:
            cs = self.interior[2]
            for dst, src in rows:
                grid[:, dst, cs] = grid[:, src, cs]
        if cols is not None:
            for dst, src in cols:
                grid[:, :hp, dst] = grid[:, :hp, src]

    def fold_padding(self, grid: np.ndarray) -> np.ndarray:
        """``Pᵀ``: add the padding of ``grid`` onto the pixels it copies; the image view."""
        rows, cols = self._maps
        wp = self.padded[1]
        if rows is not None:
            for src, dst in rows:
                grid[:, dst, :wp] += grid[:, src, :wp]
        if cols is not None:
            rs = self.interior[1]
            for src, dst in cols:
                grid[:, rs, dst] += grid[:, rs, src]
        return grid[self.interior]

    @abstractmethod
    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a view of a buffer."""

    @abstractmethod
    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x`` for a ``C×H×W`` array (a copy)."""
        self.image[...] = x
        return self.forward().copy()

    def apply_adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y`` for a ``C×H'×W'`` array (a copy)."""
        self.data[...] = y
        return self.adjoint().copy()


class GridOperator(_Grid):
    """``A`` for one 2-D kernel (any boundary, mode, padding, stride, dilation), on a grid.

    ``A = S ∘ V ∘ P``: the padded image ``P x`` is placed at the top-left of a
    periodic grid of fast FFT lengths at least the padded size, where the valid
    correlation ``V`` is a circular one (no wrap-around reaches the valid
    outputs), and ``S`` keeps the strided valid samples. Arrays are channel-first
    (``C × H × W``) inside; :meth:`internal` / :meth:`external` convert.

    Use: write the image into :attr:`image` (a view of the grid), call
    :meth:`forward` (returns a view of ``A x``); write data into :attr:`data` (a
    view) and call :meth:`adjoint` (returns a view of ``Aᵀ y``). The returned views
    are overwritten by the next call.
    """

    def __init__(self, op: ConvOperator) -> None:
        padded = op.padded_shape
        self._place(op, (fast_length(padded[0]), fast_length(padded[1])))
        self.transforms = _Transforms((self.channels,) + self.grid, self.dtype)
        kernel = op.effective[0, 0]
        spectrum = _kernel_spectrum(kernel, self.grid)
        spectrum *= 1 / (self.grid[0] * self.grid[1])  # the inverse transforms are unnormalized
        self.kernel_spectrum = spectrum.astype(self.transforms.complex_dtype, copy=False)

    @cached_property
    def conj_spectrum(self) -> np.ndarray:
        """The kernel spectrum's conjugate (``A``'s correlation), made on first use."""
        return np.conj(self.kernel_spectrum)

    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a (strided) view of a buffer."""
        self.fill_padding(self._image_grid)
        spectrum = self.transforms.forward(self._image_grid)
        spectrum *= self.conj_spectrum
        self.transforms.inverse(spectrum, self._result)
        return self._result[self.observed]

    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""
        spectrum = self.transforms.forward(self._data_grid)
        spectrum *= self.kernel_spectrum
        return self.fold_padding(self.transforms.inverse(spectrum, self._result))

    def scale_adjoint(self, factor: float) -> None:
        """From now on :meth:`adjoint` computes ``factor · Aᵀ y`` (no extra pass)."""
        self.conj_spectrum = self.conj_spectrum  # made now: the forward stays unscaled
        self.kernel_spectrum = self.kernel_spectrum * factor


def grid_operator(op: ConvOperator, engine: str = "auto") -> _Grid:
    """The grid operator of ``op`` (one 2-D kernel): by FFT or in space.

    ``engine``: ``"fft"``, ``"spatial"``, or ``"auto"``: spatial where an operation
    count says it costs less than 0.7 times the FFTs per application (the FFTs'
    cost, ``0.4 ns · log2 G`` a sample of a grid of ``G`` samples in float32, 0.65 in
    float64, varies with the lengths' factors; the margin keeps close calls on the
    FFT). Constants: :mod:`deconv_cli.operators.cost`. Spatial wins for a
    thin kernel (a motion blur along an axis: a box sum, 1.5-2 ns a sample at 512²,
    against about 7 for the FFTs) and a small rank-one one (a box; in float64 a
    gaussian of σ ≤ 1); the FFT for larger gaussians and most non-separable kernels.
    """
    from deconv_cli.operators.spatial import (
        SpatialGridOperator,
        spatial_layout,
        spatial_passes,
    )

    if engine == "fft":
        return GridOperator(op)
    if engine == "spatial":
        return SpatialGridOperator(op)
    if engine != "auto":
        raise DeconvError(f"grid engine: `{engine}` is not one of auto, fft, spatial")
    _, grid, shift = spatial_layout(op)
    plan = spatial_passes(op, shift, grid)
    samples = grid[0] * grid[1] * (op.input_shape[2] if len(op.input_shape) == 3 else 1)
    spatial = sum(p.cost * samples + cost.PASS_CALL_NS + p.setup for p in plan[0])
    hp, wp = op.padded_shape
    size = fast_length(hp) * fast_length(wp)
    fft = (
        cost.GRID_FFT_NS_PER_LOG2[op.dtype] * math.log2(size) * size * samples / (grid[0] * grid[1])
    )
    fft += cost.GRID_FFT_CALL_NS
    return (
        SpatialGridOperator(op, plan) if spatial < cost.SPATIAL_MARGIN * fft else GridOperator(op)
    )


def _kernel_spectrum(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``rfft2`` of ``kernel`` placed at the grid's origin (float64 maths)."""
    import scipy.fft

    rows = scipy.fft.rfft(kernel, n=grid[1], axis=1)
    return scipy.fft.fft(rows, n=grid[0], axis=0, overwrite_x=True)
