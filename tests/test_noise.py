"""Simulated noise (against Pillow and hand computations) and the wavelet noise estimate
(against skimage.restoration.estimate_sigma)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage
from skimage.restoration import estimate_sigma

from deconv_cli.errors import DeconvError
from deconv_cli.noise import parse_noise
from deconv_cli.noise_model import estimate_noise_sigma


@pytest.mark.parametrize("shape", [(64, 48), (33, 41), (40, 40, 3)], ids=["grey", "odd", "rgb"])
def test_equals_skimage_estimate_sigma(shape):
    rng = np.random.default_rng(4)
    scene = ndimage.gaussian_filter(rng.random(shape), 2)
    noisy = scene + rng.normal(0, 0.02, shape)
    channel_axis = -1 if len(shape) == 3 else None
    expected = estimate_sigma(noisy, channel_axis=channel_axis, average_sigmas=True)
    assert estimate_noise_sigma(noisy) == pytest.approx(expected, rel=1e-12)


def test_constant_image_has_no_noise():
    assert estimate_noise_sigma(np.full((16, 16), 0.5)) == pytest.approx(0, abs=1e-12)
    assert estimate_noise_sigma(np.zeros((16, 16))) == 0.0


# --------------------------------------------------------------------------- simulated noise


def _pillow_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """The oracle: encode uint8 pixels with Pillow directly and decode."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


@pytest.mark.parametrize("shape", [(40, 56), (40, 56, 1), (33, 47, 3)], ids=["grey", "hw1", "rgb"])
@pytest.mark.parametrize("quality", [75, 90])
def test_jpeg_noise_equals_a_pillow_round_trip(shape, quality):
    scene = ndimage.gaussian_filter(np.random.default_rng(2).random(shape), 1.5)
    data = np.clip(scene * 1.6 - 0.3, -0.05, 1.05)  # some values outside [0, 1]
    noisy = parse_noise(f"jpeg:quality={quality}").apply(data, np.random.default_rng(0))
    pixels = np.clip(np.rint(data * 255), 0, 255).astype(np.uint8)
    pixels = pixels if pixels.ndim == 2 or pixels.shape[2] == 3 else pixels[:, :, 0]
    expected = _pillow_jpeg(pixels, quality).reshape(shape) / 255
    np.testing.assert_array_equal(noisy, expected)
    assert noisy.dtype == data.dtype and noisy.shape == data.shape
    assert 0 < np.abs(noisy - np.clip(data, 0, 1)).mean() < 0.05  # lossy, but close


def test_quantize_rounds_to_the_grid_without_clipping():
    data = np.array([[-0.3, 0.1], [0.5 + 0.4 / 255, 1.2]])
    noisy = parse_noise("quantize:bits=8").apply(data, np.random.default_rng(0))
    np.testing.assert_allclose(noisy * 255, [[-76, 26], [128, 306]], atol=1e-9)
    assert parse_noise("quantize:bits=8").sigma(data) == pytest.approx(1 / (255 * np.sqrt(12)))


