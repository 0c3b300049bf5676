"""The engines computing ``S ∘ V`` (forward) and ``Vᵀ ∘ Sᵀ`` (adjoint) on ``(*spatial, C)``
arrays, for any number of spatial axes.

``V`` is a *valid* cross-correlation with the effective bank ``(C_out, C_in/groups,
*k)``: output channel ``o`` of group ``g = o // (C_out/groups)`` sums its kernels
over the input channels of that group. A depthwise bank whose kernels are all one
(``shared``: one kernel applied to every channel alike) is computed once for every
channel. ``S`` keeps every stride-th sample, top-left anchored.
"""

from __future__ import annotations

import math
from functools import cached_property, partial

import numpy as np

from deconv_cli.errors import GeometryError, choice_error
from deconv_cli.operators.cost import engine_costs, fast_length
from deconv_cli.operators.padding import namespace
from deconv_cli.operators.threads import fft_workers

ENGINES = ("auto", "direct", "taps", "separable", "fft")


def _strided(shape: tuple[int, ...], stride: tuple[int, ...]) -> tuple[slice, ...]:
    """The samples ``S`` keeps of a stride-1 result of spatial ``shape``."""
    return tuple(slice(0, n, s) for n, s in zip(shape, stride, strict=True)) + (Ellipsis,)


