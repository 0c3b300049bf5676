"""The exact singular values of ``A``: per-frequency SVDs (FFT), DCT eigenvalues,
Kronecker products of 1-D operators, dense SVDs; on 2 or 3 spatial axes.

Each path returns a :class:`Spectrum` (every singular value, with how many times it
occurs) or None where it does not apply; :func:`exact_spectrum` tries them in the
order of :mod:`deconv_cli.analysis`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from deconv_cli.operators import ConvOperator, Geometry, separable_factors
from deconv_cli.operators.grid import convolution_of, one_kernel

_CHUNK_ELEMENTS = 1 << 22  # complex entries of per-frequency matrices held at once
_DENSE_BATCH = 512  # unit images per operator call when building a dense matrix


@dataclass
class Spectrum:
    """Singular values of ``A`` (``values`` with ``weights``), and how they were found."""

    values: np.ndarray
    weights: np.ndarray
    method: str
    frequencies: list[str] = field(default_factory=list)  # where the spectrum vanishes
    zero_kind: str = ""  # "transfer function" / "per-frequency matrix" / "DCT eigenvalue"
    zero_count: int = 0  # frequencies (of all) with a vanishing value
    frequency_count: int = 0
    grid: tuple | None = None  # FFT: (values per frequency, last-axis weights, grid, unit)
    dct: tuple | None = None  # DCT: (|eigenvalues|, Diagonal)


def single_kernel(op: ConvOperator) -> bool:
    """One kernel applied to every channel alike, mixing none, read from the bank
    (:func:`~deconv_cli.operators.geometry.shared_kernel`: a 1×1 bank, a depthwise
    bank of one kernel and a ``C × C`` diagonal one count): ``A = I_C ⊗ A_1``."""
    return one_kernel(op)


def channel_block(op: ConvOperator) -> ConvOperator:
    """``A_1``, the operator on one channel of a single-kernel ``op``."""
    kernel = op.kernel[0, 0] if op.is_bank else op.kernel
    shape = spatial_shape(op)
    return ConvOperator(kernel, shape, op.geometry, spatial=len(shape), dtype=op.dtype)


def spatial_axes(op: ConvOperator) -> int:
    """The number of spatial axes of a :class:`ConvOperator` (or of a ``Convolution``,
    which the solvers also pass)."""
    return convolution_of(op).ndim


def spatial_shape(op: ConvOperator) -> tuple[int, ...]:
    """The image's spatial lengths (``H, W`` or ``Z, H, W``)."""
    return op.input_shape[: spatial_axes(op)]


def channels(op: ConvOperator) -> int:
    """Channels sharing one kernel (the operator is block diagonal over them)."""
    if not single_kernel(op):
        return 1
    d = spatial_axes(op)
    return op.input_shape[d] if len(op.input_shape) > d else 1


def strides(op: ConvOperator) -> tuple[int, ...]:
    """The stride on each spatial axis."""
    return op.geometry.axes(spatial_axes(op))[0]


def exact_form(op: ConvOperator) -> ConvOperator:
    """``op`` computing in float64, with an ungrouped bank: the exact paths read a
    bank's ``(C_out, C_in)`` pairs, so a grouped bank becomes its block-diagonal one,
    zero between groups (output block ``j`` reads input block ``j`` only)."""
    if op.dtype == np.float64 and op.groups == 1:
        return op
    kernel = op.kernel
    if op.groups > 1:
        co, cig = kernel.shape[:2]
        cog = co // op.groups
        kernel = np.zeros((co, cig * op.groups) + kernel.shape[2:])
        for j in range(op.groups):
            outs = slice(j * cog, (j + 1) * cog)
            kernel[outs, j * cig : (j + 1) * cig] = op.kernel[outs]
    return ConvOperator(kernel, op.input_shape, op.geometry, spatial=spatial_axes(op))


def exact_spectrum(op: ConvOperator, dense_limit: int, kronecker_limit: int) -> Spectrum | None:
    """Every singular value, by the first exact path that applies."""
    return (
        wrap_spectrum(op)
        or dct_spectrum(op)
        or kronecker_spectrum(op, kronecker_limit)
        or dense_spectrum(op, dense_limit)
    )


