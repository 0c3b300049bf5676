"""The noise estimate against the truth: the std of (data - clean) on synthetic cases.

The clean image is a crop of scikit-image's ``camera`` blurred by a gaussian; JPEG
data is written and read back by Pillow, independently of the code under test.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from deconv_cli.noise_jpeg import jpeg_tables_from_file
from deconv_cli.noise_model import NoiseEstimate, estimate_noise, estimate_noise_sigma


@pytest.fixture(scope="module")
def clean():
    from skimage import data

    return ndimage.gaussian_filter(data.camera()[128:256, 160:288] / 255.0, 1.5)


@pytest.fixture(scope="module")
def clean_rgb():
    from skimage import data

    image = data.astronaut()[64:192, 192:320] / 255.0
    return ndimage.gaussian_filter(image, (1.5, 1.5, 0))


def jpeg_round_trip(image: np.ndarray, quality: int) -> tuple[np.ndarray, io.BytesIO]:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer), dtype=np.float64) / 255
    buffer.seek(0)
    return decoded, buffer


@pytest.mark.parametrize("sigma", [0.002, 0.01, 0.05])
def test_white_gaussian_sigma_within_10_percent(clean, sigma):
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape)
    found = estimate_noise(noisy)
    assert isinstance(found, NoiseEstimate)
    assert found.sigma == pytest.approx(np.std(noisy - clean), rel=0.1)
    assert (found.gain, found.kind) == (0, "gaussian")
    assert found.variance(0.5) == pytest.approx(found.sigma**2)


def test_poisson_gain_within_25_percent(clean):
    photons = 200
    rng = np.random.default_rng(2)
    noisy = rng.poisson(clean * photons) / photons + rng.normal(0, 0.002, clean.shape)
    found = estimate_noise(noisy)
    assert found.kind == "poisson-gaussian"
    assert found.gain == pytest.approx(1 / photons, rel=0.25)
    assert found.sigma == pytest.approx(np.std(noisy - clean), rel=0.1)
    # the model's variance at the clean image's mean level is the image's mean variance
    assert found.variance(clean.mean()) == pytest.approx(found.sigma**2, rel=0.05)


def test_8bit_floor_is_counted(clean):
    quantized = np.round(clean * 255) / 255
    truth = np.std(quantized - clean)
    assert truth == pytest.approx(1 / 255 / np.sqrt(12), rel=0.05)  # the uniform floor
    found = estimate_noise(quantized.astype(np.float32))
    assert found.kind == "8-bit"
    assert found.sigma == pytest.approx(truth, rel=0.1)


@pytest.mark.parametrize("quality", [75, 90])
@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_jpeg_error_within_a_factor_1_4(clean, clean_rgb, quality, colour):
    image = clean_rgb if colour else clean
    decoded, buffer = jpeg_round_trip(image, quality)
    truth = np.std(decoded - image)
    for tables in (jpeg_tables_from_file(buffer), None):
        found = estimate_noise(decoded, jpeg_tables=tables)
        assert found.kind.startswith("jpeg q≈")
        assert truth / 1.4 < found.sigma < truth * 1.4
    # the wavelet estimate sees little of it: what the JPEG model is for
    assert estimate_noise_sigma(decoded) < truth / 1.4


def test_white_float_data_is_not_taken_for_jpeg_or_8bit(clean):
    noisy = clean + np.random.default_rng(3).normal(0, 0.01, clean.shape)
    assert estimate_noise(noisy).kind == "gaussian"


def test_constant_image_has_no_noise():
    for value in (0.0, 0.25):
        found = estimate_noise(np.full((64, 64), value))
        assert found.sigma == pytest.approx(0, abs=1e-12)
        assert found.describe().startswith("gaussian, σ = ")


@pytest.mark.parametrize("shape", [(8, 8), (1, 50), (50, 1), (3, 3, 3), (9, 200)])
def test_tiny_images(shape):
    noisy = np.random.default_rng(4).normal(0.5, 0.05, shape)
    found = estimate_noise(noisy)
    assert np.isfinite(found.sigma) and found.sigma >= 0


def test_invert_reads_the_jpeg_tables(tmp_path, clean):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    Image.fromarray(np.round(clean * 255).astype(np.uint8)).save(tmp_path / "b.jpg", quality=90)
    args = ["invert", str(tmp_path / "b.jpg"), "-k", "gaussian:sigma=1.5", "--iterations", "5"]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    assert "noise estimated: jpeg q≈90, σ = " in result.output
