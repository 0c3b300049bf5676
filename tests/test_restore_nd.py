"""The solvers on volumes (Z, Y, X) and signals through the N-D operator, against
independent oracles: skimage's N-D Richardson-Lucy, dense least squares and dense
Tikhonov solves (numpy.linalg), scipy.ndimage for the Laplacian."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deconv_cli.operators import Convolution, Geometry
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.iterative import cgls, lsqr
from deconv_cli.restore.richardson_lucy import richardson_lucy


def gaussian(sigmas) -> np.ndarray:
    """A normalized separable gaussian with a radius of 2σ (at least 1) per axis."""
    kernel = np.ones(())
    for s in sigmas:
        r = max(1, int(2 * s + 0.5))
        t = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * s * s))
        kernel = np.multiply.outer(kernel, t)
    return kernel / kernel.sum()


def phantom(shape, seed=0) -> np.ndarray:
    """Smoothed random blobs in [0.05, 1.05]."""
    volume = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return volume + 0.05


def single(kernel, shape, **flags) -> Convolution:
    """The operator of one kernel on a grey array of ``shape`` (a ``*spatial × 1`` layout)."""
    return Convolution(kernel[None, None], tuple(shape) + (1,), Geometry.create(**flags))


def dense(op) -> np.ndarray:
    n = op.shape[1]
    return np.array([op.forward(np.eye(n)[j].reshape(op.input_shape)).ravel() for j in range(n)]).T


# -- Richardson-Lucy ---------------------------------------------------------------------


def test_rl_3d_equals_skimage_where_the_models_coincide():
    """skimage's N-D RL pads with zeros and takes Aᵀ1 = 1: true away from the border.
    With its start (0.5) and no acceleration, plain RL agrees there, iteration after
    iteration; the border band (Aᵀ1 < 1) spreads by the kernel's reach each step."""
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    kernel = gaussian((0.5, 1.0, 1.0))  # 3×5×5: anisotropic
    x_true = phantom((20, 36, 36))
    op = single(kernel, x_true.shape, boundary="constant")
    y = op.forward(x_true[..., None])[..., 0]
    at1 = op.adjoint(np.ones(op.output_shape))[..., 0]
    y = y * 0.5 / (y.sum() / at1.sum())  # so that the flat start is skimage's 0.5
    iterations = 3
    ours = richardson_lucy(y[..., None], op, iterations=iterations, tol=0, accelerate=False)
    theirs = sk_richardson_lucy(y, kernel, num_iter=iterations, clip=False)
    assert ours.image.shape == x_true.shape + (1,)
    inner = tuple(
        slice(r * (2 * iterations + 1), -r * (2 * iterations + 1))
        for r in np.array(kernel.shape) // 2
    )
    assert ours.image[inner][..., 0].size >= 4 * 8 * 8
    np.testing.assert_allclose(ours.image[inner][..., 0], theirs[inner], rtol=1e-9)
    # and the border band does differ: skimage's model is not the operator's there
    assert not np.allclose(ours.image[..., 0], theirs, rtol=1e-3)


@pytest.mark.parametrize("flags", [{}, {"mode": "valid"}], ids=["reflect", "valid-unknown"])
def test_rl_3d_gains_with_the_default_stopping_rule(flags):
    """The default rule (the discrepancy with the noise estimated per YX plane) stops
    within the cap, and the result is closer to the truth than the data."""
    kernel = gaussian((0.8, 1.2, 1.2))
    x_true = phantom((16, 40, 40), seed=1)
    op = single(kernel, x_true.shape, **flags)
    rng = np.random.default_rng(2)
    y = op.forward(x_true[..., None]) + 0.01 * rng.standard_normal(op.output_shape)
    result = richardson_lucy(np.maximum(y, 0), op)
    assert result.converged
    assert result.params["noise_sigma"] == pytest.approx(0.01, rel=0.25)
    if not flags:
        assert np.linalg.norm(result.image - x_true[..., None]) < 0.8 * np.linalg.norm(
            y - x_true[..., None]
        )


def test_rl_3d_channels_are_independent():
    kernel = gaussian((0.7, 1.0, 1.0))
    rng = np.random.default_rng(3)
    x = rng.random((8, 12, 10, 2)) + 0.1
    bank = np.broadcast_to(kernel, (2, 1) + kernel.shape)
    op = Convolution(bank, x.shape, Geometry.create(boundary="nearest"), groups=2)
    y = op.forward(x)
    both = richardson_lucy(y, op, iterations=6, tol=0).image
    one = richardson_lucy(
        y[..., 1:], single(kernel, x.shape[:3], boundary="nearest"), iterations=6, tol=0
    ).image
    np.testing.assert_allclose(both[..., 1:], one, rtol=1e-9)


