"""The default deblur's rules against brute force: parameter choices against sweeps scored
on the truth, the splitting's result against the TV objective computed with dense
matrices, and no harm on a small seeded matrix."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, transform
from skimage.metrics import peak_signal_noise_ratio

from deconv_cli.inversion import build_problem, invert
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.linear import wiener
from deconv_cli.restore.parameter_rules import gcv_noise_sigma
from deconv_cli.restore.tv import tv_deconvolve


def psnr(reference, image) -> float:
    return peak_signal_noise_ratio(reference, np.clip(image, 0, 1), data_range=1.0)


def scene(name: str, size: int) -> np.ndarray:
    image = getattr(data, name)().astype(np.float64) / 255
    if image.ndim == 3:
        image = image @ [0.2125, 0.7154, 0.0721]
    return transform.resize(image, (size, size), anti_aliasing=True)


def crop_case(name, kernel_spec, sigma, size=96, seed=0):
    """A crop of a larger blurred scene (the ``unknown`` boundary): truth, data, kernel
    (a spec or an array)."""
    kernel = load_kernel(kernel_spec).array if isinstance(kernel_spec, str) else kernel_spec
    kh, kw = kernel.shape
    big = scene(name, size + 2 * max(kh, kw))
    top, left = max(kh, kw), max(kh, kw)
    truth = big[top : top + size, left : left + size]
    extended = big[top - kh // 2 : top + size + kh - 1 - kh // 2, left - kw // 2 :]
    extended = extended[:, : size + kw - 1]
    op = ConvOperator(kernel, extended.shape, Geometry.create(mode="valid"))
    y = op.forward(extended) + sigma * np.random.default_rng(seed).standard_normal((size, size))
    return truth, y, kernel


def test_gcv_noise_level_matches_the_noise_drawn():
    """Wahba's residual estimate on the tapered periodic model, against the known σ."""
    for sigma, spec in [(0.01, "gaussian:sigma=2"), (0.002, "motion:length=9,angle=30")]:
        truth, y, kernel = crop_case("camera", spec, sigma, size=128)
        problem = build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=True)
        estimate = gcv_noise_sigma(y, problem.op)
        assert abs(estimate / sigma - 1) < 0.15, (sigma, estimate)


@pytest.mark.parametrize(
    "spec,sigma",
    [("gaussian:sigma=1.5", 0.01), ("motion:length=9,angle=30", 0.005)],
    ids=["gaussian", "motion"],
)
def test_wiener_nsr_is_near_the_best_of_a_sweep(spec, sigma):
    truth = scene("camera", 96)
    op = ConvOperator(load_kernel(spec).array, truth.shape, Geometry.create(boundary="wrap"))
    y = op.forward(truth) + sigma * np.random.default_rng(5).standard_normal(truth.shape)
    auto = wiener(y, op, RestoreOptions())
    assert auto.params["nsr_rule"].startswith("max(GCV")
    sweep = auto.params["nsr"] * 10.0 ** np.arange(-2.0, 2.01, 0.25)
    best = max(psnr(truth, wiener(y, op, RestoreOptions(nsr=v)).image) for v in sweep)
    assert psnr(truth, auto.image) >= best - 0.5


@pytest.mark.parametrize(
    "name,spec,sigma",
    [
        ("camera", "gaussian:sigma=1.5", 0.01),
        ("coins", "motion:length=9,angle=60", 0.005),
        ("text", "disk:radius=2", 0.02),
    ],
    ids=["camera-gaussian", "coins-motion", "text-disk"],
)
def test_tv_discrepancy_lam_is_within_1db_of_a_sweep(name, spec, sigma):
    """The rule's λ against λ × 4^k (k = −2 … 2) scored on the truth; and its residual is
    the noise's energy (the rule's defining equation, on the crop it solves)."""
    truth, y, kernel = crop_case(name, spec, sigma)
    problem = build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=True)
    auto = tv_deconvolve(y, problem.op)
    lam = auto.params["lam"]
    assert "discrepancy" in auto.params["lam_rule"]
    scores = [
        psnr(truth, problem.crop(tv_deconvolve(y, problem.op, lam=lam * f).image))
        for f in (1 / 16, 1 / 4, 1, 4, 16)
    ]
    assert psnr(truth, problem.crop(auto.image)) >= max(scores) - 1.0
    r = problem.op.forward(auto.image) - y
    assert 0.7 < np.mean(r**2) / sigma**2 < 1.3


