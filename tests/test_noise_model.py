"""The noise estimate against the truth: the std of (data - clean) on synthetic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deconv_cli.noise_model import NoiseEstimate, estimate_noise


@pytest.mark.parametrize("sigma", [0.005, 0.02, 0.05])
def test_white_gaussian_sigma_near_the_truth(sigma):
    rng = np.random.default_rng(1)
    clean = ndimage.gaussian_filter(rng.random((128, 128)), 3)
    noisy = clean + rng.normal(0, sigma, clean.shape)
    found = estimate_noise(noisy)
    assert isinstance(found, NoiseEstimate)
    assert found.sigma == pytest.approx(np.std(noisy - clean), rel=0.1)
    assert found.gain == 0
    assert found.kind == "gaussian"


def test_constant_image_has_no_noise():
    found = estimate_noise(np.full((16, 16), 0.25))
    assert found.sigma == pytest.approx(0, abs=1e-12)
    assert found.describe().startswith("gaussian, σ = ")