def test_rl_1d_needs_a_noise_level_for_the_default_rule():
    from deconv_cli.errors import DeconvError

    op = single(gaussian((1.5,)), (64,))
    y = op.forward(phantom((64,))[:, None])
    with pytest.raises(DeconvError, match="noise_sigma: .*2 or 3 spatial axes"):
        richardson_lucy(y, op)
    assert richardson_lucy(y, op, noise_sigma=0.01).iterations >= 1


# -- least squares ------------------------------------------------------------------------


@pytest.mark.parametrize("solver", [cgls, lsqr], ids=["cgls", "lsqr"])
@pytest.mark.parametrize(
    "kernel, flags",
    [
        (gaussian((0.7, 0.7, 0.7)), {"mode": "valid"}),
        (np.full((1, 1, 4), 0.25), {"mode": "valid", "boundary": "constant"}),  # spatial plan
        (np.random.default_rng(9).random((2, 3, 2)), {"stride": (1, 2, 2), "boundary": "mirror"}),
    ],
    ids=["valid", "thin-valid", "strided-mirror"],
)
def test_least_squares_3d_is_the_dense_minimum_norm_solution(solver, kernel, flags):
    op = single(kernel, (4, 6, 5), **flags)
    y = np.random.default_rng(6).random(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0]
    result = solver(y, op, iterations=3000, tol=1e-13)
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-8)


# -- Tikhonov, Wiener, GCV -----------------------------------------------------------------

LINEAR_CASES = {  # kernel, flags: the closed forms (FFT, DCT) and CG (plain, preconditioned)
    "wrap-fft": (gaussian((0.6, 0.8, 0.7)), {"boundary": "wrap"}),
    "reflect-dct": (gaussian((0.6, 0.8, 0.7)), {"boundary": "reflect"}),
    "reflect-asymmetric-cg": (np.random.default_rng(3).random((2, 3, 2)), {"boundary": "reflect"}),
    "constant-cg": (gaussian((0.6, 0.8, 0.7)), {"boundary": "constant"}),
    "valid-cg": (gaussian((0.6, 0.6, 0.6)), {"mode": "valid"}),
}
LAPLACIAN_MODES = {"wrap": "wrap", "reflect": "reflect", "constant": "constant"}


def dense_laplacian(shape, boundary: str) -> np.ndarray:
    """The 7-point Laplacian as a matrix, by scipy.ndimage.correlate (not the code)."""
    stencil = np.zeros((3, 3, 3))
    stencil[1, 1, 1] = -6
    for axis in range(3):
        index = [1, 1, 1]
        for side in (0, 2):
            index[axis] = side
            stencil[tuple(index)] = 1
    n = int(np.prod(shape))
    return np.array(
        [
            ndimage.correlate(np.eye(n)[j].reshape(shape), stencil, mode=boundary).ravel()
            for j in range(n)
        ]
    ).T


@pytest.mark.parametrize("method", ["tikhonov", "wiener"])
@pytest.mark.parametrize("case", LINEAR_CASES.values(), ids=LINEAR_CASES.keys())
def test_tikhonov_and_wiener_3d_equal_the_dense_solution(method, case):
    from deconv_cli.restore.linear import tikhonov, wiener

    kernel, flags = case
    shape = (4, 5, 6)
    op = single(kernel, shape, **flags)
    a = dense(op)
    y = np.random.default_rng(7).random(op.output_shape)
    nu = 0.02
    if method == "tikhonov":
        boundary = "reflect" if flags.get("mode") == "valid" else flags["boundary"]
        lap = dense_laplacian(shape, LAPLACIAN_MODES[boundary])
        regularizer = lap.T @ lap
        options = RestoreOptions(reg=nu, tol=1e-12, iterations=5000)
        result = tikhonov(y, op, options)
    else:
        regularizer = np.eye(a.shape[1])
        result = wiener(y, op, RestoreOptions(nsr=nu, tol=1e-12, iterations=5000))
    expected = np.linalg.solve(a.T @ a + nu * regularizer, a.T @ y.ravel())
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-8)
    closed = "cg" not in next(k for k, v in LINEAR_CASES.items() if v is case)
    assert result.params["solver"].startswith("closed form") == closed


def test_gcv_3d_chooses_the_dense_gcv_minimum():
    """On a wrap-around problem GCV is exact in the spectrum: its ν is the minimizer of
    ``n ‖(I − H_ν) y‖² / (n − tr H_ν)²`` computed with dense matrices."""
    from scipy.optimize import minimize_scalar

    from deconv_cli.restore.linear import tikhonov

    shape = (6, 6, 8)
    op = single(gaussian((0.8, 1.0, 1.0)), shape, boundary="wrap")
    a = dense(op)
    lap = dense_laplacian(shape, "wrap")
    x = phantom(shape, seed=4)[..., None]
    y = op.forward(x) + 0.02 * np.random.default_rng(5).standard_normal(op.output_shape)
    n = y.size

    def gcv(log_nu: float) -> float:
        h = a @ np.linalg.solve(a.T @ a + 10**log_nu * lap.T @ lap, a.T)
        residual = y.ravel() - h @ y.ravel()
        return n * float(residual @ residual) / (n - np.trace(h)) ** 2

    grid = np.linspace(-6, 2, 33)
    best = grid[int(np.argmin([gcv(g) for g in grid]))]
    found = minimize_scalar(gcv, bounds=(best - 0.25, best + 0.25), method="bounded")
    result = tikhonov(y, op, RestoreOptions())
    assert result.params["reg_rule"] == "GCV"
    assert np.log10(result.params["reg"]) == pytest.approx(found.x, abs=0.01)


