"""The one diagonalizability decision against dense matrices in the DFT and DCT-II bases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
from oracles import dense

from deconv_cli.operators import BOUNDARIES, ConvOperator, Geometry, diagonal_basis
from deconv_cli.spectral import diagonalize


def _kernel(kind: str) -> np.ndarray:
    r = np.random.default_rng(len(kind)).uniform(0.1, 1.0, (5, 3) if "5x3" in kind else (3, 3))
    if kind == "symmetric-rows-only":  # even about axis 0 only
        return r + r[::-1]
    if kind.startswith("symmetric"):
        return r + r[::-1] + r[:, ::-1] + r[::-1, ::-1]
    if kind == "even-sides":
        return np.random.default_rng(1).uniform(0.1, 1.0, (2, 4))
    return r


KERNELS = ("symmetric3x3", "symmetric5x3", "symmetric-rows-only", "asymmetric", "even-sides")
"""Random positive kernels: symmetric about both axes (odd sides), about one, neither."""
SHAPE = (6, 5)


def _basis_matrix(kind: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(T, T⁻¹)`` on row-major ``H×W`` images: the 2-D DFT or the orthonormal DCT-II."""
    if kind == "fft":
        t = np.kron(scipy.linalg.dft(shape[0]), scipy.linalg.dft(shape[1]))
        return t, t.conj().T / t.shape[0]
    c = np.kron(*(scipy.fft.dct(np.eye(n), type=2, norm="ortho", axis=0) for n in shape))
    return c, c.T


def _diagonal_in(a: np.ndarray, kind: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The diagonal of ``T A T⁻¹`` when that matrix is diagonal (to rounding), else None."""
    if a.shape[0] != a.shape[1]:
        return None
    t, t_inv = _basis_matrix(kind, shape)
    m = t @ a @ t_inv
    off = m - np.diag(np.diag(m))
    return np.diag(m) if np.max(np.abs(off)) <= 1e-10 * np.max(np.abs(m)) else None


@pytest.mark.parametrize(
    "boundary, kernel, stride, mode",
    list(itertools.product(BOUNDARIES, KERNELS, (1, 2), ("same", "valid", "full"))),
)
def test_decision_matches_the_dense_matrix(boundary, kernel, stride, mode):
    g = Geometry.create(mode=mode, boundary=boundary, stride=stride)
    op = ConvOperator(_kernel(kernel), SHAPE, g)
    a = dense(op)
    in_dft = _diagonal_in(a, "fft", SHAPE) is not None
    in_dct = _diagonal_in(a, "dct", SHAPE) is not None
    expected = "fft" if in_dft else "dct" if in_dct else None
    assert not (in_dft and in_dct)  # no kernel here is diagonal in both bases
    if boundary == "nearest" and expected == "dct":
        # Padding one sample, `nearest` repeats x[0] as half-sample `reflect` does:
        # the DCT diagonalizes A, but the decision keeps the documented conditions
        # (reflect only), so these operators take the general path.
        assert max(max(p) for p in op.pads) <= 1
        expected = None
    assert diagonal_basis(op) == expected
    if expected is not None:  # what Richardson-Lucy relies on: Aᵀ1 = (Σk)·1
        np.testing.assert_allclose(a.T @ np.ones(a.shape[0]), op.effective.sum(), rtol=1e-12)


@pytest.mark.parametrize(
    "kernel, shape, boundary, correlate, dilation",
    [
        ("symmetric3x3", (6, 5), "reflect", False, 1),
        ("symmetric5x3", (7, 4), "reflect", True, 2),
        ("symmetric5x3", (3, 4), "reflect", False, 1),  # the kernel reaches past the image
        ("asymmetric", (6, 5), "wrap", False, 1),
        ("even-sides", (5, 7), "wrap", True, 2),
        ("symmetric5x3", (3, 2), "wrap", False, 1),
    ],
)
def test_eigenvalues_come_out_of_the_operator(kernel, shape, boundary, correlate, dilation):
    """The eigenvalues of diagonalize() are the diagonal of ``T A T⁻¹`` of the dense ``A``."""
    g = Geometry.create(boundary=boundary, correlate=correlate, dilation=dilation)
    op = ConvOperator(_kernel(kernel), shape, g)
    kind = diagonal_basis(op)
    diagonal = _diagonal_in(dense(op), kind, shape)
    assert diagonal is not None
    expected = diagonal.reshape(shape)
    if kind == "fft":
        expected = expected[:, : shape[1] // 2 + 1]
    got = diagonalize(op).eigenvalues
    np.testing.assert_allclose(got, expected, atol=1e-12 * np.max(np.abs(expected)))


def test_one_kernel_bank_is_diagonal_and_a_mixing_bank_is_not():
    single = ConvOperator(
        _kernel("asymmetric")[None, None], SHAPE, Geometry.create(boundary="wrap")
    )
    assert diagonal_basis(single) == "fft"
    assert _diagonal_in(dense(single), "fft", SHAPE) is not None
    bank = np.random.default_rng(2).uniform(0.1, 1.0, (2, 2, 3, 3))
    mixing = ConvOperator(bank, SHAPE + (2,), Geometry.create(boundary="wrap"))
    assert diagonal_basis(mixing) is None
    # Per channel the DFT diagonalizes each block, but A couples the channels.
    a = dense(mixing)
    per_channel = np.kron(scipy.linalg.dft(SHAPE[0]), scipy.linalg.dft(SHAPE[1]))
    t = np.kron(per_channel, np.eye(2))
    m = t @ a @ t.conj().T / per_channel.shape[0]
    assert np.max(np.abs(m - np.diag(np.diag(m)))) > 1e-3 * np.max(np.abs(m))


def test_explicit_wrap_padding_like_same_mode_is_left_to_the_general_path():
    """The conservative corner the module documents: the same matrix, no fast basis."""
    k = _kernel("asymmetric")
    padded = ConvOperator(k, SHAPE, Geometry.create(padding=(1, 1), boundary="wrap"))
    same = ConvOperator(k, SHAPE, Geometry.create(boundary="wrap"))
    np.testing.assert_array_equal(dense(padded), dense(same))
    assert _diagonal_in(dense(same), "fft", SHAPE) is not None
    assert diagonal_basis(same) == "fft"
    assert diagonal_basis(padded) is None