def gradient_matrix(shape) -> np.ndarray:
    """Neumann forward differences along each axis (the last first) as a dense
    ``d·n × n`` matrix."""
    n = int(np.prod(shape))
    index = np.arange(n).reshape(shape)
    rows = []
    for axis in reversed(range(len(shape))):
        d = np.zeros((n, n))
        a = np.take(index, np.arange(shape[axis] - 1), axis=axis)
        b = np.take(index, np.arange(1, shape[axis]), axis=axis)
        d[a.ravel(), b.ravel()] = 1
        d[a.ravel(), a.ravel()] = -1
        rows.append(d)
    return np.vstack(rows)


def tv_objective(x, y, matrix, grad, lam):
    """``½‖A x − y‖² + λ Σ |∇x|`` (isotropic, Neumann), by dense algebra."""
    r = matrix @ x.ravel() - y.ravel()
    g = (grad @ x.ravel()).reshape(-1, x.size)
    return 0.5 * r @ r + lam * np.sqrt((g**2).sum(axis=0)).sum()


def chambolle_pock(y, matrix, grad, lam, iterations=3000):
    """An independent TV solver: the primal-dual algorithm of Chambolle and Pock (2011)
    with dense matrices, ``τ σ ‖∇‖² < 1``."""
    n = matrix.shape[1]
    norm = np.linalg.norm(grad, 2)
    tau = sigma = 0.99 / norm
    prox = np.linalg.inv(np.eye(n) + tau * matrix.T @ matrix)
    x = np.zeros(n)
    bar = x.copy()
    p = np.zeros(grad.shape[0])
    aty = matrix.T @ y.ravel()
    for _ in range(iterations):
        p = (p + sigma * grad @ bar).reshape(-1, n)
        p /= np.maximum(1.0, np.sqrt((p**2).sum(axis=0)) / lam)
        p = p.ravel()
        new = prox @ (x - tau * grad.T @ p + tau * aty)
        bar = 2 * new - x
        x = new
    return x


VOLUME_KERNEL = np.exp(
    -np.add.outer(np.arange(-1, 1) ** 2, np.add.outer(*[np.arange(-1, 2) ** 2] * 2))
)


@pytest.mark.parametrize("rows", [None, 2], ids=["whole", "blocks"])
@pytest.mark.parametrize("spatial", [2, 3], ids=["image", "volume"])
def test_splitting_reaches_the_tv_minimizer(spatial, rows, monkeypatch):
    """On a tiny unknown-boundary problem the result's TV objective, computed with dense
    matrices, equals the minimum an independent solver (Chambolle-Pock) reaches: an
    image, and a volume (isotropic TV over its three axes); also when the Fourier
    division and the shrinkage run in blocks of 2 along the first spatial axis (a
    3-D grid once mixed up its first and second axes there)."""
    if rows is not None:
        from deconv_cli.restore import tv

        for function in (tv._times_conjugate, tv._HQS._divide, tv._split, tv._distances):
            monkeypatch.setattr(function, "__defaults__", (rows,))
    rng = np.random.default_rng(3)
    if spatial == 2:
        kernel = load_kernel("motion:length=5,angle=30").array
        x = transform.resize(data.camera() / 255.0, (14, 14), anti_aliasing=True)
    else:
        kernel = VOLUME_KERNEL / VOLUME_KERNEL.sum()  # 2×3×3
        x = transform.resize(data.camera() / 255.0, (5, 7, 7), anti_aliasing=True)
    op = ConvOperator(kernel, x.shape, Geometry.create(mode="valid"), spatial=spatial)
    y = op.forward(x) + 0.01 * rng.standard_normal(op.output_shape)
    n = x.size
    matrix = np.array([op.forward(np.eye(n)[i].reshape(x.shape)).ravel() for i in range(n)]).T
    grad = gradient_matrix(x.shape)
    lam = 3e-3
    result = tv_deconvolve(y, op, lam=lam, iterations=1000, tol=0)
    reached = tv_objective(result.image, y, matrix, grad, lam)
    minimum = tv_objective(chambolle_pock(y, matrix, grad, lam), y, matrix, grad, lam)
    assert reached <= minimum * (1 + 1e-5)
    assert reached < tv_objective(np.full(x.shape, y.mean()), y, matrix, grad, lam)


NO_HARM = [
    (name, spec, noise)
    for name in ("camera", "coins")
    for spec in ("gaussian:sigma=2", "shake:size=13,seed=4")
    for noise in (0.002, 0.02)
]


@pytest.mark.parametrize("name,spec,sigma", NO_HARM, ids=["-".join(map(str, c)) for c in NO_HARM])
def test_default_beats_the_blurred_data(name, spec, sigma):
    """A seeded small matrix: the default (`auto`) on a crop with the unknown boundary."""
    truth, y, kernel = crop_case(name, spec, sigma, size=64, seed=len(name))
    problem = build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=True)
    result = invert(y.astype(np.float32), problem, "auto", RestoreOptions())
    assert psnr(truth, result.image) > psnr(truth, y) + 0.5