def test_noise_is_seeded_and_steps_compose_in_order():
    clean = np.full((64, 64), 0.5)
    spec = "gaussian:sigma=0.02+quantize:bits=6"
    a = parse_noise(spec).apply(clean, np.random.default_rng(3))
    b = parse_noise(spec).apply(clean, np.random.default_rng(3))
    c = parse_noise(spec).apply(clean, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # by hand: the gaussian draw first, then rounding to 1/63
    by_hand = np.round((clean + 0.02 * np.random.default_rng(3).standard_normal(clean.shape)) * 63)
    np.testing.assert_array_equal(a, by_hand / 63)


def test_chain_sigma_adds_variances_and_jpeg_has_none():
    clean = np.full((8, 8), 0.25)
    chain = parse_noise("gaussian:sigma=0.03+poisson:peak=100")
    assert chain.sigma(clean) == pytest.approx(np.hypot(0.03, np.sqrt(0.25 / 100)))
    assert parse_noise("gaussian:sigma=0.01+jpeg:quality=90").sigma(clean) is None
    assert chain.describe() == "gaussian:sigma=0.03+poisson:peak=100"


def test_exponent_sign_is_not_a_step_separator():
    noise = parse_noise("gaussian:sigma=1e+0+jpeg:quality=80")
    assert [(s.kind, s.value) for s in noise.steps] == [("gaussian", 1.0), ("jpeg", 80)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("jpeg:quality=0", "whole number from 1 to 100"),
        ("jpeg:quality=101", "whole number from 1 to 100"),
        ("jpeg:quality=nan", "whole number from 1 to 100"),
        ("quantize:bits=0", "whole number from 1 to 32"),
        ("quantize:bits=2.5", "whole number from 1 to 32"),
        ("jpeg:bits=8", "takes `quality=VALUE`"),
        ("speckle:sigma=1", "is not `gaussian:sigma=S`"),
        ("gaussian:sigma=0.1+", "`0.1+` in `gaussian:sigma=0.1+` is not a number"),
    ],
)
def test_bad_specs_name_the_step_and_the_range(spec, message):
    with pytest.raises(DeconvError, match=re.escape(message)):
        parse_noise(spec)


def test_jpeg_refuses_data_that_is_not_grey_or_rgb():
    with pytest.raises(DeconvError, match="grey .* or RGB"):
        parse_noise("jpeg:quality=90").apply(np.zeros((8, 8, 2)), np.random.default_rng(0))


def _pywt_sigma(data: np.ndarray) -> float:
    """The oracle: Donoho's MAD of PyWavelets' finest all-high-pass db2 band."""
    pywt = pytest.importorskip("pywt")
    detail = pywt.dwtn(data, "db2")["d" * data.ndim]
    detail = detail[detail != 0]
    return float(np.median(np.abs(detail))) / 0.6744897501960817


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (3, 4), (7, 6), (9, 13), (40, 33)])
def test_2d_estimate_equals_pywavelets_at_every_size(shape):
    noisy = np.random.default_rng(sum(shape)).normal(0.5, 0.05, shape)
    assert estimate_noise_sigma(noisy) == pytest.approx(_pywt_sigma(noisy), rel=1e-12, abs=1e-15)


def test_a_volume_uses_the_all_high_pass_band_of_its_three_axes():
    rng = np.random.default_rng(8)
    volume = ndimage.gaussian_filter(rng.random((12, 20, 17)), 2) + rng.normal(
        0, 0.03, (12, 20, 17)
    )
    expected = estimate_sigma(volume, channel_axis=None)  # skimage: pywt.dwtn, band "ddd"
    assert estimate_noise_sigma(volume, spatial=3) == pytest.approx(expected, rel=1e-12)
    assert estimate_noise_sigma(volume, spatial=3) == pytest.approx(_pywt_sigma(volume), rel=1e-12)
    channels = np.stack([volume, 2 * volume], axis=-1)
    both = (_pywt_sigma(volume) + _pywt_sigma(2 * volume)) / 2
    assert estimate_noise_sigma(channels, spatial=3) == pytest.approx(both, rel=1e-12)
    with pytest.raises(ValueError, match="spatial axes"):
        estimate_noise_sigma(channels, spatial=2)


@pytest.mark.parametrize("shape", [(9, 8), (7, 11), (5, 6, 7)], ids=["even", "odd", "3-D"])
def test_the_coefficients_a_clipped_pixel_reaches(shape):
    """Oracle: a coefficient sees a pixel when PyWavelets' band of a delta there is
    nonzero at it (the symmetric extension included)."""
    from deconv_cli.noise_model import _seen_by_detail

    pywt = pytest.importorskip("pywt")
    mask = np.random.default_rng(1).random(shape) < 0.08
    expected = np.zeros_like(pywt.dwtn(np.zeros(shape), "db2")["d" * len(shape)], dtype=bool)
    for index in zip(*np.nonzero(mask), strict=True):
        delta = np.zeros(shape)
        delta[index] = 1
        expected |= pywt.dwtn(delta, "db2")["d" * len(shape)] != 0
    np.testing.assert_array_equal(_seen_by_detail(mask), expected)