class _Engine:
    name = ""
    any_namespace = False  # computes on numpy arrays only
    folds_padding = False  # takes the image, not the padded image (and returns the image)

    def __init__(self, op) -> None:
        self.op = op
        self.kernel = op.effective.astype(op.dtype)
        self.stride = op.stride
        self.d = op.ndim
        co, cig = op.effective.shape[:2]
        self.cog = co // op.groups
        self.cig = cig

    def upsample(self, y: np.ndarray) -> np.ndarray:
        """``Sᵀ``: put the samples back on the stride-1 grid, zeros elsewhere."""
        if all(s == 1 for s in self.stride):
            return y
        up = namespace(y).zeros(self.op.stride1_shape + y.shape[-1:], dtype=y.dtype)
        up[_strided(self.op.stride1_shape, self.stride)] = y
        return up

    def group_of(self, o: int) -> int:
        """The input channel offset of output channel ``o``'s group."""
        return (o // self.cog) * self.cig


class _Direct(_Engine):
    """Spatial-domain correlation with ``scipy.ndimage`` (zero weights are skipped)."""

    name = "direct"

    def forward(self, xp: np.ndarray) -> np.ndarray:
        return self._valid(xp, self.kernel)[_strided(self.op.stride1_shape, self.stride)]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        k = self.kernel.shape[2:]
        y1 = np.pad(self.upsample(y), tuple((n - 1, n - 1) for n in k) + ((0, 0),))
        flipped = self.kernel[(slice(None), slice(None)) + (slice(None, None, -1),) * self.d]
        return self._valid(y1, flipped, adjoint=True)

    def _valid(self, x: np.ndarray, bank: np.ndarray, adjoint: bool = False) -> np.ndarray:
        from scipy import ndimage

        k = bank.shape[2:]
        crop = tuple(slice(n // 2, n // 2 + m - n + 1) for n, m in zip(k, x.shape, strict=False))
        if self.op.shared:
            return ndimage.correlate(x, bank[0, 0][..., None], mode="constant")[crop]
        channels = self.op.input_shape[-1] if adjoint else bank.shape[0]
        out = np.zeros(tuple(s.stop - s.start for s in crop) + (channels,), dtype=x.dtype)
        for o in range(bank.shape[0]):
            base = self.group_of(o)
            for i in range(self.cig):
                src, dst = (o, base + i) if adjoint else (base + i, o)
                out[..., dst] += ndimage.correlate(x[..., src], bank[o, i], mode="constant")[crop]
        return out


class _Taps(_Engine):
    """Sparse taps: shifted, strided slices of the image, one set per non-zero tap.

    ``y[i] = Σ_{a: K[a] ≠ 0} K[a] · x_p[s·i + a]`` (per axis) computes only the kept
    output samples, so its cost is (non-zero taps) × (output samples) whatever the
    kernel's extent: a dilated kernel's zeros cost nothing. The padding is folded
    into the taps: along each axis, the padded samples a tap reads, ``s·i + a``, are
    mapped to image pixels by the boundary's index map
    (:func:`deconv_cli.operators.padding.index_map`) and cut into runs that are
    slices of the image (forward or reversed; zeros skipped), so the padded image is
    never built (a dilation of 1000 pads by thousands of pixels). The adjoint adds
    each tap's weighted data back onto the same slices, which is ``Pᵀ`` too. One
    slice is one vectorized pass, so a long run answers signals between taps.
    """

    name = "taps"
    folds_padding = True

    def __init__(self, op) -> None:
        super().__init__(op)
        bank = self.kernel[:1, :1] if op.shared else self.kernel
        self.taps = [tuple(int(n) for n in t) for t in np.argwhere(bank)]
        self._runs: dict[tuple[int, int], list[tuple[slice, slice]]] = {}

    def _pieces(self, offsets: tuple[int, ...]):
        """``(output slices, image slices)`` pairs covering what tap ``offsets`` reads."""
        import itertools

        per_axis = [self._axis_runs(axis, a) for axis, a in enumerate(offsets)]
        for runs in itertools.product(*per_axis):
            yield tuple(r[0] for r in runs), tuple(r[1] for r in runs)

    def _axis_runs(self, axis: int, offset: int) -> list[tuple[slice, slice]]:
        """Along ``axis``, the image pixels tap ``offset`` reads for each output sample,
        as runs ``(output slice, image slice)`` of a constant step."""
        key = (axis, offset)
        if key not in self._runs:
            from deconv_cli.operators.padding import index_map

            n, stride = self.op.input_shape[axis], self.stride[axis]
            count = self.op.output_shape[axis]
            read = index_map(n, self.op.pads[axis], self.op.geometry.boundary)
            self._runs[key] = _runs(read[offset : offset + stride * (count - 1) + 1 : stride])
        return self._runs[key]

    def _channels(self, o: int, i: int) -> tuple[slice, slice]:
        """The output and input channels tap ``(o, i, …)`` connects: one each in a bank,
        all of them (alike) for a shared kernel."""
        if self.op.shared:
            return slice(None), slice(None)
        return slice(o, o + 1), slice(self.group_of(o) + i, self.group_of(o) + i + 1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(self.op.output_shape, dtype=x.dtype)
        for o, i, *offsets in self.taps:
            co, ci = self._channels(o, i)
            weight = self.kernel[(o, i, *offsets)]
            for to, source in self._pieces(tuple(offsets)):
                out[to + (co,)] += weight * x[source + (ci,)]
        return out

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        x = np.zeros(self.op.input_shape, dtype=y.dtype)
        for o, i, *offsets in self.taps:
            co, ci = self._channels(o, i)
            weight = self.kernel[(o, i, *offsets)]
            for source, to in self._pieces(tuple(offsets)):
                piece = y[source + (co,)]
                # a run reading one pixel (step 0): its adjoint sums the run
                repeated = tuple(axis for axis, t in enumerate(to) if t.step is None)
                if repeated:
                    piece = piece.sum(axis=repeated, keepdims=True)
                x[to + (ci,)] += weight * piece
        return x


def _runs(read: np.ndarray) -> list[tuple[slice, slice]]:
    """``read`` (image indices, ``-1`` for a zero) cut into maximal runs of a constant
    step: ``(positions in read, image slice)`` per run, zeros left out. A run reading
    one pixel again and again (step 0: the ``nearest`` border) has a one-pixel image
    slice, broadcast over the run."""
    runs = []
    start, n = 0, read.size
    while start < n:
        if read[start] < 0:
            start += 1
            continue
        stop = start + 1
        step = int(read[stop] - read[start]) if stop < n and read[stop] >= 0 else 0
        while stop < n and read[stop] >= 0 and read[stop] - read[stop - 1] == step:
            stop += 1
        first, last = int(read[start]), int(read[stop - 1])
        if step == 0:
            runs.append((slice(start, stop), slice(first, first + 1)))
        else:
            end = last + step
            runs.append((slice(start, stop), slice(first, None if end < 0 else end, step)))
        start = stop
    return runs


class _Separable(_Engine):
    """One 1-D pass per spatial axis for a rank-one shared kernel (gaussian, box)."""

    name = "separable"

    def __init__(self, op) -> None:
        super().__init__(op)
        self.factors = [f.astype(op.dtype) for f in separable_factors(op.effective[0, 0])]

    def forward(self, xp: np.ndarray) -> np.ndarray:
        for axis, (taps, s) in enumerate(zip(self.factors, self.stride, strict=True)):
            xp = _stride_axis(_valid1d(xp, taps, axis), axis, s)
        return xp

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        for axis in reversed(range(self.d)):
            shape = list(y.shape)
            shape[axis] = self.op.stride1_shape[axis]
            up = np.zeros(shape, dtype=y.dtype)
            index = [slice(None)] * y.ndim
            index[axis] = slice(None, None, self.stride[axis])
            up[tuple(index)] = y
            y = _full1d(up, self.factors[axis], axis)
        return y


def _stride_axis(a: np.ndarray, axis: int, s: int) -> np.ndarray:
    index = [slice(None)] * a.ndim
    index[axis] = slice(None, None, s)
    return a[tuple(index)]


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
    """One 1-D factor per axis, whose outer product is ``kernel`` to ``rtol``, or ``None``.

    A rank-one tensor is the outer product of its fibres through any nonzero entry,
    divided by that entry to the power ``ndim − 1``; the largest entry is the best
    conditioned. (An SVD would cost seconds for the kernels of thousands of taps a
    user may give.) For a matrix: ``(column, row)``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    pivot_index = np.unravel_index(int(np.argmax(np.abs(kernel))), kernel.shape)
    pivot = float(kernel[pivot_index])
    if pivot == 0.0:
        return tuple(np.zeros(n) for n in kernel.shape)
    d = kernel.ndim
    scale = abs(pivot) ** ((d - 1) / d)
    factors = []
    for axis in range(d):
        index = list(pivot_index)
        index[axis] = slice(None)
        factors.append(kernel[tuple(index)] / scale)
    if pivot < 0 and d % 2 == 0:
        factors[-1] = -factors[-1]
    product = factors[0]
    for f in factors[1:]:
        product = np.multiply.outer(product, f)
    if np.max(np.abs(product - kernel)) > rtol * abs(pivot):
        return None
    return tuple(factors)


class _FFT(_Engine):
    """Real N-D FFTs of a fast padded length; the kernel spectrum is computed once.

    The array functions come from the input's namespace (the array API: ``fft``,
    ``matmul``, indexing), ``scipy.fft`` with :func:`fft_workers` threads for numpy.
    """

    name = "fft"
    any_namespace = True

    def __init__(self, op) -> None:
        super().__init__(op)
        self.size = tuple(fast_length(n) for n in op.padded_shape)
        self.axes = tuple(range(self.d))
        self._spectra: dict[str, tuple] = {}

    @cached_property
    def spectrum(self) -> np.ndarray:
        """The bank's spectrum at the padded size, ``(*freq, groups, C_out/g, C_in/g)``;
        ``(*freq, 1)`` (broadcast over channels) for a shared kernel.

        A short rfft along the last axis, then full ffts along the others: the kernel
        is small, so this costs about half of one image-sized transform.
        """
        import scipy.fft

        bank = self.kernel[:1, :1] if self.op.shared else self.kernel
        last = bank.ndim - 1
        spec = scipy.fft.rfft(bank, n=self.size[-1], axis=last, workers=fft_workers())
        for axis in range(self.d - 1):
            spec = scipy.fft.fft(spec, n=self.size[axis], axis=2 + axis, workers=fft_workers())
        spec = np.moveaxis(spec, (0, 1), (-2, -1))
        if self.op.shared:
            return np.ascontiguousarray(spec[..., 0])
        return np.ascontiguousarray(spec.reshape(spec.shape[:-2] + (-1, self.cog, self.cig)))

    def _kernels(self, xp):
        """``(spectrum, its conjugate)`` as arrays of ``xp``."""
        key = xp.__name__
        if key not in self._spectra:
            spectrum = self.spectrum
            self._spectra[key] = (xp.asarray(spectrum), xp.asarray(spectrum.conj()))
        return self._spectra[key]

    def _transforms(self, xp):
        """``(rfftn, irfftn)`` over the spatial axes at the padded size."""
        if xp is np:
            import scipy.fft

            fft = partial(scipy.fft.rfftn, workers=fft_workers())
            ifft = partial(scipy.fft.irfftn, workers=fft_workers())
        else:
            fft, ifft = xp.fft.rfftn, xp.fft.irfftn
        return partial(fft, s=self.size, axes=self.axes), partial(ifft, s=self.size, axes=self.axes)

    def _multiply(self, xp, spec, kernel, adjoint: bool):
        """The product of a spectrum ``(*freq, C)`` by the kernel's, per frequency."""
        if self.op.shared:
            spec *= kernel
            return spec
        groups = self.op.groups
        head = tuple(spec.shape[:-1])
        if adjoint:  # Σ_o y_o K_oi
            grouped = xp.reshape(spec, head + (groups, self.cog, 1))
            out = xp.matmul(xp.matrix_transpose(kernel), grouped)
        else:  # Σ_i K_oi x_i
            grouped = xp.reshape(spec, head + (groups, self.cig, 1))
            out = xp.matmul(kernel, grouped)
        return xp.reshape(out, head + (-1,))

    def forward(self, xp_: np.ndarray) -> np.ndarray:
        xp = namespace(xp_)
        fft, ifft = self._transforms(xp)
        _, conjugate = self._kernels(xp)
        # a correlation multiplies by the conjugate kernel spectrum
        out = ifft(self._multiply(xp, fft(xp_), conjugate, adjoint=False))
        return out[_strided(self.op.stride1_shape, self.stride)]

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        xp = namespace(y)
        fft, ifft = self._transforms(xp)
        spectrum, _ = self._kernels(xp)
        out = ifft(self._multiply(xp, fft(self.upsample(y)), spectrum, adjoint=True))
        return out[tuple(slice(0, n) for n in self.op.padded_shape) + (Ellipsis,)]


_ENGINE_CLASSES = {"direct": _Direct, "taps": _Taps, "separable": _Separable, "fft": _FFT}


def make_engine(name: str, op) -> _Engine:
    """The engine ``name`` (``auto``: the cheapest by :func:`engine_costs`) for ``op``."""
    if name not in ENGINES:
        raise choice_error(GeometryError, "engine", name, ENGINES)
    separable = op.shared and separable_factors(op.effective[0, 0]) is not None
    if name == "auto":
        bank = op.effective[:1, :1] if op.shared else op.effective
        co, ci = op.output_shape[-1], op.input_shape[-1]
        costs = engine_costs(
            extent=op.effective.shape[2:],
            taps=int(np.count_nonzero(bank)),
            padded=op.padded_shape,
            outputs=math.prod(op.output_shape[:-1]),
            transforms=2 if op.shared else co + ci,
            separable=separable,
            dtype=op.dtype,
        )
        name = min(costs, key=costs.get)
    elif name == "separable" and not separable:
        raise GeometryError("engine `separable` needs a rank-one kernel applied to every channel")
    return _ENGINE_CLASSES[name](op)
