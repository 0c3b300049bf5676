"""The wavelet noise estimate against skimage.restoration.estimate_sigma (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.restoration import estimate_sigma

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
