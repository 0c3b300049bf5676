"""Metrics against skimage.metrics and hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from skimage.metrics import (
    mean_squared_error,
    normalized_root_mse,
    peak_signal_noise_ratio,
    structural_similarity,
)

from deconv_cli import metrics
from deconv_cli.errors import InputError

ALL = ["mse", "rmse", "nrmse", "psnr", "ssim", "mae", "max_error"]


def _images(shape, seed=0):
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0.1, 0.9, size=shape)
    candidate = np.clip(reference + rng.normal(0.0, 0.05, size=shape), 0.0, 1.0)
    return reference, candidate


def _oracle(name, reference, candidate, data_range):
    channel_axis = -1 if reference.ndim == 3 else None
    return {
        "mse": lambda: mean_squared_error(reference, candidate),
        "rmse": lambda: np.sqrt(mean_squared_error(reference, candidate)),
        "nrmse": lambda: normalized_root_mse(reference, candidate, normalization="euclidean"),
        "psnr": lambda: peak_signal_noise_ratio(reference, candidate, data_range=data_range),
        "ssim": lambda: structural_similarity(
            reference, candidate, data_range=data_range, channel_axis=channel_axis
        ),
        "mae": lambda: np.abs(reference - candidate).sum() / reference.size,
        "max_error": lambda: np.abs(reference - candidate).max(),
    }[name]()


def test_registry_order_and_names():
    assert metrics.metric_names() == ALL
    assert [m for m in ALL if metrics.METRICS[m].higher_is_better] == ["psnr", "ssim"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "shape, data_range",
    [((32, 40), 1.0), ((24, 24, 3), 1.0), ((20, 30), 2.0)],
    ids=["grey", "rgb", "grey-range-2"],
)
def test_matches_skimage(name, shape, data_range):
    reference, candidate = _images(shape)
    expected = _oracle(name, reference, candidate, data_range)
    got = metrics.METRICS[name].function(reference, candidate, data_range)
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mse", 0.5),
        ("rmse", math.sqrt(0.5)),
        ("nrmse", 1.0),  # |[0,1] - [1,1]| = 1, |[0,1]| = 1
        ("psnr", 10 * math.log10(2.0)),
        ("mae", 0.5),
        ("max_error", 1.0),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hand_computed_two_pixels(name, expected):
    reference, candidate = np.array([[0.0, 1.0]]), np.array([[1.0, 1.0]])
    assert metrics.METRICS[name].function(reference, candidate, 1.0) == pytest.approx(expected)


def test_constant_offset():
    reference = np.full((16, 16), 0.25)
    values = metrics.compute_metrics(reference, reference + 0.1, ["mse", "psnr", "mae"])
    assert values["mse"] == pytest.approx(0.01)
    assert values["psnr"] == pytest.approx(20.0)
    assert values["mae"] == pytest.approx(0.1)


def test_identical_images_without_warnings():
    reference, _ = _images((16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = metrics.compute_metrics(reference, reference.copy())
    assert values["psnr"] == math.inf
    assert values["ssim"] == pytest.approx(1.0)
    assert values["mse"] == values["rmse"] == values["nrmse"] == 0.0
    assert values["mae"] == values["max_error"] == 0.0


@pytest.mark.parametrize(
    "candidate, expected",
    [(np.zeros((8, 8)), 0.0), (np.full((8, 8), 0.5), math.inf)],
    ids=["both-zero", "zero-reference"],
)
def test_nrmse_of_zero_reference(candidate, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.nrmse(np.zeros((8, 8)), candidate) == expected


def test_psnr_depends_on_data_range_ssim_on_scale_only():
    reference, candidate = _images((16, 16))
    assert metrics.psnr(reference, candidate, 2.0) == pytest.approx(
        metrics.psnr(reference, candidate, 1.0) + 20 * math.log10(2.0)
    )
    # SSIM is invariant when data and data range scale together.
    assert metrics.ssim(reference * 255, candidate * 255, 255.0) == pytest.approx(
        metrics.ssim(reference, candidate, 1.0)
    )


def test_multichannel_ssim_is_mean_of_channels():
    reference, candidate = _images((16, 16, 3), seed=3)
    per_channel = [
        structural_similarity(reference[..., c], candidate[..., c], data_range=1.0)
        for c in range(3)
    ]
    assert metrics.ssim(reference, candidate) == pytest.approx(np.mean(per_channel))


def test_ssim_needs_seven_pixels():
    with pytest.raises(InputError, match=r"at least 7×7.*got 6×10.*`metrics`"):
        metrics.ssim(np.zeros((6, 10)), np.zeros((6, 10)))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(InputError, match=r"reference 4×5, candidate 4×6"):
        metrics.mse(np.zeros((4, 5)), np.zeros((4, 6)))


def test_resolve_metrics():
    assert metrics.resolve_metrics(None) == ALL
    assert metrics.resolve_metrics(["ssim", "mse", "ssim"]) == ["mse", "ssim"]
    with pytest.raises(InputError, match=r"^metrics: `snr` is not one of `mse`.*`max_error`"):
        metrics.resolve_metrics(["snr"])


def test_compute_metrics_returns_requested_in_registry_order():
    reference, candidate = _images((8, 8))
    values = metrics.compute_metrics(reference, candidate, ["max_error", "psnr"])
    assert list(values) == ["psnr", "max_error"]
