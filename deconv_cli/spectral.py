"""Fast diagonalizations of a convolution operator, its null space, and noise amplification.

Two geometries make ``A`` diagonal in a fast orthogonal basis; which one (if any) is
decided by :func:`deconv_cli.operators.diagonal_basis` (the maths is there):

- ``--boundary wrap``, ``same`` mode, stride 1, no padding, one kernel (any size,
  dilation allowed): ``A`` is circulant, ``A = F⁻¹ diag(λ) F`` with ``F`` the N-D DFT
  and ``λ = F(A e₀)`` the transform of its first column (the response to a delta at
  the origin).
- ``--boundary reflect`` (half-sample symmetric, Neumann), same conditions, a kernel
  with odd sides that is symmetric about each axis: ``A = Cᵀ diag(λ) C`` with ``C`` the
  orthonormal N-D DCT-II, and ``λ = C(A e₀) / C(e₀)``.

The operator has 1, 2 or 3 spatial axes (those of its
:class:`~deconv_cli.operators.Convolution`); arrays are in its layout, ``*spatial``
or ``*spatial × C``.

A kernel bank qualifies when it applies one kernel to every channel alike, mixing
none (:func:`deconv_cli.operators.geometry.shared_kernel`: a depthwise bank of one
kernel, a ``C × C`` diagonal bank): ``A = I_C ⊗ A_1``, and the one diagonal acts on
each channel. In both cases ``A`` is normal, so its singular values are ``|λ|``.
Everything else (other boundaries, ``full``/``valid`` modes, strides, padding, banks
that mix channels or differ between them) returns ``None`` from :func:`diagonalize`;
:func:`deconv_cli.analysis.null_space` has the null space of every operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from deconv_cli.errors import mention
from deconv_cli.operators import (
    ConvOperator,
    Geometry,
    diagonal_basis,
    fft_workers,
    is_symmetric_kernel,
)
from deconv_cli.operators.geometry import axis_pads
from deconv_cli.operators.grid import convolution_of, one_kernel

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class Diagonal:
    """``A = T⁻¹ diag(eigenvalues) T`` for an orthogonal fast transform ``T``.

    Attributes
    ----------
    kind : {"fft", "dct"}
        ``fft``: ``T`` is ``scipy.fft.rfftn`` over the spatial axes (unnormalized,
        half spectrum along the last); ``dct``: ``T`` is
        ``scipy.fft.dctn(type=2, norm="ortho")``.
    shape : tuple of int
        The spatial shape of the images it acts on (1 to 3 axes).
    eigenvalues : ndarray
        In the layout of :meth:`transform`'s output: ``*shape[:-1] × (shape[-1]//2+1)``
        for ``fft`` (complex; real for a symmetric kernel centred on the pixel),
        ``shape`` real for ``dct``; broadcast over channels.
    weights : ndarray
        How many of the ``prod(shape)`` eigenvalues each entry stands for (an ``rfft``
        entry other than 0 and ``N/2`` along the last axis also stands for its
        conjugate), shape ``1 × … × (shape[-1]//2+1)`` or ``1 × … × 1``; broadcast to
        the eigenvalues' shape, they sum to ``prod(shape)``.
    scale : float
        ``‖x‖² = scale · Σ weights·|T x|²`` (Parseval): ``1/prod(shape)`` or 1.
    """

    kind: str
    shape: tuple[int, ...]
    eigenvalues: np.ndarray
    weights: np.ndarray
    scale: float

    @property
    def ndim(self) -> int:
        """The number of spatial axes."""
        return len(self.shape)

    def block(self, columns: slice) -> tuple:
        """The index of a block of the last spatial axis (every other spatial axis whole)."""
        return (slice(None),) * (self.ndim - 1) + (columns,)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``T x`` over the spatial axes of a ``*shape`` or ``*shape × C`` array."""
        return self.transform_columns(self.transform_rows(x))

    def inverse_transform(self, coefficients: np.ndarray) -> np.ndarray:
        """``T⁻¹ X``: back to a real array of the images' layout."""
        return self.inverse_rows(self.transform_columns(coefficients, inverse=True))

    def apply(self, x: np.ndarray, filter: np.ndarray) -> np.ndarray:
        """``T⁻¹ (filter · T x)``; ``filter`` in the eigenvalues' layout, broadcast over channels.

        ``apply(x, eigenvalues)`` is ``A x``.
        """
        if np.iscomplexobj(filter) and self.kind == "dct":
            filter = filter.real
        rows = self.transform_rows(x)
        cast = filter.astype(rows.dtype, copy=False)
        self.filter_columns(rows, lambda columns: cast[self.block(columns)])
        return self.inverse_rows(rows)

    # The N-D transform is a 1-D transform along the last spatial axis (the "rows")
    # then one along each other spatial axis (the "columns"). Filtering blocks of the
    # last axis between the two column passes keeps each block in cache: about the
    # cost of the transforms alone.

    def transform_rows(self, x: np.ndarray) -> np.ndarray:
        """The 1-D transform along the last spatial axis (``rfft`` or DCT-II)."""
        import scipy.fft

        axis = self.ndim - 1
        if self.kind == "fft":
            return scipy.fft.rfft(x, axis=axis, workers=fft_workers())
        return scipy.fft.dct(x, type=2, norm="ortho", axis=axis, workers=fft_workers())

    def transform_columns(self, rows: np.ndarray, *, inverse: bool = False) -> np.ndarray:
        """The transform (or its inverse) along the other spatial axes, into a new array."""
        import scipy.fft

        axes = tuple(range(self.ndim - 1))
        if not axes:
            return rows.copy()
        if self.kind == "fft":
            transform = scipy.fft.ifftn if inverse else scipy.fft.fftn
            return transform(rows, axes=axes, workers=fft_workers())
        transform = scipy.fft.idctn if inverse else scipy.fft.dctn
        return transform(rows, type=2, norm="ortho", axes=axes, workers=fft_workers())

    def inverse_rows(self, rows: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`transform_rows`: a real array of the images' layout."""
        import scipy.fft

        axis = self.ndim - 1
        if self.kind == "fft":
            return scipy.fft.irfft(rows, n=self.shape[-1], axis=axis, workers=fft_workers())
        return scipy.fft.idct(rows, type=2, norm="ortho", axis=axis, workers=fft_workers())

    def filter_columns(self, rows: np.ndarray, filter_block) -> None:
        """In place on ``rows = transform_rows(x)``: each block of the last spatial axis is
        transformed, multiplied by ``filter_block(columns)`` (a block of the eigenvalues'
        layout, broadcast over channels), and transformed back; then
        ``inverse_rows(rows)`` is ``T⁻¹(filter · T x)``."""
        d = self.ndim
        itemsize = rows.itemsize * (rows.shape[d] if rows.ndim > d else 1)
        width = max(8, (1 << 21) // max(1, math.prod(rows.shape[: d - 1]) * itemsize))
        for start in range(0, rows.shape[d - 1], width):
            columns = slice(start, start + width)
            index = self.block(columns)
            block = self.transform_columns(rows[index])
            block *= _broadcast(filter_block(columns), block)
            rows[index] = self.transform_columns(block, inverse=True)

    def laplacian(self) -> np.ndarray:
        """Eigenvalues of the discrete Laplacian (``2d + 1`` points) with this basis'
        boundary (wrap or reflect).

        ``-Σ_a 4 sin²(π k_a / P_a)`` with ``P_a`` the axis' length (periodic) or twice
        it (half-sample symmetric, DCT-II), real, in the eigenvalues' layout.
        """
        return -self.laplacian_at((slice(None),) * self.ndim)

    @cached_property
    def laplacian_axes(self) -> tuple[np.ndarray, ...]:
        """``4 sin²(π k / P)`` per spatial axis: :meth:`laplacian` is minus their outer sum.

        Computed once: the closed forms read them for every block of columns."""
        axes = []
        for a, n in enumerate(self.shape):
            if self.kind == "fft":
                k = np.arange(n // 2 + 1 if a == self.ndim - 1 else n)
                period = n
            else:
                k, period = np.arange(n), 2 * n
            axes.append(4 * np.sin(np.pi * k / period) ** 2)
        return tuple(axes)

    def laplacian_at(self, index: tuple, dtype=np.float64) -> np.ndarray:
        """``Σ_a 4 sin²(π k_a / P_a)`` on the open mesh ``index`` (one slice or index
        array per spatial axis), each axis' terms in ``dtype``."""
        total = None
        for a, (terms, ix) in enumerate(zip(self.laplacian_axes, index, strict=True)):
            values = terms.astype(dtype)[ix]
            values = values.reshape((1,) * a + (-1,) + (1,) * (self.ndim - a - 1))
            total = values if total is None else total + values
        return total

    def energy(self, coefficients: np.ndarray) -> np.ndarray:
        """Per-entry energy ``scale·weights·|X|²``, summed over channels (sums to ``‖x‖²``)."""
        power = coefficients.real**2
        if np.iscomplexobj(coefficients):
            power += coefficients.imag**2
        if power.ndim > self.ndim:
            power = power.sum(axis=-1)
        power *= self.weights * self.scale
        return power

    def frequency(self, index: tuple[int, ...]) -> str:
        """Human-readable frequency of an eigenvalue index."""
        if self.kind == "fft":
            names = ("fz", "fy", "fx")[3 - self.ndim :]
            values = [
                i / n if i <= n // 2 or a == self.ndim - 1 else i / n - 1
                for a, (i, n) in enumerate(zip(index, self.shape, strict=True))
            ]
            text = ", ".join(f"{v:.4g}" for v in values)
            return f"({', '.join(names)}) = ({text}) cycles/pixel"
        names = ("k", "l", "m")[: self.ndim]
        return f"DCT index ({', '.join(names)}) = ({', '.join(str(i) for i in index)})"


def _broadcast(filter: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    return filter[..., None] if coefficients.ndim == filter.ndim + 1 else filter


def diagonalize(op: ConvOperator, *, dtype=None) -> Diagonal | None:
    """The fast diagonalization of ``op``, or ``None`` where no fast transform diagonalizes it.

    Parameters
    ----------
    op : ConvOperator or Convolution
    dtype : numpy dtype, optional
        Precision of the eigenvalues (default: ``op.dtype``); use float64 to count
        vanishing eigenvalues of a float32 operator.

    Returns
    -------
    Diagonal or None
        In the basis :func:`deconv_cli.operators.diagonal_basis` names, with the
        eigenvalues computed from the operator's response to a delta; else ``None``.
    """
    basis = diagonal_basis(op)
    if basis is None:
        return None
    dtype = np.dtype(op.dtype if dtype is None else dtype)
    spatial = convolution_of(op).input_shape[:-1]
    return _diagonal(basis, op.effective[0, 0], spatial, op.pads, op.geometry.boundary, dtype)


def same_mode(op: ConvOperator, boundary: str, shape: tuple[int, ...], *, dtype=None) -> Diagonal:
    """The diagonalization of ``op``'s kernel (its correlation and dilation) in ``same``
    mode, stride 1, on images of spatial ``shape``: ``wrap`` (FFT), or ``reflect`` (DCT,
    for a kernel :func:`~deconv_cli.operators.is_symmetric_kernel`)."""
    kernel = op.effective[0, 0]
    geometry = Geometry(mode="same", boundary=boundary, correlate=op.geometry.correlate)
    pads = tuple(axis_pads(k, geometry, None) for k in kernel.shape)
    dtype = np.dtype(op.dtype if dtype is None else dtype)
    basis = "fft" if boundary == "wrap" else "dct"
    return _diagonal(basis, kernel, tuple(shape), pads, boundary, dtype)


def _diagonal(basis, kernel, shape, pads, boundary, dtype) -> Diagonal:
    pairs = _delta_taps(kernel.shape, shape, pads, boundary)
    if basis == "fft":
        return _fft_diagonal(kernel, shape, pairs, dtype)
    return _dct_diagonal(kernel, shape, pairs, dtype)


def _fft_diagonal(kernel: np.ndarray, shape, pairs, dtype: np.dtype) -> Diagonal:
    """Eigenvalues = rfftn of ``A e₀`` (:func:`_delta_taps`), the transfer function."""
    import scipy.fft

    d, w = len(shape), shape[-1]
    real = np.float32 if dtype == np.float32 else np.float64
    # An odd kernel symmetric about each axis is centred by `same` mode: A e₀ is even
    # and the transfer function real; keeping it real makes the filters cheaper
    # (real arithmetic, half the memory).
    symmetric = is_symmetric_kernel(kernel)
    if d == 2:
        (rows, taps_r), (cols, taps_c) = pairs
        left, right = _low_rank(kernel)
    if d == 2 and left.shape[1] <= _LOW_RANK_LIMIT:
        # A e₀ = (E_H left)(E_W rightᵀ)ᵀ, so the transform is (fft of E_H left) @ (rfft
        # of E_W rightᵀ)ᵀ: a product with a small inner size.
        h = shape[0]
        col, row = np.zeros((h, left.shape[1])), np.zeros((w, left.shape[1]))
        np.add.at(col, rows, left[taps_r])
        np.add.at(row, cols, right.T[taps_c])
        left = scipy.fft.fft(col.astype(real), axis=0)
        right = scipy.fft.rfft(row.astype(real), axis=0).T
        if symmetric:  # the imaginary parts are rounding
            left, right = np.ascontiguousarray(left.real), np.ascontiguousarray(right.real)
        eigenvalues = _product(left, right)
    else:
        samples, taps = zip(*pairs, strict=True)
        column = np.zeros(shape, dtype=np.float64)
        np.add.at(column, np.ix_(*samples), kernel[np.ix_(*taps)])
        if d == 1:
            eigenvalues = scipy.fft.rfft(column.astype(real), workers=fft_workers())
        else:
            # only the slabs of the first axis that A e₀ reaches are transformed at first
            nonzero = np.unique(samples[0])
            half = scipy.fft.rfft(column[nonzero].astype(real), axis=d - 1, workers=fft_workers())
            for axis in range(1, d - 1):
                half = scipy.fft.fft(half, axis=axis, overwrite_x=True, workers=fft_workers())
            spectrum = np.zeros(shape[:-1] + (w // 2 + 1,), dtype=half.dtype)
            spectrum[nonzero] = half
            eigenvalues = scipy.fft.fft(spectrum, axis=0, overwrite_x=True, workers=fft_workers())
        if symmetric:
            eigenvalues = np.ascontiguousarray(eigenvalues.real)
    weights = np.full((1,) * (d - 1) + (w // 2 + 1,), 2.0)
    weights[..., 0] = 1.0
    if w % 2 == 0:
        weights[..., -1] = 1.0
    return Diagonal("fft", tuple(shape), eigenvalues, weights, 1.0 / math.prod(shape))


def _dct_diagonal(kernel: np.ndarray, shape, pairs, dtype: np.dtype) -> Diagonal:
    """Eigenvalues = ``C(A e₀) / C(e₀)``, ``C`` the orthonormal DCT-II, ``e₀`` the corner delta.

    ``A e₀`` (:func:`_delta_taps`) is non-zero only within the kernel's reach of the
    corner ``R``: per axis, ``λ`` is ``R`` multiplied by a few columns of ``C`` divided
    by ``C e₀`` (in 2-D ``C_H R C_Wᵀ / (d_H d_Wᵀ)``: two small matrix products, through
    ``R``'s low rank, instead of two full-size DCTs).
    """
    samples, taps = zip(*pairs, strict=True)
    # The reflection folds the kernel onto the corner: about half its size per axis.
    corner = np.zeros(tuple(int(s.max()) + 1 for s in samples))
    np.add.at(corner, np.ix_(*samples), kernel[np.ix_(*taps)])
    factors = [
        _dct_columns(n, c) / _dct_of_delta(n)[:, None]
        for n, c in zip(shape, corner.shape, strict=True)
    ]
    real = np.float32 if dtype == np.float32 else np.float64
    if len(shape) == 2:
        u, v = _low_rank(corner)
        left, right = factors
        transformed = _product((left @ u).astype(real), (v @ right.T).astype(real))
    else:
        transformed = corner
        for factor in factors:  # contract the leading axis; the new one goes last
            transformed = np.tensordot(transformed, factor, axes=([0], [1]))
        transformed = transformed.astype(real)
    return Diagonal("dct", tuple(shape), transformed, np.ones((1,) * len(shape)), 1.0)


def _delta_taps(kernel_shape, shape, pads, boundary) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Where the taps of ``A e₀`` land, per axis: ``(samples, taps)`` index pairs.

    ``A = V P`` in ``same`` mode, stride 1, with ``(V z)[i] = Σ_a k[a] z[i + a]`` on
    each axis. ``P e₀`` is 1 at the padded positions ``q`` that the operator's padding
    map (:func:`deconv_cli.operators.padding.index_map`) sends to pixel 0, so ``A e₀``
    is ``k`` multiplied along each axis by ``E[i, a] = [map(i + a) = 0]``: tap ``a``
    adds ``k[a]`` at each sample ``i`` of a pair. Exact (sums of the kernel's values),
    so a box filter's zeros of the transfer function stay exact zeros.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    from deconv_cli.operators.padding import index_map

    pairs = []
    for n, axis_pads_, k in zip(shape, pads, kernel_shape, strict=True):
        source = index_map(n, axis_pads_, boundary)
        pairs.append(np.nonzero(sliding_window_view(source, k)[:n] == 0))
    return tuple(pairs)


def _product(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ right`` for a small inner size. Real factors go through ``einsum``, as
    fast as BLAS on one thread, whose threads stall (4x slower here) when another
    process holds a core; ``einsum`` is slow for complex factors, which keep BLAS."""
    if np.iscomplexobj(left) or np.iscomplexobj(right):
        return left @ right
    return np.einsum("ir,rj->ij", left, right)


_LOW_RANK_LIMIT = 32
"""Above this kernel rank a column FFT builds the FFT eigenvalues faster than a product."""


def _low_rank(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` with ``left @ right == matrix`` and inner size its numerical rank.

    The rank counts singular values above ``max(m, n) · eps · σ_max`` (numpy's rule).
    A symmetric kernel of side ``k`` has rank at most ``(k + 1) / 2``; a gaussian, 1.
    """
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    rank = max(1, int(np.count_nonzero(s > s[0] * max(matrix.shape) * _EPS)))
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def _dct_columns(n: int, count: int) -> np.ndarray:
    """The first ``count`` columns of the orthonormal DCT-II matrix of size ``n``."""
    k = np.arange(n)[:, None]
    f = np.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return f * np.cos(np.pi * k * (2 * np.arange(count)[None, :] + 1) / (2 * n))


def _dct_of_delta(n: int) -> np.ndarray:
    """Orthonormal DCT-II of ``e₀``: ``f_k cos(π k / 2n)``, never zero."""
    k = np.arange(n)
    f = np.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return f * np.cos(np.pi * k / (2 * n))


def approximate(op: ConvOperator, *, dtype=None) -> Diagonal | None:
    """A diagonalizable stand-in for ``op`` on its input grid (for preconditioners).

    The same kernel, correlation and dilation in ``same`` mode on the input's spatial
    shape: reflect (DCT) for a symmetric kernel, wrap (FFT) otherwise. ``None`` for
    banks that mix channels (or differ between them) and strides, which have no such
    stand-in.
    """
    exact = diagonalize(op, dtype=dtype)
    if exact is not None:
        return exact
    core = convolution_of(op)
    if not one_kernel(op) or any(s != 1 for s in core.stride):
        return None
    boundary = "reflect" if is_symmetric_kernel(op.effective[0, 0]) else "wrap"
    return same_mode(op, boundary, core.input_shape[:-1], dtype=dtype)


# -- null space -----------------------------------------------------------------


def rank_tolerance(op: ConvOperator) -> float:
    """``max(m, n) · eps``: numpy's ``matrix_rank`` rule, relative to ``σ_max``."""
    return max(op.shape) * _EPS


# -- noise amplification ----------------------------------------------------------


def quantization_sigma(bits: int) -> float:
    """Standard deviation of rounding to ``bits``-bit integers on the [0, 1] scale: ``q/√12``."""
    return 1.0 / ((2**bits - 1) * math.sqrt(12))


def inverse_amplification(op: ConvOperator) -> float | None:
    """RMS error of the exact inverse per unit of white noise in the data.

    ``sqrt(mean(1/|λ|²))`` over the eigenvalues (``inf`` if one vanishes): the RMSE
    of ``A⁻¹ e`` for white noise ``e`` of unit standard deviation. Exact where
    :func:`diagonalize` applies; for other stride-1 single-kernel operators, the
    same quantity for the :func:`approximate` stand-in (a good guide: boundary
    effects change few eigenvalues). ``None`` for banks that mix channels and strides.
    """
    diagonal = diagonalize(op, dtype=np.float64)
    if diagonal is None:
        diagonal = approximate(op, dtype=np.float64)
        if diagonal is None:
            return None
    magnitude = np.abs(diagonal.eigenvalues).astype(np.float64)
    weights = np.broadcast_to(diagonal.weights, magnitude.shape)
    if not np.all(magnitude > 0):
        return math.inf
    mean = float(np.sum(weights / magnitude**2)) / math.prod(diagonal.shape)
    return math.sqrt(mean)


def predicted_inverse_rmse(op: ConvOperator, noise_sigma: float) -> float | None:
    """Predicted RMSE of the exact inverse on data with white noise of std ``noise_sigma``.

    ``noise_sigma · inverse_amplification(op)``; for quantized data use
    :func:`quantization_sigma` (8 bits: σ ≈ 0.0011). ``None`` where the
    amplification is unknown.
    """
    amplification = inverse_amplification(op)
    return None if amplification is None else noise_sigma * amplification


def amplification_note(
    op: ConvOperator, noise_sigma: float, *, source: str = "noise", threshold: float = 1e-3
) -> str | None:
    """A one-line warning when the exact inverse would amplify the data's noise past use.

    Parameters
    ----------
    op : ConvOperator
    noise_sigma : float
        Standard deviation of the noise (or quantization error) in the data.
    source : str
        What the noise is, for the message (``"8-bit quantization noise"``).
    threshold : float
        Warn when the predicted RMSE reaches this (default 1e-3, PSNR 60 dB on [0, 1])
        and the inverse amplifies the noise at least twofold.

    Returns
    -------
    str or None
        E.g. ``"8-bit quantization noise (σ≈0.0011) is amplified ≈3.2e+02× by the
        exact inverse: expect RMSE ≈ 0.36; consider --method tikhonov"``.
    """
    amplification = inverse_amplification(op)
    if amplification is None or noise_sigma <= 0:
        return None
    rmse = noise_sigma * amplification
    if rmse < threshold or amplification < 2:
        return None
    if math.isinf(amplification):
        return (
            f"{source} (σ≈{noise_sigma:.2g}) is amplified without bound: the operator has "
            f"a null space; consider {mention('method', 'tikhonov')}"
        )
    advice = f"; consider {mention('method', 'tikhonov')}" if rmse >= 0.01 else ""
    return (
        f"{source} (σ≈{noise_sigma:.2g}) is amplified ≈{amplification:.1e}× by the exact "
        f"inverse: expect RMSE ≈ {rmse:.2g}{advice}"
    )
