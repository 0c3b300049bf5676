"""One kernel shared by every channel, however the bank is written (a 2-D kernel on an
RGB image, a depthwise bank, a C×C diagonal bank): the exact spectral paths take it,
checked against dense matrices built with scipy.ndimage / scipy.signal and numpy
solves, per channel."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import dense_ndimage
from scipy import ndimage, signal
from scipy.linalg import svdvals

from deconv_cli.analysis import analyze
from deconv_cli.operators import ConvOperator, Geometry, diagonal_basis
from deconv_cli.operators.geometry import shared_kernel
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.inverse import inverse, pinv
from deconv_cli.restore.linear import tikhonov, wiener

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
SHAPE = (12, 10)
C = 3


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def gaussian() -> np.ndarray:
    g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    return np.outer(g, g) / np.outer(g, g).sum()


def diagonal_bank(kernel: np.ndarray, channels: int = C) -> np.ndarray:
    bank = np.zeros((channels, channels) + kernel.shape)
    bank[np.arange(channels), np.arange(channels)] = kernel
    return bank


# -- the decision, from the bank ---------------------------------------------------------


def test_shared_kernel_is_read_from_the_bank():
    k = rng(1).random((3, 4))
    other = rng(2).random((3, 4))
    depthwise = np.broadcast_to(k, (C, 1, 3, 4))
    assert np.array_equal(shared_kernel(k[None, None]), k)
    assert np.array_equal(shared_kernel(depthwise, groups=C), k)
    assert np.array_equal(shared_kernel(diagonal_bank(k)), k)
    # groups of 2 channels, each block diagonal with k: still I ⊗ k
    grouped = np.zeros((4, 2, 3, 4))
    grouped[[0, 1, 2, 3], [0, 1, 0, 1]] = k
    assert np.array_equal(shared_kernel(grouped, groups=2), k)
    different = diagonal_bank(k)
    different[2, 2] = other
    mixing = diagonal_bank(k)
    mixing[0, 1] = 1e-300 * other
    multiplier = np.broadcast_to(k, (2 * C, 1, 3, 4))  # depthwise, two outputs per input
    assert shared_kernel(different) is None
    assert shared_kernel(mixing) is None
    assert shared_kernel(multiplier, groups=C) is None
    assert shared_kernel(np.broadcast_to(k, (1, C, 3, 4))) is None  # sums the channels


@pytest.mark.parametrize("engine", ["direct", "taps", "fft"])
def test_a_diagonal_bank_computes_each_channel_with_its_kernel(engine):
    k = rng(3).random((3, 4))
    x = rng(4).random(SHAPE + (C,))
    geometry = Geometry.create(boundary="nearest")
    op = ConvOperator(diagonal_bank(k), x.shape, geometry, engine=engine)
    assert op.core.shared and diagonal_basis(op) is None  # nearest: no fast basis
    expected = np.stack([ndimage.convolve(x[..., c], k, mode="nearest") for c in range(C)], -1)
    np.testing.assert_allclose(op.forward(x), expected, atol=1e-12)
    y = rng(5).random(x.shape)
    assert float(np.vdot(op.forward(x), y)) == pytest.approx(float(np.vdot(x, op.adjoint(y))))


# -- the closed forms against dense solves ------------------------------------------------

KERNELS = {"wrap": rng(6).random((3, 4)), "reflect": gaussian()}


def operators(boundary: str):
    """The same operator written three ways: a 2-D kernel, a depthwise bank, a C×C bank."""
    k, geometry = KERNELS[boundary], Geometry.create(boundary=boundary)
    shape = SHAPE + (C,)
    depthwise = np.broadcast_to(k, (C, 1) + k.shape).copy()
    return {
        "kernel": ConvOperator(k, shape, geometry),
        "depthwise": ConvOperator(depthwise, shape, geometry, groups=C),
        "diagonal": ConvOperator(diagonal_bank(k), shape, geometry),
    }


def per_channel(matrix: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``matrix @`` each channel of an ``H×W×C`` array, back to ``H×W×C``."""
    columns = np.stack([y[..., c].ravel() for c in range(y.shape[-1])], axis=1)
    return (matrix @ columns).reshape(y.shape[:-1] + (y.shape[-1],), order="C")


