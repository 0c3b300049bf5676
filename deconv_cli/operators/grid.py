"""The operator of one kernel on a grid, every buffer kept: the iterative solvers' plan.

:class:`GridOperator` computes ``A`` (any boundary, mode, padding, stride,
dilation; 1, 2 or 3 spatial axes and any number of channels, one kernel for every
channel) on a periodic grid large enough that circular correlation equals the
linear one. Everything comes from the operator's :class:`~deconv_cli.operators.Convolution`
(``op.core`` of a :class:`~deconv_cli.operators.ConvOperator`, or the operator
itself): its spatial axes, padding (one index map, :mod:`deconv_cli.operators.padding`),
stride and effective kernel. Arrays are channel-first inside (``C × *spatial``);
:meth:`_Grid.internal` and :meth:`_Grid.external` convert from and to the
operator's layout (``*spatial`` or ``*spatial × C``). Richardson-Lucy, TV and
CGLS run on it: it keeps the kernel spectrum and every buffer across iterations, so
an iteration costs its Fourier transforms plus a few elementwise passes.
:class:`~deconv_cli.operators.spatial.SpatialGridOperator` has the same layout and
calls and computes in space, cheaper for thin and small kernels; :func:`grid_operator`
derives one of the two from the operator by the cost model.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np

from deconv_cli.errors import DeconvError
from deconv_cli.operators import cost
from deconv_cli.operators.core import Convolution
from deconv_cli.operators.cost import fast_length
from deconv_cli.operators.padding import border_pairs, namespace
from deconv_cli.operators.threads import fft_workers


def convolution_of(op) -> Convolution:
    """The :class:`Convolution` computing ``op`` (``op.core`` of a ``ConvOperator``)."""
    return getattr(op, "core", op)


def one_kernel(op) -> bool:
    """Whether ``op`` applies one kernel to every channel alike (the grid plans' and the
    diagonalizations' case), from its bank: a ``(1, 1, *k)`` bank is one kernel too."""
    return convolution_of(op).shared


def channel_first(a: np.ndarray, ndim: int) -> np.ndarray:
    """An array of ``ndim`` spatial axes, channels last if any, as a ``C × *spatial`` view
    (in the array's own namespace)."""
    xp = namespace(a)
    return xp.expand_dims(a, axis=0) if a.ndim == ndim else xp.moveaxis(a, -1, 0)


def channel_last(a: np.ndarray, shape: tuple[int, ...], ndim: int) -> np.ndarray:
    """A ``C × *spatial`` array as a view of the layout of ``shape`` (``*spatial[, C]``)."""
    return a[0, ...] if len(shape) == ndim else namespace(a).moveaxis(a, 0, -1)


def noise_planes(a: np.ndarray) -> np.ndarray:
    """A ``C × *spatial`` array (2 or 3 spatial axes) as ``H×W×planes``, the layout of the
    2-D noise estimate: the last two spatial axes as the image, every other index
    (channels, slices of a volume) as a plane (a view where the layout allows)."""
    return a.reshape((-1,) + a.shape[-2:]).transpose(1, 2, 0)


class _Transforms:
    """Unnormalized real N-D FFTs over the trailing (spatial) axes, into reused buffers.

    Uses scipy's pocketfft bindings directly when they are there (they write into
    a given output and invert in place, which saves a copy and an allocation per
    transform), else the public ``scipy.fft``. Kept on a measured gain: one
    ``forward()`` + ``adjoint()`` of a 15×15 kernel through the public ``scipy.fft``
    took 1.27× (512² float32), 1.13× (512² float64) and 1.13× (1024² float32) the
    time of the bindings (medians of 11 alternated pairs, one FFT thread, scipy 1.17).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, ndim: int) -> None:
        self.shape = shape
        self.axes = tuple(range(-ndim, 0))
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
        """``rfftn(a)`` over the spatial axes into ``out`` (default: the shared spectrum
        buffer), returned."""
        out = self.spectrum if out is None else out
        if self._pocketfft is not None:
            return self._pocketfft.r2c(
                a, axes=self.axes, forward=True, inorm=0, out=out, nthreads=self.workers
            )
        import scipy.fft

        out[...] = scipy.fft.rfftn(a, axes=self.axes, workers=self.workers)
        return out

    def inverse(self, spectrum: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Unnormalized ``irfftn`` into ``out``; overwrites ``spectrum``."""
        if self._pocketfft is not None:
            pf = self._pocketfft
            if len(self.axes) > 1:
                pf.c2c(
                    spectrum,
                    axes=self.axes[:-1],
                    forward=False,
                    inorm=0,
                    out=spectrum,
                    nthreads=self.workers,
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

        out[...] = scipy.fft.irfftn(
            spectrum,
            s=self.shape[-len(self.axes) :],
            axes=self.axes,
            norm="forward",
            workers=self.workers,
        )
        return out


def _at(region: tuple[slice, ...], axis: int, index: int) -> tuple:
    """``region`` (one slice per spatial axis) with ``index`` on ``axis``, channels first."""
    return (slice(None),) + region[:axis] + (index,) + region[axis + 1 :]


class _Grid(ABC):
    """The layout the grid operators share: ``A = S ∘ V ∘ P`` on a ``C × *grid`` array.

    The padded image ``P x`` sits at the top-left of the grid (padding filled by the
    boundary rule; a zero padding may be left implicit), the valid correlation ``V``
    is anchored at the top-left, and ``S`` keeps the strided valid samples. Use: write
    the image into :attr:`image` (a view of the grid), call ``forward()`` (returns a
    view of ``A x``); write data into :attr:`data` (a view) and call ``adjoint()``
    (returns a view of ``Aᵀ y``). The returned views are overwritten by the next call.
    """

    def _place(self, op, grid: tuple[int, ...], corner=None) -> None:
        """Buffers and views; the image's top-left ``corner`` in the grid (default: after
        the padding)."""
        if not one_kernel(op):
            raise DeconvError(
                f"{type(self).__name__} needs one kernel applied to every channel, "
                "not a kernel bank"
            )
        core = convolution_of(op)
        self.op = op
        self.ndim = core.ndim
        self.dtype = core.dtype
        self.channels = core.input_shape[-1]
        spatial = core.input_shape[:-1]
        corner = corner or tuple(before for before, _ in core.pads)
        self.padded = core.padded_shape
        self.grid = tuple(grid)
        self.interior = (slice(None),) + tuple(
            slice(c, c + n) for c, n in zip(corner, spatial, strict=True)
        )
        self.observed = (slice(None),) + tuple(
            slice(0, n, s) for n, s in zip(core.stride1_shape, core.stride, strict=True)
        )
        # the padded image's region of the grid, per spatial axis
        self._padded = tuple(
            slice(c - before, c - before + n)
            for c, (before, _), n in zip(corner, core.pads, self.padded, strict=True)
        )
        # the copies P makes and the sums Pᵀ makes, (target, source) grid indices in order
        boundary, image = core.geometry.boundary, self.interior[1:]
        self._fills, self._folds = [], []
        for axis, (n, pads) in enumerate(zip(spatial, core.pads, strict=True)):
            fill = self._padded[:axis] + image[axis:]
            fold = image[:axis] + self._padded[axis:]
            for border, source in border_pairs(n, pads, boundary) or ():
                self._fills.append((_at(fill, axis, border), _at(fill, axis, source)))
                self._folds.append((_at(fold, axis, source), _at(fold, axis, border)))

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

    def internal(self, a: np.ndarray) -> np.ndarray:
        """An array of the operator's layout (``*spatial[, C]``) as a ``C × *spatial`` view."""
        return channel_first(a, self.ndim)

    def external(self, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """A ``C × *spatial`` array as a view of the operator's layout of ``shape``."""
        return channel_last(a, shape, self.ndim)

    # -- the operator ---------------------------------------------------------------

    def fill_padding(self, grid: np.ndarray) -> None:
        """``P``: fill the padding around the image in ``grid`` by the boundary rule.

        Axis after axis: along axis ``a``, each border sample copies its source pixel
        over the padded extent of the axes before ``a`` (already filled) and the image
        extent of the axes after it, so corners are copies of copies, as ``np.pad``
        makes them.
        """
        for dst, src in self._fills:
            grid[dst] = grid[src]

    def fold_padding(self, grid: np.ndarray) -> np.ndarray:
        """``Pᵀ``: add the padding of ``grid`` onto the pixels it copies; the image view.

        Axis after axis, over the image extent of the axes already folded and the padded
        extent of the others (the fold is the tensor product of the per-axis folds).
        """
        for dst, src in self._folds:
            grid[dst] += grid[src]
        return grid[self.interior]

    @abstractmethod
    def forward(self) -> np.ndarray:
        """``A x`` of the image in :attr:`image`, as a view of a buffer."""

    @abstractmethod
    def adjoint(self) -> np.ndarray:
        """``Aᵀ y`` of the data in :attr:`data`, as a view of a buffer."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``A x`` for a ``C × *spatial`` array (a copy)."""
        self.image[...] = x
        return self.forward().copy()

    def apply_adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y`` for a ``C × *spatial'`` array (a copy)."""
        self.data[...] = y
        return self.adjoint().copy()


class GridOperator(_Grid):
    """``A`` for one kernel (any boundary, mode, padding, stride, dilation), on a grid.

    ``A = S ∘ V ∘ P``: the padded image ``P x`` is placed at the top-left of a
    periodic grid of fast FFT lengths at least the padded size, where the valid
    correlation ``V`` is a circular one (no wrap-around reaches the valid
    outputs), and ``S`` keeps the strided valid samples. Arrays are channel-first
    (``C × *spatial``) inside; :meth:`internal` / :meth:`external` convert.

    Use: write the image into :attr:`image` (a view of the grid), call
    :meth:`forward` (returns a view of ``A x``); write data into :attr:`data` (a
    view) and call :meth:`adjoint` (returns a view of ``Aᵀ y``). The returned views
    are overwritten by the next call.
    """

    def __init__(self, op) -> None:
        core = convolution_of(op)
        self._place(op, tuple(fast_length(n) for n in core.padded_shape))
        self.transforms = _Transforms((self.channels,) + self.grid, self.dtype, self.ndim)
        spectrum = _kernel_spectrum(core.effective[0, 0], self.grid)
        spectrum *= 1 / math.prod(self.grid)  # the inverse transforms are unnormalized
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


def grid_operator(op, engine: str = "auto") -> _Grid:
    """The grid operator of ``op`` (one kernel for every channel): by FFT or in space.

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
    core = convolution_of(op)
    _, grid, shift = spatial_layout(core)
    plan = spatial_passes(core, shift, grid)
    channels = core.input_shape[-1]
    samples = math.prod(grid) * channels
    spatial = sum(p.cost * samples + cost.PASS_CALL_NS + p.setup for p in plan[0])
    size = math.prod(fast_length(n) for n in core.padded_shape)
    fft = cost.GRID_FFT_NS_PER_LOG2[core.dtype] * math.log2(size) * size * channels
    fft += cost.GRID_FFT_CALL_NS
    return (
        SpatialGridOperator(op, plan) if spatial < cost.SPATIAL_MARGIN * fft else GridOperator(op)
    )


def _kernel_spectrum(kernel: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """``rfftn`` of ``kernel`` placed at the grid's origin (float64 maths): a short
    ``rfft`` along the last axis, then ``fft`` along the others, last to first."""
    import scipy.fft

    spectrum = scipy.fft.rfft(kernel, n=grid[-1], axis=-1)
    for axis in reversed(range(kernel.ndim - 1)):
        spectrum = scipy.fft.fft(spectrum, n=grid[axis], axis=axis, overwrite_x=True)
    return spectrum
