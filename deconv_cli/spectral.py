"""Fast diagonalizations of a convolution operator, its null space, and noise amplification.

Two geometries make ``A`` diagonal in a fast orthogonal basis; which one (if any) is
decided by :func:`deconv_cli.operators.diagonal_basis` (the maths is there):

- ``--boundary wrap``, ``same`` mode, stride 1, no padding, one 2-D kernel (any size,
  dilation allowed): ``A`` is circulant, ``A = F⁻¹ diag(λ) F`` with ``F`` the 2-D DFT
  and ``λ = F(A e₀)`` the transform of its first column (the response to a delta at
  ``(0, 0)``).
- ``--boundary reflect`` (half-sample symmetric, Neumann), same conditions, a kernel
  with odd sides that is symmetric about both axes: ``A = Cᵀ diag(λ) C`` with ``C`` the
  orthonormal DCT-II, and ``λ = C(A e₀) / C(e₀)``.

In both cases ``A`` is normal, so its singular values are ``|λ|``. Everything else
(other boundaries, ``full``/``valid`` modes, strides, padding, kernel banks) returns
``None`` from :func:`diagonalize`; :func:`deconv_cli.analysis.null_space` has the
null space of every operator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deconv_cli.operators import (
    ConvOperator,
    Geometry,
    diagonal_basis,
    fft_workers,
    is_symmetric_kernel,
)

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class Diagonal:
    """``A = T⁻¹ diag(eigenvalues) T`` for an orthogonal fast transform ``T``.

    Attributes
    ----------
    kind : {"fft", "dct"}
        ``fft``: ``T`` is ``scipy.fft.rfft2`` (unnormalized, half spectrum);
        ``dct``: ``T`` is ``scipy.fft.dctn(type=2, norm="ortho")``.
    shape : (H, W)
        The spatial shape of the images it acts on.
    eigenvalues : ndarray
        In the layout of :meth:`transform`'s output: ``H×(W//2+1)`` for ``fft``
        (complex; real for a symmetric kernel centred on the pixel), ``H×W`` real for
        ``dct``; broadcast over channels.
    weights : ndarray
        How many of the ``H·W`` eigenvalues each entry stands for (an ``rfft2``
        column other than 0 and ``W/2`` also stands for its conjugate), shape
        ``1×(W//2+1)`` or ``1×1``; broadcast to the eigenvalues' shape, they sum
        to ``H·W``.
    scale : float
        ``‖x‖² = scale · Σ weights·|T x|²`` (Parseval): ``1/(H·W)`` or 1.
    """

    kind: str
    shape: tuple[int, int]
    eigenvalues: np.ndarray
    weights: np.ndarray
    scale: float

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``T x`` over the two spatial axes of an ``H×W`` or ``H×W×C`` array."""
        return self.transform_columns(self.transform_rows(x))

    def inverse_transform(self, coefficients: np.ndarray) -> np.ndarray:
        """``T⁻¹ X``: back to an ``H×W[×C]`` real array."""
        return self.inverse_rows(self.transform_columns(coefficients, inverse=True))

    def apply(self, x: np.ndarray, filter: np.ndarray) -> np.ndarray:
        """``T⁻¹ (filter · T x)``; ``filter`` in the eigenvalues' layout, broadcast over channels.

        ``apply(x, eigenvalues)`` is ``A x``.
        """
        if np.iscomplexobj(filter) and self.kind == "dct":
            filter = filter.real
        rows = self.transform_rows(x)
        cast = filter.astype(rows.dtype, copy=False)
        self.filter_columns(rows, lambda columns: cast[:, columns])
        return self.inverse_rows(rows)

    # The 2-D transform is a 1-D transform along the rows (axis 1) then one down the
    # columns (axis 0). Filtering column blocks between the two column passes keeps
    # each block in cache: about the cost of the transforms alone.

    def transform_rows(self, x: np.ndarray) -> np.ndarray:
        """The 1-D transform along axis 1 (``rfft`` or DCT-II)."""
        import scipy.fft

        if self.kind == "fft":
            return scipy.fft.rfft(x, axis=1, workers=fft_workers())
        return scipy.fft.dct(x, type=2, norm="ortho", axis=1, workers=fft_workers())

    def transform_columns(self, rows: np.ndarray, *, inverse: bool = False) -> np.ndarray:
        """The 1-D transform (or its inverse) along axis 0, into a new array."""
        import scipy.fft

        if self.kind == "fft":
            transform = scipy.fft.ifft if inverse else scipy.fft.fft
            return transform(rows, axis=0, workers=fft_workers())
        transform = scipy.fft.idct if inverse else scipy.fft.dct
        return transform(rows, type=2, norm="ortho", axis=0, workers=fft_workers())

    def inverse_rows(self, rows: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`transform_rows`: a real ``H×W[×C]`` array."""
        import scipy.fft

        if self.kind == "fft":
            return scipy.fft.irfft(rows, n=self.shape[1], axis=1, workers=fft_workers())
        return scipy.fft.idct(rows, type=2, norm="ortho", axis=1, workers=fft_workers())

    def filter_columns(self, rows: np.ndarray, filter_block) -> None:
        """In place on ``rows = transform_rows(x)``: each column block is transformed,
        multiplied by ``filter_block(columns)`` (a slice of the eigenvalues' layout,
        broadcast over channels), and transformed back; then ``inverse_rows(rows)``
        is ``T⁻¹(filter · T x)``."""
        itemsize = rows.itemsize * (rows.shape[2] if rows.ndim == 3 else 1)
        width = max(8, (1 << 21) // max(1, rows.shape[0] * itemsize))
        for start in range(0, rows.shape[1], width):
            columns = slice(start, start + width)
            block = self.transform_columns(rows[:, columns])
            block *= _broadcast(filter_block(columns), block)
            rows[:, columns] = self.transform_columns(block, inverse=True)

    def laplacian(self) -> np.ndarray:
        """Eigenvalues of the 5-point Laplacian with this basis' boundary (wrap or reflect).

        ``-(4 sin²(π k / P) + 4 sin²(π l / Q))`` with ``P, Q = H, W`` (periodic) or
        ``2H, 2W`` (half-sample symmetric, DCT-II), real, in the eigenvalues' layout.
        """
        wy, wx = self.laplacian_axes()
        return -(wy[:, None] + wx[None, :])

    def laplacian_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(4 sin²(π k / P), 4 sin²(π l / Q))``: :meth:`laplacian` is minus their outer sum."""
        h, w = self.shape
        if self.kind == "fft":
            ky, kx, period = np.arange(h), np.arange(w // 2 + 1), (h, w)
        else:
            ky, kx, period = np.arange(h), np.arange(w), (2 * h, 2 * w)
        wy = 4 * np.sin(np.pi * ky / period[0]) ** 2
        wx = 4 * np.sin(np.pi * kx / period[1]) ** 2
        return wy, wx

    def energy(self, coefficients: np.ndarray) -> np.ndarray:
        """Per-entry energy ``scale·weights·|X|²``, summed over channels (sums to ``‖x‖²``)."""
        power = coefficients.real**2
        if np.iscomplexobj(coefficients):
            power += coefficients.imag**2
        if power.ndim == 3:
            power = power.sum(axis=2)
        power *= self.weights * self.scale
        return power

    def frequency(self, index: tuple[int, int]) -> str:
        """Human-readable frequency of an eigenvalue index."""
        h, w = self.shape
        if self.kind == "fft":
            fy = index[0] / h if index[0] <= h // 2 else index[0] / h - 1
            return f"(fy, fx) = ({fy:.4g}, {index[1] / w:.4g}) cycles/pixel"
        return f"DCT index (k, l) = ({index[0]}, {index[1]})"


def _broadcast(filter: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    return filter[..., None] if coefficients.ndim == 3 and filter.ndim == 2 else filter


def _single_kernel(op: ConvOperator) -> np.ndarray | None:
    """The effective 2-D kernel when ``op`` applies one kernel to every channel."""
    if op.effective.shape[:2] != (1, 1):
        return None
    return op.effective[0, 0]


def diagonalize(op: ConvOperator, *, dtype=None) -> Diagonal | None:
    """The fast diagonalization of ``op``, or ``None`` where no fast transform diagonalizes it.

    Parameters
    ----------
    op : ConvOperator
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
    return _fft_diagonal(op, dtype) if basis == "fft" else _dct_diagonal(op, dtype)


def _fft_diagonal(op: ConvOperator, dtype: np.dtype) -> Diagonal:
    """Eigenvalues = rfft2 of ``A e₀`` (:func:`_delta_taps`), the transfer function."""
    import scipy.fft

    h, w = op.input_shape[:2]
    (rows, taps_r), (cols, taps_c) = _delta_taps(op)
    kernel = op.effective[0, 0]
    real = np.float32 if dtype == np.float32 else np.float64
    # An odd kernel symmetric about each axis is centred by `same` mode: A e₀ is even
    # and the transfer function real; keeping it real makes the filters cheaper
    # (real arithmetic, half the memory).
    symmetric = is_symmetric_kernel(kernel)
    left, right = _low_rank(kernel)
    if left.shape[1] <= _LOW_RANK_LIMIT:
        # A e₀ = (E_H left)(E_W rightᵀ)ᵀ, so the transform is (fft of E_H left) @ (rfft
        # of E_W rightᵀ)ᵀ: a product with a small inner size.
        col, row = np.zeros((h, left.shape[1])), np.zeros((w, left.shape[1]))
        np.add.at(col, rows, left[taps_r])
        np.add.at(row, cols, right.T[taps_c])
        left = scipy.fft.fft(col.astype(real), axis=0)
        right = scipy.fft.rfft(row.astype(real), axis=0).T
        if symmetric:  # the imaginary parts are rounding
            left, right = np.ascontiguousarray(left.real), np.ascontiguousarray(right.real)
        eigenvalues = _product(left, right)
    else:
        column = np.zeros((h, w), dtype=np.float64)
        np.add.at(column, (rows[:, None], cols[None, :]), kernel[np.ix_(taps_r, taps_c)])
        nonzero = np.unique(rows)
        half = scipy.fft.rfft(column[nonzero].astype(real), axis=1, workers=fft_workers())
        spectrum = np.zeros((h, w // 2 + 1), dtype=half.dtype)
        spectrum[nonzero] = half
        eigenvalues = scipy.fft.fft(spectrum, axis=0, overwrite_x=True, workers=fft_workers())
        if symmetric:
            eigenvalues = np.ascontiguousarray(eigenvalues.real)
    weights = np.full((1, w // 2 + 1), 2.0)
    weights[0, 0] = 1.0
    if w % 2 == 0:
        weights[0, -1] = 1.0
    return Diagonal("fft", (h, w), eigenvalues, weights, 1.0 / (h * w))


def _dct_diagonal(op: ConvOperator, dtype: np.dtype) -> Diagonal:
    """Eigenvalues = ``C(A e₀) / C(e₀)``, ``C`` the orthonormal DCT-II, ``e₀`` the corner delta.

    ``A e₀`` (:func:`_delta_taps`) is non-zero only within the kernel's reach of the
    corner: ``λ = C_H R C_Wᵀ / (d_H d_Wᵀ)`` with ``R`` that corner, from a few columns
    of ``C`` (two small matrix products instead of two full-size DCTs).
    """
    h, w = op.input_shape[:2]
    (rows, taps_r), (cols, taps_c) = _delta_taps(op)
    # The reflection folds the kernel onto the corner: about half its size per axis.
    corner = np.zeros((rows.max() + 1, cols.max() + 1))
    np.add.at(corner, (rows[:, None], cols[None, :]), op.effective[0, 0][np.ix_(taps_r, taps_c)])
    left = _dct_columns(h, corner.shape[0]) / _dct_of_delta(h)[:, None]
    right = _dct_columns(w, corner.shape[1]) / _dct_of_delta(w)[:, None]
    u, v = _low_rank(corner)
    real = np.float32 if dtype == np.float32 else np.float64
    transformed = _product((left @ u).astype(real), (v @ right.T).astype(real))
    return Diagonal("dct", (h, w), transformed, np.ones((1, 1)), 1.0)


def _delta_taps(op: ConvOperator) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Where the taps of ``A e₀`` land, per axis: ``(samples, taps)`` index pairs.

    ``A = V P`` in ``same`` mode, stride 1, with ``(V z)[i] = Σ_a k[a] z[i + a]`` on
    each axis. ``P e₀`` is 1 at the padded positions ``q`` that the operator's padding
    map (:func:`deconv_cli.operators.padding.index_map`) sends to pixel 0, so
    ``A e₀ = E_H k E_Wᵀ`` with ``E[i, a] = [map(i + a) = 0]``: tap ``a`` adds
    ``k[a]`` at each sample ``i`` of a pair. Exact (sums of the kernel's values), so
    a box filter's zeros of the transfer function stay exact zeros.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    from deconv_cli.operators.padding import index_map

    pairs = []
    for n, pads, k in zip(op.input_shape[:2], op.pads, op.effective.shape[2:], strict=True):
        source = index_map(n, pads, op.geometry.boundary)
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

    The same kernel, correlation and dilation in ``same`` mode on ``op.input_shape``:
    reflect (DCT) for a symmetric kernel, wrap (FFT) otherwise. ``None`` for kernel
    banks and strides, which have no such stand-in.
    """
    exact = diagonalize(op, dtype=dtype)
    if exact is not None:
        return exact
    if _single_kernel(op) is None or op.geometry.stride != (1, 1):
        return None
    boundary = "reflect" if is_symmetric_kernel(op.effective[0, 0]) else "wrap"
    geometry = Geometry(
        mode="same",
        boundary=boundary,
        correlate=op.geometry.correlate,
        dilation=op.geometry.dilation,
    )
    stand_in = ConvOperator(op.kernel, op.input_shape[:2], geometry, dtype=op.dtype)
    return diagonalize(stand_in, dtype=dtype)


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
    effects change few eigenvalues). ``None`` for kernel banks and strides.
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
    mean = float(np.sum(weights / magnitude**2)) / (diagonal.shape[0] * diagonal.shape[1])
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
            "a null space; consider --method tikhonov"
        )
    advice = "; consider --method tikhonov" if rmse >= 0.01 else ""
    return (
        f"{source} (σ≈{noise_sigma:.2g}) is amplified ≈{amplification:.1e}× by the exact "
        f"inverse: expect RMSE ≈ {rmse:.2g}{advice}"
    )
