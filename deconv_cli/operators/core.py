"""The convolution operator ``A = S ∘ V ∘ P`` on 1, 2 or 3 spatial axes.

``P`` pads the image with the boundary rule (the extent set by ``mode`` or
``padding``), ``V`` is a *valid* cross-correlation with the effective kernel
(dilated, and flipped for a true convolution), ``S`` keeps every stride-th sample,
top-left anchored. The adjoint is ``Aᵀ = Pᵀ ∘ Vᵀ ∘ Sᵀ``: zero-upsampling, a *full*
convolution with the same kernel, and folding the padded border back onto the
pixels it was copied from (cropping, for zero padding).

:class:`Convolution` is the operator with explicit axes: arrays are ``(*spatial,
C)``, the kernel a bank ``(C_out, C_in/groups, *spatial)``. :class:`ConvOperator`
is the same operator in the image layout the commands use (``H×W[×C]``, or
``Z×H×W[×C]`` for a volume, the number of spatial axes given explicitly; a kernel
applied to each channel alike, or a bank with a channel axis of size one dropped on
either side).
"""

from __future__ import annotations

import numpy as np

from deconv_cli.errors import GeometryError, mention
from deconv_cli.operators import padding
from deconv_cli.operators.engines import make_engine
from deconv_cli.operators.geometry import (
    Geometry,
    as_bank,
    axis_pads,
    check_extent,
    effective_kernel,
    effective_taps,
    shared_kernel,
)
from deconv_cli.operators.linear import LinearMap
from deconv_cli.operators.padding import namespace