@pytest.mark.parametrize("boundary", ["wrap", "reflect"])
@pytest.mark.parametrize("layout", ["kernel", "depthwise", "diagonal"])
def test_tikhonov_and_wiener_closed_forms_equal_dense_solves(boundary, layout):
    op = operators(boundary)[layout]
    assert diagonal_basis(op) == ("fft" if boundary == "wrap" else "dct")
    y = rng(7).random(SHAPE + (C,))
    a = dense_ndimage(KERNELS[boundary], SHAPE, boundary)
    lap = dense_ndimage(LAPLACIAN, SHAPE, boundary)
    for method, regularizer, options in (
        (tikhonov, lap.T @ lap, RestoreOptions(reg=0.01)),
        (wiener, np.eye(a.shape[1]), RestoreOptions(nsr=0.05)),
    ):
        result = method(y, op, options)
        assert result.params["solver"].startswith("closed form")
        weight = options.reg if method is tikhonov else options.nsr
        solve = np.linalg.solve(a.T @ a + weight * regularizer, a.T)
        np.testing.assert_allclose(result.image, per_channel(solve, y), atol=1e-10)


@pytest.mark.parametrize("layout", ["kernel", "depthwise", "diagonal"])
def test_inverse_and_pinv_equal_numpy_on_every_channel(layout):
    op = operators("wrap")[layout]
    a = dense_ndimage(KERNELS["wrap"], SHAPE, "wrap")
    x = rng(8).random(SHAPE + (C,))
    y = per_channel(a, x)
    result = inverse(y, op, RestoreOptions())
    np.testing.assert_allclose(result.image, per_channel(np.linalg.inv(a), y), atol=1e-9)
    result = pinv(y, op, RestoreOptions(rcond=0.05))
    expected = per_channel(np.linalg.pinv(a, rcond=0.05), y)
    np.testing.assert_allclose(result.image, expected, atol=1e-9)


# -- analyze: the exact spectra ---------------------------------------------------------------


def singular_values(matrix: np.ndarray, channels: int) -> np.ndarray:
    """Every singular value of ``I_C ⊗ matrix``, largest first."""
    return np.sort(np.repeat(svdvals(matrix), channels))[::-1]


@pytest.mark.parametrize("boundary", ["wrap", "reflect"])
def test_analyze_of_a_diagonal_bank_takes_the_fast_basis(boundary):
    op = operators(boundary)["diagonal"]
    analysis = analyze(op, dense_limit=0)
    assert analysis.method.startswith("exact: " + ("FFT (|" if boundary == "wrap" else "DCT"))
    expected = singular_values(dense_ndimage(KERNELS[boundary], SHAPE, boundary), C)
    np.testing.assert_allclose(analysis.sorted_singular_values(), expected, atol=1e-12)
    assert analysis.rank == op.shape[1]


def test_analyze_of_a_separable_diagonal_bank_is_a_kronecker_product():
    g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    k = np.outer(g, g[1:])  # separable, asymmetric
    geometry = Geometry.create(mode="full", boundary="constant")
    op = ConvOperator(diagonal_bank(k), SHAPE + (C,), geometry)
    analysis = analyze(op, dense_limit=0)
    assert analysis.method.startswith("exact: dense SVD (a separable kernel")
    n = SHAPE[0] * SHAPE[1]
    columns = [signal.convolve2d(e.reshape(SHAPE), k, mode="full").ravel() for e in np.eye(n)]
    expected = singular_values(np.stack(columns, axis=1), C)
    np.testing.assert_allclose(analysis.sorted_singular_values(), expected, rtol=1e-10)


def test_analyze_estimates_a_diagonal_bank_on_one_channel():
    k = rng(9).random((3, 3))
    geometry = Geometry.create(boundary="nearest")
    op = ConvOperator(diagonal_bank(k), SHAPE + (C,), geometry)
    analysis = analyze(op, dense_limit=0, kronecker_limit=0)
    assert analysis.method.startswith("estimate")
    top = svdvals(dense_ndimage(k, SHAPE, "nearest"))[0]
    assert analysis.sigma_max == pytest.approx(top, rel=1e-6)