# -- inverse and pseudo-inverse ---------------------------------------------------------


def test_inverse_3d_recovers_the_volume():
    """By DCT division (``inverse`` asks :func:`deconv_cli.analysis.null_space` first)."""
    from deconv_cli.restore.inverse import inverse

    op = single(gaussian((0.5, 0.6, 0.6)), (6, 8, 7), boundary="reflect")
    x = phantom((6, 8, 7), seed=8)[..., None]
    result = inverse(op.forward(x), op, RestoreOptions())
    np.testing.assert_allclose(result.image, x, atol=1e-9)


def test_pinv_3d_equals_the_dense_pseudo_inverse():
    """A 2-tap average along each axis on an even wrap-around grid has spectral zeros:
    the truncated pseudo-inverse is numpy's."""
    from deconv_cli.restore.inverse import pinv

    op = single(np.full((2, 2, 2), 0.125), (4, 6, 4), boundary="wrap")
    y = np.random.default_rng(10).random(op.output_shape)
    result = pinv(y, op, RestoreOptions())
    expected = np.linalg.pinv(dense(op), rcond=1e-10) @ y.ravel()
    assert result.params["truncated"] > 0
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-9)


# -- the array namespace -------------------------------------------------------------------

NAMESPACE_OPTIONS = {
    "iterations": {"iterations": 5, "tol": 0},
    "discrepancy": {"noise_sigma": 0.01},
    "tv": {"tv": 0.002, "iterations": 4},
    "plain": {"iterations": 4, "tol": 0, "accelerate": False},
}


@pytest.mark.parametrize("options", NAMESPACE_OPTIONS.values(), ids=NAMESPACE_OPTIONS.keys())
@pytest.mark.parametrize(
    "shape, flags",
    [((24, 20), {"boundary": "constant"}), ((6, 10, 9), {"boundary": "reflect"})],
    ids=["2d-constant", "3d-reflect"],
)
def test_rl_computes_in_the_data_s_array_namespace(shape, flags, options):
    """array_api_strict data in, array_api_strict result out, equal to the numpy run (the
    numpy run takes the grid plan, the other the operator's FFT plan in that namespace)."""
    xps = pytest.importorskip("array_api_strict")
    kernel = gaussian((0.7,) * len(shape))
    op = Convolution(kernel[None, None], shape + (1,), Geometry.create(**flags), engine="fft")
    x = phantom(shape, seed=11)[..., None]
    rng = np.random.default_rng(12)
    y = np.maximum(op.forward(x) + 0.01 * rng.standard_normal(op.output_shape), 0)
    expected = richardson_lucy(y, op, **options)
    got = richardson_lucy(xps.asarray(y), op, **options)
    assert type(got.image) is type(xps.asarray(y))
    assert got.iterations == expected.iterations
    np.testing.assert_allclose(np.from_dlpack(got.image), expected.image, rtol=1e-9, atol=1e-12)
    assert got.residual == pytest.approx(expected.residual, rel=1e-9)


def test_solvers_take_the_volume_conv_operator():
    """``ConvOperator(kernel, (Z, Y, X), spatial=3)``, the commands' operator for a ZYX
    volume, gives the same results as its ``Convolution`` (a ``Z×Y×X×1`` layout)."""
    from deconv_cli.operators import ConvOperator
    from deconv_cli.restore.linear import tikhonov

    kernel = gaussian((0.6, 0.9, 0.9))
    x = phantom((8, 14, 12), seed=13)
    op = ConvOperator(kernel, x.shape, Geometry.create(boundary="nearest"), spatial=3)
    y = op.forward(x)
    rl = richardson_lucy(y, op, iterations=6, tol=0)
    rl_core = richardson_lucy(y[..., None], op.core, iterations=6, tol=0)
    assert rl.image.shape == x.shape
    np.testing.assert_allclose(rl.image, rl_core.image[..., 0], rtol=1e-10)
    ls = cgls(y, op, iterations=20, tol=0)
    np.testing.assert_allclose(
        ls.image,
        cgls(y[..., None], op.core, iterations=20, tol=0).image[..., 0],
        rtol=1e-8,
        atol=1e-12,
    )
    reg = tikhonov(y, op, RestoreOptions(reg=0.01, tol=1e-12))
    reg_core = tikhonov(y[..., None], op.core, RestoreOptions(reg=0.01, tol=1e-12))
    np.testing.assert_allclose(reg.image, reg_core.image[..., 0], rtol=1e-8, atol=1e-12)