def axes_text(values: tuple[int, ...]) -> str:
    """``2`` for equal entries, else ``2x1x2``."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def wrap_spectrum(op: ConvOperator) -> Spectrum | None:
    """Per-frequency SVDs of the block-circulant operator, with strides by polyphase.

    On each axis of ``n`` samples, stride ``s``, tap ``a`` sits at ``r_a = (b − a) mod
    n`` of the circulant's first column (``b`` the padding before); on the stride grid
    it feeds phase ``u_a = −r_a mod s`` at reduced position ``(r_a + u_a)/s``. The
    matrix of frequency ``f`` is ``M(f)[o, (c, u)] = Σ_a k[o, c, a] Π_axes T(f, u, a)``
    with ``T`` the per-axis DFT weights (:func:`_phase_transform`); the last axis
    takes half the frequencies (real input), the others all of them.
    """
    g = op.geometry
    shape, stride = spatial_shape(op), strides(op)
    d = len(shape)
    if any(n % s for n, s in zip(shape, stride, strict=True)):
        return None
    circulant = g.boundary == "wrap" and op.stride1_shape == shape
    if not (circulant or reads_no_padding(op)):
        return None
    eff = op.effective[:1, :1] if single_kernel(op) else op.effective
    co, ci = eff.shape[:2]
    reduced = tuple(n // s for n, s in zip(shape, stride, strict=True))
    transforms = [
        _phase_transform(
            op.pads[a][0],
            eff.shape[2 + a],
            shape[a],
            stride[a],
            np.arange(reduced[a] if a < d - 1 else reduced[a] // 2 + 1),
            reduced[a],
        )
        for a in range(d)
    ]  # axis a: (frequencies, phases, taps)
    rest = eff
    for a in range(d - 1, 0, -1):  # every axis but the first: appends (frequencies, phases)
        rest = np.tensordot(rest, transforms[a], axes=([2 + a], [2]))
    later = range(1, d)
    order = [2] + [3 + 2 * (d - 1 - a) for a in later] + [0, 1]
    order += [4 + 2 * (d - 1 - a) for a in later]
    rest = rest.transpose(order)  # (k0, F_1.., co, ci, s_1..)
    points = math.prod(rest.shape[1:d])
    later_phases = math.prod(stride[1:])
    rest = rest.reshape(eff.shape[2], points, co, ci, later_phases)
    columns = ci * math.prod(stride)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(1, points * co * columns))
    values = []
    for start in range(0, reduced[0], rows_per_chunk):
        block = transforms[0][start : start + rows_per_chunk]  # (nb, s0, k0)
        m_f = np.tensordot(block, rest, axes=([2], [0]))  # (nb, s0, P, co, ci, Q)
        m_f = m_f.transpose(0, 2, 3, 4, 1, 5).reshape(-1, co, columns)
        if co == 1 or columns == 1:
            values.append(np.sqrt(np.sum(np.abs(m_f) ** 2, axis=(1, 2)))[:, None])
        else:
            if co < columns:  # LAPACK is much faster on tall matrices than on wide ones
                m_f = m_f.transpose(0, 2, 1)
            values.append(np.linalg.svd(m_f, compute_uv=False))
    grid = tuple(t.shape[0] for t in transforms)
    values = np.concatenate(values).reshape(grid + (-1,))
    last = np.full(grid[-1], 2.0)  # a half-spectrum frequency also stands for its conjugate
    last[0] = 1.0
    if reduced[-1] % 2 == 0:
        last[-1] = 1.0
    weights = np.broadcast_to(last[:, None], values.shape) * channels(op)

    single = co == 1 and columns == 1
    if single:
        method = "exact: FFT (|transfer function| at each frequency; wrap makes A circulant)"
    else:
        method = (
            f"exact: FFT per-frequency SVD of the {co}×{columns} matrices "
            "(Sedghi, Gupta & Long, ICLR 2019)"
        )
        if math.prod(stride) > 1:
            method += (
                f"; stride {axes_text(stride)} by polyphase: a stride-1 layer with "
                f"{math.prod(stride)}×{ci} input channels on the {_dims(reduced)} grid"
            )
    if not circulant:
        method += "; the layer reads no padding, so it equals its wrap-boundary version"
    spectrum = Spectrum(values.ravel(), np.ascontiguousarray(weights).ravel(), method)
    spectrum.zero_kind = "transfer function" if single else "per-frequency matrix"
    spectrum.frequency_count = math.prod(reduced)
    unit = "cycles/pixel" if math.prod(stride) == 1 else "cycles/sample of the output grid"
    spectrum.grid = (values, last, reduced, unit)
    return spectrum


def reads_no_padding(op: ConvOperator) -> bool:
    """Whether every output reads only image samples and there are ``n/s`` of them per axis.

    Then no boundary rule is ever used and ``A`` equals the strided circulant operator
    with the same offsets (e.g. ``valid`` mode with the kernel no larger than the
    stride: patch-wise layers such as the Haar bank).
    """
    shape, stride = spatial_shape(op), strides(op)
    if op.output_shape[: len(shape)] != tuple(n // s for n, s in zip(shape, stride, strict=True)):
        return False
    for (before, _), n, s, k in zip(op.pads, shape, stride, op.effective.shape[2:], strict=True):
        if before != 0 or s * (n // s - 1) + k - 1 > n - 1:
            return False
    return True


def _phase_transform(
    before: int, k: int, n: int, s: int, freqs: np.ndarray, reduced: int
) -> np.ndarray:
    """``T[f, u, a]``: DFT weight of tap ``a`` at reduced frequency ``f`` in phase ``u``."""
    r = (before - np.arange(k)) % n
    phase = (-r) % s
    position = ((r + phase) // s) % reduced
    transform = np.zeros((freqs.size, s, k), dtype=np.complex128)
    exponent = np.exp(-2j * np.pi * np.outer(freqs, position) / reduced)
    transform[:, phase, np.arange(k)] = exponent
    return transform


def frequency_name(index: tuple[int, ...], grid: tuple[int, ...], unit: str) -> str:
    """``(fy, fx) = (0.25, 0.5) cycles/pixel`` for an index of the FFT grid (the last
    axis a half spectrum)."""
    names = ("fz", "fy", "fx")[3 - len(grid) :]
    values = [
        i / n if i <= n // 2 else i / n - 1 for i, n in zip(index[:-1], grid[:-1], strict=True)
    ]
    values.append(index[-1] / grid[-1])
    return f"({', '.join(names)}) = ({', '.join(f'{v:.4g}' for v in values)}) {unit}"


def dct_spectrum(op: ConvOperator) -> Spectrum | None:
    from deconv_cli.spectral import diagonalize

    diagonal = diagonalize(op, dtype=np.float64)
    if diagonal is None or diagonal.kind != "dct":
        return None
    magnitude = np.abs(diagonal.eigenvalues).astype(np.float64)
    spectrum = Spectrum(
        magnitude.ravel(),
        np.full(magnitude.size, float(channels(op))),
        "exact: DCT (reflect boundary and a symmetric kernel: A = Cᵀ diag(λ) C, σ = |λ|)",
    )
    spectrum.zero_kind = "DCT eigenvalue"
    spectrum.frequency_count = magnitude.size
    spectrum.dct = (magnitude, diagonal)
    return spectrum


def kronecker_spectrum(op: ConvOperator, limit: int) -> Spectrum | None:
    """A separable kernel: ``A = A_0 ⊗ A_1 (⊗ A_2)`` in every geometry, σ = products."""
    if not single_kernel(op) or max(spatial_shape(op)) > limit:
        return None
    kernel = op.kernel if op.kernel.ndim == len(spatial_shape(op)) else op.kernel[0, 0]
    factors = separable_factors(kernel)
    if factors is None:
        return None
    from scipy.linalg import svdvals

    values = np.ones(1)
    for axis, taps in enumerate(factors):
        values = np.multiply.outer(values, svdvals(_axis_matrix(op, taps, axis))).ravel()
    return Spectrum(
        values,
        np.full(values.size, float(channels(op))),
        "exact: dense SVD (a separable kernel: A is the Kronecker product of 1-D "
        "operators, whose SVDs multiply)",
    )


def _axis_matrix(op: ConvOperator, taps: np.ndarray, axis: int) -> np.ndarray:
    """The 1-D operator along one axis, column by column (as an ``n × 1`` image)."""
    g = op.geometry
    stride, dilation, padding = g.axes(spatial_axes(op))
    geometry = Geometry(
        mode=g.mode,
        boundary=g.boundary,
        correlate=g.correlate,
        stride=(stride[axis], 1),
        dilation=(dilation[axis], 1),
        padding=None if padding is None else (padding[axis], 0),
    )
    return _block_matrix(taps[:, None], (op.input_shape[axis], 1), geometry)


def _block_matrix(kernel: np.ndarray, shape: tuple[int, ...], geometry: Geometry) -> np.ndarray:
    """The matrix of one kernel on one channel of ``shape``: unit images as channels."""
    n = math.prod(shape)
    columns = []
    for start in range(0, n, _DENSE_BATCH):
        stop = min(n, start + _DENSE_BATCH)
        probe = np.zeros((n, stop - start))
        probe[np.arange(start, stop), np.arange(stop - start)] = 1.0
        block = ConvOperator(
            kernel, (*shape, stop - start), geometry, spatial=len(shape), engine="direct"
        )
        out = block.forward(probe.reshape(*shape, stop - start))
        columns.append(out.reshape(-1, stop - start))
    return np.concatenate(columns, axis=1)


def dense_matrix(op: ConvOperator) -> np.ndarray:
    """The matrix of ``op`` on one channel (single kernel) or whole (bank).

    Rows and columns are grouped by channel (channel-major), a permutation of the
    flattened operator's: the singular values are the same.
    """
    shape = spatial_shape(op)
    if single_kernel(op):
        kernel = op.kernel if op.kernel.ndim == len(shape) else op.kernel[0, 0]
        return _block_matrix(kernel, shape, op.geometry)
    co, ci = op.kernel.shape[:2]
    blocks = [
        [_block_matrix(op.kernel[o, c], shape, op.geometry) for c in range(ci)] for o in range(co)
    ]
    return np.block(blocks)


def dense_spectrum(op: ConvOperator, limit: int) -> Spectrum | None:
    size = math.prod(spatial_shape(op)) if single_kernel(op) else op.shape[1]
    if size > limit:
        return None
    from scipy.linalg import svdvals

    values = svdvals(dense_matrix(op))
    what = "one channel's block" if channels(op) > 1 else "the operator"
    return Spectrum(
        values,
        np.full(values.size, float(channels(op))),
        f"exact: dense SVD of {what}'s matrix, built column by column",
    )


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))
