"""The JPEG quantization-error model against sampled Laplacians and Pillow's files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deconv_cli.noise_jpeg import (
    LUMA,
    _fit_t,
    _laplacian_error,
    jpeg_tables_from_file,
    standard_tables,
)


@pytest.mark.parametrize("t", [0.05, 1.0, 6.0])
def test_laplacian_error_equals_a_sampled_one(t):
    c = np.random.default_rng(0).laplace(scale=1 / t, size=400_000)
    assert _laplacian_error(t) == pytest.approx(np.mean((c - np.round(c)) ** 2), rel=0.02)


def test_laplacian_error_limits():
    assert _laplacian_error(1e-3) == pytest.approx(1 / 12, rel=1e-2)  # uniform
    assert _laplacian_error(np.inf) == 0


@pytest.mark.parametrize("t", [0.3, 2.0, 8.0])
def test_fit_recovers_the_rate_from_quantized_samples(t):
    c = np.random.default_rng(1).laplace(scale=1 / t, size=20_000)
    assert _fit_t(np.abs(np.round(c))) == pytest.approx(t, rel=0.1)


def test_tables_read_from_the_file(tmp_path):
    image = (np.random.default_rng(2).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "q50.jpg", quality=50)
    tables = jpeg_tables_from_file(tmp_path / "q50.jpg")
    np.testing.assert_array_equal(tables.luma, LUMA)  # quality 50 is Annex K's table itself
    assert tables.chroma[0, 0] == 17 and tables.subsampling == (2, 2)  # Pillow's 4:2:0
    Image.fromarray(image).save(tmp_path / "q90.jpg", quality=90, subsampling=0)
    tables = jpeg_tables_from_file(tmp_path / "q90.jpg")
    assert tables.subsampling == (1, 1)
    np.testing.assert_array_equal(tables.luma, standard_tables(90).luma)
    assert tables.luma[0, 0] == 3  # floor((16 · 20 + 50) / 100)
    Image.fromarray(image[..., 0]).save(tmp_path / "grey.png")
    assert jpeg_tables_from_file(tmp_path / "grey.png") is None
    assert jpeg_tables_from_file(tmp_path / "missing.jpg") is None