_DEFAULT = Geometry()  # same, reflect, stride and dilation 1


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class Convolution(LinearMap):
    """``A`` of one kernel bank, geometry and input shape, with explicit axes.

    Parameters
    ----------
    bank : (C_out, C_in/groups, *k) ndarray
        One kernel per output channel and input channel of its group, with 1, 2 or 3
        spatial axes; a convolution kernel unless ``geometry.correlate``.
    input_shape : tuple of int
        ``(*spatial, C_in)``: as many spatial axes as the bank, then the channels.
    geometry : Geometry
        Per-axis stride, dilation and padding (equal entries apply to any number of
        axes).
    groups : int
        ``C_in`` and ``C_out`` split into ``groups`` blocks, each output block
        reading only its input block (``groups = C_in``: depthwise).
    dtype : {float64, float32}
    engine : {"auto", "direct", "taps", "separable", "fft"}
        How ``V`` is computed; ``auto`` picks the cheapest by the cost model
        (:mod:`deconv_cli.operators.cost`). All compute the same operator (to rounding).
    """

    def __init__(
        self,
        bank: np.ndarray,
        input_shape: tuple[int, ...],
        geometry: Geometry = _DEFAULT,
        *,
        groups: int = 1,
        dtype=np.float64,
        engine: str = "auto",
    ) -> None:
        bank = np.asarray(bank, dtype=np.float64)
        if not 3 <= bank.ndim <= 5 or bank.size == 0:
            raise GeometryError(
                "a kernel bank is (C_out, C_in/groups, *spatial) with 1 to 3 spatial axes, "
                f"got shape {bank.shape}"
            )
        self.ndim = d = bank.ndim - 2
        input_shape = tuple(int(n) for n in input_shape)
        if len(input_shape) != d + 1 or min(input_shape) < 1:
            raise GeometryError(
                f"the input must be (*spatial, C) with {d} spatial axes, got shape {input_shape}"
            )
        co, cig = bank.shape[:2]
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or co % groups:
            raise GeometryError(f"groups: `{groups}` must be a whole divisor of C_out = {co}")
        if input_shape[-1] != cig * groups:
            raise GeometryError(
                f"the kernel bank takes {cig} x {groups} groups = {cig * groups} input "
                f"channels but the input has {input_shape[-1]}"
            )
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise GeometryError(f"dtype `{self.dtype}` is not float32 or float64")
        self.bank, self.groups, self.geometry, self.input_shape = (
            bank,
            groups,
            geometry,
            input_shape,
        )
        self.stride, dilation, explicit = geometry.axes(d)
        self.effective = effective_taps(bank, dilation, geometry.correlate)
        # one kernel applied to every channel alike: computed once for all of them
        self.shared = shared_kernel(bank, groups) is not None
        k = self.effective.shape[2:]
        self.pads = tuple(
            axis_pads(k[a], geometry, None if explicit is None else explicit[a]) for a in range(d)
        )
        spatial = input_shape[:-1]
        self.padded_shape = tuple(n + sum(p) for n, p in zip(spatial, self.pads, strict=True))
        check_extent("padding" if geometry.padding else "mode", "padded image", self.padded_shape)
        self.stride1_shape = tuple(n - m + 1 for n, m in zip(self.padded_shape, k, strict=True))
        if min(self.stride1_shape) < 1:
            raise GeometryError(
                f"the kernel ({_dims(k)} after dilation) is larger than the "
                f"{'padded ' if geometry.mode != 'valid' or geometry.padding else ''}image "
                f"({_dims(self.padded_shape)}): "
                f"`{geometry.mode}` mode has no output; use a smaller kernel, "
                f"{mention('mode', 'same')} or {mention('mode', 'full')}"
            )
        out = tuple(-(-n // s) for n, s in zip(self.stride1_shape, self.stride, strict=True))
        self.output_shape = out + (co,)
        self._engine = make_engine(engine, self)

    @property
    def engine(self) -> str:
        """The name of the engine computing the correlation."""
        return self._engine.name

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A x``: pad, correlate (valid), subsample."""
        x = self._check(x, self.input_shape, "image")
        if self._engine.folds_padding:
            return self._engine.forward(x)
        return self._engine.forward(padding.pad(x, self.pads, self.geometry.boundary))

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y``: zero-upsample, full convolution, fold the padding back."""
        y = self._check(y, self.output_shape, "data")
        if self._engine.folds_padding:
            return self._engine.adjoint(y)
        return padding.fold(self._engine.adjoint(y), self.pads, self.geometry.boundary)

    def _check(self, a, shape: tuple[int, ...], what: str):
        """``a`` in the operator's dtype, in its own array namespace (numpy for anything
        that is not an array-API array)."""
        xp = namespace(a)
        if xp is np:
            a = np.asarray(a)
        elif not self._engine.any_namespace:
            raise GeometryError(
                f"engine `{self.engine}` computes on numpy arrays; give engine `fft` for "
                f"arrays of {xp.__name__}"
            )
        if tuple(a.shape) != shape:
            raise GeometryError(
                f"the {what} has shape {_dims(a.shape)}, the operator expects {_dims(shape)}"
            )
        if xp is np:
            return a.astype(self.dtype, copy=False)
        return xp.astype(a, getattr(xp, self.dtype.name), copy=False)


class ConvOperator(LinearMap):
    """The linear operator ``A`` of one kernel, geometry and image shape (image layout).

    Parameters
    ----------
    kernel : ndarray
        A kernel applied to each channel alike (2-D, or 3-D on a volume) or a
        conv-layer bank ``(C_out, C_in/groups, *k)``, as stored: a convolution kernel
        unless ``geometry.correlate``. A 2-D kernel (or bank) on a volume blurs each
        plane (:func:`~deconv_cli.operators.geometry.as_bank`).
    input_shape : tuple of int
        ``spatial`` lengths (``(H, W)``, ``(Z, H, W)``), then optionally channels.
    geometry : Geometry
    spatial : {2, 3}
        The number of spatial axes of the image: 2 for images, 3 for volumes. Given
        by the caller (the ``--axes`` or the file's), never read from array shapes.
    groups : int, optional
        A bank's groups, as a conv layer's (:class:`Convolution`): ``C`` and
        ``C_out`` split into ``groups`` blocks, each output block reading only its
        input block (``groups = C``: depthwise). 1 for a kernel applied to each
        channel alike.
    dtype : numpy dtype, optional
        ``float64`` (default) or ``float32``: the precision of the computation.
    engine : {"auto", "direct", "taps", "separable", "fft"}
        How ``V`` is computed (see :class:`Convolution`).

    Notes
    -----
    This is the command line's layout; :attr:`core` is the :class:`Convolution`
    with explicit axes that computes it (a per-channel kernel on ``C`` channels: a
    depthwise bank of that kernel, ``groups = C``). A bank's side of one channel
    has no channel axis.
    """

    def __init__(
        self,
        kernel: np.ndarray,
        input_shape: tuple[int, ...],
        geometry: Geometry = _DEFAULT,
        *,
        spatial: int = 2,
        groups: int = 1,
        dtype=np.float64,
        engine: str = "auto",
    ) -> None:
        if spatial not in (2, 3):
            raise GeometryError(f"spatial: `{spatial}` axes; images have 2, volumes 3")
        bank, self.is_bank = as_bank(kernel, spatial)
        if len(input_shape) not in (spatial, spatial + 1) or min(input_shape) < 1:
            layout = "HxW or HxWxC" if spatial == 2 else "ZxHxW or ZxHxWxC"
            raise GeometryError(f"an image must be {layout}, got shape {input_shape}")
        self.spatial = spatial
        self.kernel = bank if self.is_bank else bank[0, 0]  # with the lifted axes
        self.geometry = geometry
        self.input_shape = tuple(int(n) for n in input_shape)
        _, dilation, _ = geometry.axes(spatial)
        self.effective = effective_taps(bank, dilation, geometry.correlate)
        channels = self.input_shape[spatial] if len(self.input_shape) > spatial else 1
        self.groups = groups
        if self.is_bank:
            co, ci = bank.shape[0], bank.shape[1] * groups
            if channels != ci and groups == 1:
                raise GeometryError(
                    f"the kernel bank takes {ci} input channels but the image has {channels}"
                )
        elif groups != 1:
            raise GeometryError(f"groups: `{groups}` is for a kernel bank; a 2-D kernel has 1")
        else:
            bank, groups = np.broadcast_to(bank, (channels,) + bank.shape[1:]), channels
        self.core = Convolution(
            bank,
            self.input_shape[:spatial] + (channels,),
            geometry,
            groups=groups,
            dtype=dtype,
            engine=engine,
        )
        self.dtype = self.core.dtype
        self.pads = self.core.pads
        self.padded_shape = self.core.padded_shape
        self.stride1_shape = self.core.stride1_shape
        out = self.core.output_shape[:spatial]
        if self.is_bank:
            self.output_shape = out + ((co,) if co > 1 else ())
        else:
            self.output_shape = out + self.input_shape[spatial:]

    @property
    def engine(self) -> str:
        """The name of the engine computing the correlation."""
        return self.core.engine

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``A x``: pad, correlate (valid), subsample."""
        x = self._layout(x, self.input_shape, "image")
        return self.core.forward(x.reshape(self.core.input_shape)).reshape(self.output_shape)

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        """``Aᵀ y``: zero-upsample, full convolution, fold the padding back."""
        y = self._layout(y, self.output_shape, "data")
        return self.core.adjoint(y.reshape(self.core.output_shape)).reshape(self.input_shape)

    def _layout(self, a: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        """``a`` checked against ``shape``; a bank's side of one channel (dropped from
        ``shape``) may come with its channel axis, as ``H×W×1``."""
        a = np.asarray(a)
        if self.is_bank and len(shape) == self.spatial and a.shape == shape + (1,):
            a = a[..., 0]
        return self.core._check(a, shape, what)

    def with_input_shape(self, input_shape: tuple[int, ...]) -> ConvOperator:
        """The same kernel and geometry on another image shape."""
        return ConvOperator(
            self.kernel,
            input_shape,
            self.geometry,
            spatial=self.spatial,
            groups=self.groups,
            dtype=self.dtype,
            engine=self.engine,
        )

    def describe(self) -> str:
        """One line: shapes, geometry and engine."""
        return (
            f"{_dims(self.input_shape)} -> {_dims(self.output_shape)} "
            f"({self.geometry.describe()}; {self.engine} engine)"
        )


def input_shape_for(
    kernel: np.ndarray,
    output_shape: tuple[int, ...],
    geometry: Geometry,
    requested: tuple[int, ...] | None = None,
    *,
    spatial: int = 2,
    groups: int = 1,
) -> tuple[int, ...]:
    """The image shape whose forward image has ``output_shape`` (image layout, on
    ``spatial`` axes; a bank's ``groups`` as :class:`ConvOperator`'s).

    A stride ``s`` maps ``s`` consecutive input lengths to one output length; the
    smallest is chosen (as ``conv_transpose2d`` does) unless ``requested`` (one
    length per spatial axis) names another valid one.
    """
    eff = effective_kernel(kernel, geometry, spatial)
    co, ci = eff.shape[0], eff.shape[1] * groups
    stride, _, explicit = geometry.axes(spatial)
    if requested is not None and len(requested) != spatial:
        raise GeometryError(
            f"`{_dims(requested)}` gives {len(requested)} lengths, the image has {spatial} "
            "spatial axes",
            parameter="output_shape",
        )
    lengths = []
    for axis in range(spatial):
        n_out, k, s = output_shape[axis], eff.shape[2 + axis], stride[axis]
        # n1 = n + pads - k + 1 and pads depend on n only through the mode, which
        # makes n = n1 + k - 1 - (before + after).
        before, after = axis_pads(k, geometry, None if explicit is None else explicit[axis])
        lo = s * (n_out - 1) + 1 + k - 1 - before - after
        candidates = range(max(lo, 1), lo + s)
        if requested is None:
            if not candidates:
                raise GeometryError(
                    f"no image shape maps to output length {n_out} on axis {axis} "
                    f"with this kernel and geometry"
                )
            lengths.append(candidates[0])
        elif requested[axis] in candidates:
            lengths.append(requested[axis])
        else:
            raise GeometryError(
                f"`{_dims(requested)}` does not map to the input's shape; on axis "
                f"{axis} the length must be in {candidates.start}..{candidates.stop - 1}",
                parameter="output_shape",
            )
    if as_bank(kernel, spatial)[1]:
        channels = output_shape[spatial] if len(output_shape) > spatial else 1
        if channels != co:
            raise GeometryError(
                f"the kernel bank has {co} output channels but the image has {channels}"
            )
        return tuple(lengths) + ((ci,) if ci > 1 else ())
    return tuple(lengths) + tuple(output_shape[spatial:])