def test_unknown_boundary_beats_reflect_on_a_crop():
    """A crop of a larger scene: the unknown-boundary model beats the reflect model (with
    Tikhonov, which solves the model it is given; tv solves every padded boundary on the
    free padded grid, so both give it the same result)."""
    truth, y, kernel = crop_case("camera", "motion:length=15,angle=30", 0.005, size=96)
    scores = {}
    for unknown in (True, False):
        problem = build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=unknown)
        scores[unknown] = psnr(truth, invert(y, problem, "tikhonov", RestoreOptions()).image)
    assert scores[True] > scores[False] + 1.0
    tv = [
        invert(y, build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=u), "tv",
               RestoreOptions()).image
        for u in (True, False)
    ]  # fmt: skip
    assert psnr(truth, tv[1]) > scores[True]


def jpeg_case(name, kernel_spec, quality, size=96):
    """A crop of a larger scene blurred without noise and stored as an 8-bit JPEG."""
    from deconv_cli.noise import parse_noise

    truth, clean, kernel = crop_case(name, kernel_spec, 0.0, size=size)
    y = parse_noise(f"jpeg:quality={quality}").apply(clean, np.random.default_rng(0))
    return truth, y, kernel


@pytest.mark.parametrize(
    "name,spec,quality",
    [("camera", "gaussian:sigma=1", 75), ("coins", "disk:radius=3", 90)],
    ids=["camera-gaussian-q75", "coins-disk-q90"],
)
def test_jpeg_data_the_default_beats_the_jpeg(name, spec, quality):
    """JPEG error is not white: the rules take the noise model's floor (a white fit
    reads it low, its λ amplified the blocks to below the JPEG itself)."""
    truth, y, kernel = jpeg_case(name, spec, quality)
    problem = build_problem(kernel, y.shape, Geometry.create(), unknown_boundary=True)
    result = invert(y.astype(np.float32), problem, "auto", RestoreOptions())
    assert "noise model" in result.params["lam_rule"]
    assert psnr(truth, result.image) > psnr(truth, y)


@pytest.mark.parametrize("spec", ["box", "gaussian"])
def test_unnormalized_flat_kernel_restores(spec):
    """A kernel file used as stored (a 15×15 box of ones, or a wide gaussian with peak 1,
    summing to ~200): the data carry its gain, the result must not (it blew up to values
    of ±10⁵ when the splitting's weights assumed a kernel summing to 1)."""
    axis = np.arange(15) - 7
    if spec == "box":
        flat = np.ones((15, 15))
    else:
        flat = np.exp(-(axis[:, None] ** 2 + axis**2) / (2 * 10.0**2))
    kernel = flat / flat.sum()
    truth, y, _ = crop_case("camera", kernel, 0.005, size=64, seed=1)
    problem = build_problem(flat, y.shape, Geometry.create(), unknown_boundary=True)
    result = invert((y * flat.sum()).astype(np.float32), problem, "auto", RestoreOptions())
    assert -0.5 < result.image.min() and result.image.max() < 1.5
    assert psnr(truth, result.image) > psnr(truth, y) + 0.5


def test_tv_gradient_adjoint_in_3d():
    """The splitting's differences against ``np.roll`` (periodic, each axis of a
    channel-first volume) and their adjoint by a dot test."""
    from deconv_cli.restore.tv import _grad, _grad_adjoint

    rng = np.random.default_rng(7)
    v = rng.standard_normal((2, 5, 6, 7))
    grads = _grad(v, [np.empty_like(v) for _ in range(3)])
    for axis, g in enumerate(grads, start=1):
        np.testing.assert_allclose(g, np.roll(v, -1, axis=axis) - v, atol=1e-14)
    p = [rng.standard_normal(v.shape) for _ in range(3)]
    lhs = sum(float(np.vdot(g, q)) for g, q in zip(grads, p, strict=True))
    rhs = float(np.vdot(v, _grad_adjoint(p, np.empty_like(v))))
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_tv_volume_of_one_slice_equals_the_image():
    """A volume of one slice with a one-slice kernel is the 2-D problem: the same result."""
    truth = scene("camera", 48)
    kernel = load_kernel("gaussian:sigma=1.5").array
    image_op = ConvOperator(kernel, truth.shape, Geometry.create(boundary="reflect"))
    y = image_op.forward(truth) + 0.01 * np.random.default_rng(2).standard_normal(truth.shape)
    volume_op = ConvOperator(
        kernel[None], (1,) + truth.shape, Geometry.create(boundary="reflect"), spatial=3
    )
    image = tv_deconvolve(y, image_op, lam=3e-3).image
    volume = tv_deconvolve(y[None], volume_op, lam=3e-3).image
    np.testing.assert_allclose(volume[0], image, atol=1e-10)
