"""Richardson-Lucy's stopping rule on photon (Poisson) data, in 2-D and 3-D: the Poisson
deviance against scipy's ``kl_div``, the estimated photon scale against the one the data
were drawn with, and the stopping point against a brute-force sweep scored on the truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import kl_div
from skimage.metrics import peak_signal_noise_ratio

from deconv_cli.inversion import build_problem
from deconv_cli.operators import Geometry
from deconv_cli.restore.richardson_lucy import richardson_lucy
from deconv_cli.restore.rl_steps import blocks, ratio


def gaussian(sigmas) -> np.ndarray:
    """A normalized separable gaussian with a radius of 3σ per axis."""
    kernel = np.ones(())
    for s in sigmas:
        r = int(3 * s + 0.5)
        kernel = np.multiply.outer(kernel, np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * s * s)))
    return kernel / kernel.sum()


def blobs(shape, seed) -> np.ndarray:
    """Sharp-edged objects on a dim background, in [0.1, 1]: smoothed binary blobs."""
    from skimage.data import binary_blobs

    side = max(shape)
    mask = binary_blobs(side, blob_size_fraction=0.2, n_dim=len(shape), rng=seed)
    mask = mask[tuple(slice(0, n) for n in shape)].astype(np.float64)
    return 0.1 + 0.9 * ndimage.gaussian_filter(mask, 0.7)


@pytest.mark.parametrize("scale", [0.0, 3.0], ids=["poisson", "poisson+gaussian"])
@pytest.mark.parametrize("grouped", [True, False], ids=["blocks", "whole"])
def test_deviance_equals_scipy_kl_div(scale, grouped):
    rng = np.random.default_rng(0)
    y = rng.uniform(0.05, 1, (2, 70, 30)).astype(np.float32)
    ax = (y * rng.uniform(0.8, 1.25, y.shape)).astype(np.float32)
    ax[0, :3] = -0.1  # floored in the ratio and in the deviance
    s, b = 500.0, scale
    floor = np.float32(1e-3)
    out = np.empty_like(y)
    parts = blocks(y.shape) if grouped else None
    scratch = np.empty((2 * 70, 30), dtype=np.float32) if grouped else None
    _, deviance = ratio(parts, scratch, ax, y, out, floor, False, (s, b))
    model = np.maximum(ax.astype(np.float64), float(floor))
    expected = 2 * kl_div(s * y.astype(np.float64) + b, s * model + b).sum()
    assert deviance == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(out, y / model, rtol=1e-6)


def sweep_and_default(truth, kernel, photons, spatial, unknown, cap):
    """(default result, PSNR per iteration 1..cap with ``tol=0``, the true photon scale)."""
    geometry = Geometry.create(boundary="reflect")
    problem = build_problem(kernel, truth.shape, geometry, dtype=np.float64, spatial=spatial)
    clean = problem.op.forward(truth)
    if unknown:  # a crop of a larger scene: the data see beyond the frame
        margin = tuple(
            slice(m // 2, n - m // 2) for n, m in zip(truth.shape, kernel.shape, strict=True)
        )
        truth, clean = truth[margin], clean[margin]
        geometry = Geometry.create(boundary="constant")
    rng = np.random.default_rng(1)
    data = (rng.poisson(clean * photons) / photons).astype(np.float32)
    problem = build_problem(
        kernel, data.shape, geometry, unknown_boundary=unknown, dtype=np.float32, spatial=spatial
    )
    span = float(np.ptp(truth))
    scores = []

    def score(k, x, residual):
        scores.append(peak_signal_noise_ratio(truth, problem.crop(x), data_range=span))

    richardson_lucy(data, problem.op, iterations=cap, tol=0, callback=score)
    result = richardson_lucy(data, problem.op, iterations=cap)
    psnr = peak_signal_noise_ratio(truth, problem.crop(result.image), data_range=span)
    return result, psnr, np.array(scores)


@pytest.mark.parametrize(
    "photons, unknown",
    [(100.0, False), (3000.0, True)],
    ids=["100-photons-reflect", "3000-photons-unknown"],
)
def test_poisson_rule_2d_stops_near_the_best_iteration(photons, unknown):
    truth = blobs((96, 96), seed=3)
    result, psnr, scores = sweep_and_default(truth, gaussian((2.0, 2.0)), photons, 2, unknown, 80)
    assert result.params["photons"] == pytest.approx(photons, rel=0.1)
    assert result.converged and result.iterations < 80
    assert psnr >= scores.max() - 0.5
    assert psnr >= scores[-1] + 1.0  # the cap itself is past the best: stopping matters


def test_poisson_rule_3d_unknown_boundary_stops_near_the_best_iteration():
    truth = blobs((40, 64, 64), seed=4)
    photons = 1000.0
    result, psnr, scores = sweep_and_default(truth, gaussian((2.0, 1.5, 1.5)), photons, 3, True, 40)
    assert result.params["photons"] == pytest.approx(photons, rel=0.1)
    assert result.converged and result.iterations < 40
    assert psnr >= scores.max() - 0.5
    assert psnr >= scores[-1] + 1.0


def test_white_noise_keeps_the_gaussian_rule():
    """Data with signal-independent noise: no photon scale, the ‖Ax − y‖² discrepancy."""
    truth = blobs((96, 96), seed=5)
    kernel = gaussian((2.0, 2.0))
    problem = build_problem(kernel, truth.shape, Geometry.create(), dtype=np.float32)
    rng = np.random.default_rng(2)
    data = problem.op.forward(truth) + 0.01 * rng.standard_normal(truth.shape)
    result = richardson_lucy(data.astype(np.float32), problem.op, iterations=100)
    assert "photons" not in result.params
    assert result.params["noise_sigma"] == pytest.approx(0.01, rel=0.2)
