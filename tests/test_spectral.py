"""Fast diagonalizations, nullity and noise amplification against numpy/scipy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
from oracles import dense_ndimage

from deconv_cli.errors import spoken
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry, is_symmetric_kernel
from deconv_cli.spectral import (
    amplification_note,
    approximate,
    diagonalize,
    inverse_amplification,
    predicted_inverse_rmse,
    quantization_sigma,
)


def rng(seed=0):
    return np.random.default_rng(seed)


FFT_CASES = {
    "odd3x3": ((3, 3), (16, 12), 1, False),
    "even4x4": ((4, 4), (16, 12), 1, False),
    "rect2x5-correlate": ((2, 5), (15, 11), 1, True),
    "dilated": ((3, 3), (16, 12), 2, False),
    "rgb": ((3, 5), (12, 10, 3), 1, False),
    "kernel-larger-than-image": ((7, 7), (5, 4), 1, False),
    "tall-kernel": ((40, 37), (48, 44), 1, False),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", FFT_CASES.values(), ids=FFT_CASES.keys())
def test_fft_diagonal_reproduces_forward(case, dtype):
    kshape, shape, dilation, correlate = case
    r = rng(1)
    kernel = r.random(kshape)
    geometry = Geometry.create(boundary="wrap", correlate=correlate, dilation=dilation)
    op = ConvOperator(kernel, shape, geometry, dtype=dtype)
    diagonal = diagonalize(op)
    assert diagonal is not None and diagonal.kind == "fft"
    x = r.random(shape).astype(dtype)
    out = diagonal.apply(x, diagonal.eigenvalues)
    assert out.dtype == dtype
    expected = op.forward(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, expected, rtol=0, atol=tol * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("correlate", [False, True], ids=["convolve", "correlate"])
def test_fft_eigenvalues_are_the_rolled_kernel_spectrum(correlate):
    r = rng(2)
    kernel = r.random((5, 3))
    h, w = 16, 12
    op = ConvOperator(kernel, (h, w), Geometry.create(boundary="wrap", correlate=correlate))
    padded = np.zeros((h, w))
    padded[:5, :3] = kernel
    rolled = np.roll(padded, (-2, -1), axis=(0, 1))  # the kernel centre to (0, 0)
    spectrum = np.fft.fft2(rolled)
    if correlate:  # correlation multiplies by the conjugate transfer function
        spectrum = np.conj(spectrum)
    np.testing.assert_allclose(diagonalize(op).eigenvalues, spectrum[:, : w // 2 + 1], atol=1e-12)


DCT_CASES = {
    "gaussian": ("gaussian:sigma=1", (12, 10), 1, False),
    "disk": ("disk:radius=2", (12, 10), 1, True),
    "box3-dilated": ("box:size=3", (12, 10), 2, False),
    "rgb": ("gaussian:sigma=1", (9, 8, 3), 1, False),
    "kernel-larger-than-image": ("gaussian:sigma=2", (6, 5), 1, False),
}


@pytest.mark.parametrize("case", DCT_CASES.values(), ids=DCT_CASES.keys())
def test_dct_diagonal_reproduces_forward(case):
    spec, shape, dilation, correlate = case
    kernel = load_kernel(spec).array
    geometry = Geometry.create(boundary="reflect", correlate=correlate, dilation=dilation)
    op = ConvOperator(kernel, shape, geometry)
    diagonal = diagonalize(op)
    assert diagonal is not None and diagonal.kind == "dct"
    x = rng(3).random(shape)
    np.testing.assert_allclose(diagonal.apply(x, diagonal.eigenvalues), op.forward(x), atol=1e-12)


def test_dct_eigenvalues_diagonalize_the_ndimage_matrix():
    kernel = load_kernel("gaussian:sigma=1").array
    h, w = 9, 7
    matrix = dense_ndimage(kernel, (h, w), "reflect")
    # The 2-D orthonormal DCT-II as a matrix acting on raveled images.
    c = np.kron(
        scipy.fft.dct(np.eye(h), norm="ortho", axis=0),
        scipy.fft.dct(np.eye(w), norm="ortho", axis=0),
    )
    transformed = c @ matrix @ c.T
    np.testing.assert_allclose(transformed, np.diag(np.diag(transformed)), atol=1e-12)
    op = ConvOperator(kernel, (h, w), Geometry.create(boundary="reflect"))
    np.testing.assert_allclose(
        diagonalize(op).eigenvalues.ravel(), np.diag(transformed), atol=1e-12
    )


NOT_DIAGONALIZABLE = {
    "reflect-motion": ("motion:length=7,angle=30", {"boundary": "reflect"}),
    "reflect-even-box": ("box:size=4", {"boundary": "reflect"}),
    "mirror": ("gaussian:sigma=1", {"boundary": "mirror"}),
    "nearest": ("gaussian:sigma=1", {"boundary": "nearest"}),
    "constant": ("gaussian:sigma=1", {"boundary": "constant"}),
    "full": ("gaussian:sigma=1", {"mode": "full", "boundary": "wrap"}),
    "valid": ("gaussian:sigma=1", {"mode": "valid", "boundary": "wrap"}),
    "stride": ("gaussian:sigma=1", {"boundary": "wrap", "stride": 2}),
    "padding": ("gaussian:sigma=1", {"boundary": "wrap", "padding": 3}),
}


@pytest.mark.parametrize("case", NOT_DIAGONALIZABLE.values(), ids=NOT_DIAGONALIZABLE.keys())
def test_other_geometries_are_not_diagonalized(case):
    spec, flags = case
    op = ConvOperator(load_kernel(spec).array, (16, 14), Geometry.create(**flags))
    assert diagonalize(op) is None


def test_kernel_bank_is_not_diagonalized():
    bank = rng(4).random((2, 1, 3, 3))
    op = ConvOperator(bank, (8, 8), Geometry.create(boundary="wrap"))
    assert diagonalize(op) is None
    assert approximate(op) is None


def test_is_symmetric_kernel():
    assert is_symmetric_kernel(load_kernel("gaussian:sigma=2").array)
    assert is_symmetric_kernel(load_kernel("disk:radius=3").array)
    assert not is_symmetric_kernel(load_kernel("motion:length=15,angle=30").array)
    assert not is_symmetric_kernel(np.ones((4, 4)))


# -- noise amplification ----------------------------------------------------------------


def test_amplification_matches_monte_carlo():
    kernel = load_kernel("gaussian:sigma=1").array
    h, w = 32, 32
    op = ConvOperator(kernel, (h, w), Geometry.create(boundary="wrap"))
    padded = np.zeros((h, w))
    padded[:7, :7] = kernel
    spectrum = np.fft.fft2(np.roll(padded, (-3, -3), axis=(0, 1)))
    expected = math.sqrt(np.mean(1.0 / np.abs(spectrum) ** 2))
    assert inverse_amplification(op) == pytest.approx(expected, rel=1e-10)
    noise = rng(8).standard_normal((200, h, w)) * 0.01
    errors = np.fft.ifft2(np.fft.fft2(noise) / spectrum).real
    measured = math.sqrt(np.mean(errors**2))
    assert predicted_inverse_rmse(op, 0.01) == pytest.approx(measured, rel=0.05)


def test_amplification_note_for_8_bit_data():
    sigma = quantization_sigma(8)
    assert sigma == pytest.approx(1 / (255 * math.sqrt(12)))
    op = ConvOperator(
        load_kernel("gaussian:sigma=1").array, (64, 64), Geometry.create(boundary="wrap")
    )
    note = amplification_note(op, sigma, source="8-bit quantization noise")
    assert note.startswith("8-bit quantization noise (σ≈0.0011) is amplified ≈")
    assert "consider `method=tikhonov`" in spoken(note)  # the CLI says --method tikhonov
    identity = ConvOperator(np.ones((1, 1)), (8, 8), Geometry.create(boundary="wrap"))
    assert amplification_note(identity, sigma) is None


def test_amplification_is_infinite_with_a_null_space_and_unknown_for_banks():
    box = ConvOperator(np.ones((4, 4)) / 16, (12, 8), Geometry.create(boundary="wrap"))
    assert inverse_amplification(box) == math.inf
    bank = ConvOperator(rng(9).random((2, 1, 2, 2)), (8, 8), Geometry.create(stride=2))
    assert inverse_amplification(bank) is None
