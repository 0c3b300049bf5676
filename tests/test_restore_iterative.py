"""Iterative methods: Richardson-Lucy, CGLS/LSQR, TV; against numpy, scipy and skimage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import signal
from skimage.metrics import peak_signal_noise_ratio

from deconv_cli.errors import DeconvError
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.operators import spatial as spatial_module
from deconv_cli.operators.grid import GridOperator, grid_operator
from deconv_cli.operators.spatial import SpatialGridOperator, spatial_layout, spatial_passes
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.iterative import cgls, lsqr
from deconv_cli.restore.richardson_lucy import richardson_lucy
from deconv_cli.restore.tv import tv_deconvolve


def rng(seed=0):
    return np.random.default_rng(seed)


def gaussian(sigma: float, radius: int) -> np.ndarray:
    t = np.arange(-radius, radius + 1)
    g = np.exp(-(t**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def camera_crop(size: int = 96) -> np.ndarray:
    from skimage import data, transform

    image = data.camera().astype(np.float64) / 255
    return transform.resize(image, (size, size), anti_aliasing=True)


def dense(op: ConvOperator) -> np.ndarray:
    """The operator as a matrix, one column per unit input."""
    n = op.shape[1]
    columns = [op.forward(np.eye(n)[i].reshape(op.input_shape)).ravel() for i in range(n)]
    return np.array(columns).T


def psnr(reference, image) -> float:
    return peak_signal_noise_ratio(reference, image, data_range=1.0)


def noisy_problem(geometry=None, sigma=0.01, size=96, blur=1.5, seed=3):
    x = camera_crop(size)
    op = ConvOperator(gaussian(blur, 4), x.shape, geometry or Geometry.create())
    y = op.forward(x) + sigma * rng(seed).standard_normal(op.output_shape)
    return x, op, y


# -- the grid operator ---------------------------------------------------------------

GRID_GEOMETRIES = {
    f"{mode}-{boundary}-s{stride}-d{dilation}{'-corr' if corr else ''}": dict(
        mode=mode, boundary=boundary, stride=stride, dilation=dilation, correlate=corr
    )
    for mode, boundary, stride, dilation, corr in itertools.product(
        ["same", "full", "valid"],
        ["constant", "reflect", "mirror", "nearest", "wrap"],
        [1, 2],
        [1, 2],
        [False, True],
    )
    if not (mode == "valid" and boundary != "constant")
}


@pytest.mark.parametrize("channels", [None, 2], ids=["gray", "2ch"])
@pytest.mark.parametrize("flags", GRID_GEOMETRIES.values(), ids=GRID_GEOMETRIES.keys())
def test_grid_operator_equals_operator(flags, channels):
    r = rng(1)
    shape = (11, 9) + ((channels,) if channels else ())
    op = ConvOperator(r.random((3, 4)), shape, Geometry.create(**flags))
    grid = GridOperator(op)
    x, y = r.random(shape), r.random(op.output_shape)
    ax = grid.external(grid.apply(grid.internal(x)), op.output_shape)
    aty = grid.external(grid.apply_adjoint(grid.internal(y)), shape)
    np.testing.assert_allclose(ax, op.forward(x), atol=1e-12)
    np.testing.assert_allclose(aty, op.adjoint(y), atol=1e-12)


@pytest.mark.parametrize("padding", [1, (2, 0), 5], ids=["1", "2x0", "5-wider-than-kernel"])
def test_grid_operator_explicit_padding(padding):
    r = rng(2)
    op = ConvOperator(
        r.random((3, 3)), (7, 8), Geometry.create(padding=padding, boundary="reflect")
    )
    grid = GridOperator(op)
    x, y = r.random(op.input_shape), r.random(op.output_shape)
    np.testing.assert_allclose(grid.apply(x[None])[0], op.forward(x), atol=1e-12)
    np.testing.assert_allclose(grid.apply_adjoint(y[None])[0], op.adjoint(y), atol=1e-12)


def test_grid_operator_public_scipy_fft_fallback():
    r = rng(3)
    op = ConvOperator(r.random((3, 5)), (10, 12, 2), Geometry.create(boundary="mirror"))
    grid = GridOperator(op)
    grid.transforms._pocketfft = None  # as with a scipy build without the bindings
    x, y = r.random(op.input_shape), r.random(op.output_shape)
    ax = grid.external(grid.apply(grid.internal(x)), op.output_shape)
    aty = grid.external(grid.apply_adjoint(grid.internal(y)), op.input_shape)
    np.testing.assert_allclose(ax, op.forward(x), atol=1e-12)
    np.testing.assert_allclose(aty, op.adjoint(y), atol=1e-12)


# -- the spatial grid operator -------------------------------------------------------

ENDS = np.r_[0.5, np.ones(5), 0.25] / 6  # mostly equal taps, two anti-aliased ends
SPATIAL_KERNELS = {  # kernel, the ways its passes can run
    "row": (rng(5).random((1, 5)), ["correlate", "box"]),
    "row-box": (np.full((1, 7), 1 / 7), ["correlate", "running", "box"]),
    "row-ends": (ENDS[None], ["correlate", "box"]),
    "column-ends": (ENDS[:, None], ["correlate", "box"]),
    "rank-one": (np.outer(rng(6).random(3), rng(7).random(4)), ["correlate", "box"]),
    "box": (np.full((3, 5), 1 / 15), ["correlate", "running", "box"]),
    "dense": (rng(8).random((3, 4)), ["direct"]),
}


def spatial(op: ConvOperator, method: str) -> SpatialGridOperator:
    """The spatial operator with its line passes run ``method``'s way where they can (a
    running sum needs equal taps, a box sum a nonzero common tap), not the cost rule's."""
    corner, grid, shift = spatial_layout(op)
    plan = spatial_passes(op, shift, grid)
    for p in plan[0] + plan[1]:
        if method == "direct" or not p.common or (method == "running" and p.corrections):
            continue
        p.method = method
    return SpatialGridOperator(op, plan)


@pytest.mark.parametrize("channels", [None, 2], ids=["gray", "2ch"])
@pytest.mark.parametrize("flags", GRID_GEOMETRIES.values(), ids=GRID_GEOMETRIES.keys())
def test_spatial_grid_operator_equals_operator(flags, channels):
    r = rng(9)
    shape = (15, 17) + ((channels,) if channels else ())
    for name, (kernel, methods) in SPATIAL_KERNELS.items():
        op = ConvOperator(kernel, shape, Geometry.create(**flags))
        x, y = r.random(shape), r.random(op.output_shape)
        for method in methods:
            grid = spatial(op, method)
            ax = grid.external(grid.apply(grid.internal(x)), op.output_shape)
            aty = grid.external(grid.apply_adjoint(grid.internal(y)), shape)
            np.testing.assert_allclose(ax, op.forward(x), atol=1e-12, err_msg=f"{name} {method}")
            np.testing.assert_allclose(aty, op.adjoint(y), atol=1e-12, err_msg=f"{name} {method}")


@pytest.mark.parametrize("boundary", ["constant", "reflect"])
@pytest.mark.parametrize("name", ["row-box", "row-ends", "column-ends", "box"])
def test_spatial_box_sums_equal_ndimage_convolve(monkeypatch, name, boundary):
    """The box sums, in chunks of 5 samples (many chunks, each line cut across), against
    ``scipy.ndimage.convolve``, and the adjoint against the transposed dense matrix."""
    from scipy import ndimage

    monkeypatch.setattr(spatial_module, "_CHUNK", 5)
    kernel = SPATIAL_KERNELS[name][0]
    r = rng(10)
    x = r.random((13, 16, 2))
    op = ConvOperator(kernel, x.shape, Geometry.create(boundary=boundary))
    grid = spatial(op, "box")
    ax = grid.external(grid.apply(grid.internal(x)), x.shape)
    expected = ndimage.convolve(x, kernel[:, :, None], mode=boundary)
    np.testing.assert_allclose(ax, expected, atol=1e-13)
    one = x[:, :, 0]
    op1 = ConvOperator(kernel, one.shape, Geometry.create(boundary=boundary))
    grid1 = spatial(op1, "box")
    basis = np.eye(one.size).reshape(-1, *one.shape)
    matrix = np.array([ndimage.convolve(e, kernel, mode=boundary).ravel() for e in basis]).T
    y = r.random(one.shape)
    np.testing.assert_allclose(
        grid1.apply_adjoint(y[None])[0], (matrix.T @ y.ravel()).reshape(one.shape), atol=1e-13
    )


@pytest.mark.parametrize("method", ["correlate", "running", "box"])
def test_spatial_scale_adjoint_and_aliasing_width(method):
    """``scale_adjoint`` scales ``Aᵀ`` only; a column pass on lines 2 KiB apart gets a wider
    grid (cache aliasing), with the same result."""
    r = rng(11)
    op = ConvOperator(np.full((5, 1), 0.2), (9, 256), Geometry.create(boundary="constant"))
    grid = spatial(op, method)
    if method != "box":
        assert grid.grid[1] > 256
    x, y = r.random(op.input_shape), r.random(op.output_shape)
    grid.scale_adjoint(3.0)
    np.testing.assert_allclose(grid.apply(x[None])[0], op.forward(x), atol=1e-12)
    np.testing.assert_allclose(grid.apply_adjoint(y[None])[0], 3 * op.adjoint(y), atol=1e-12)
    fft = GridOperator(op)
    fft.scale_adjoint(3.0)
    np.testing.assert_allclose(fft.apply_adjoint(y[None])[0], 3 * op.adjoint(y), atol=1e-12)


def test_spatial_grid_operator_keeps_float32():
    r = rng(12)
    x = r.random((40, 50)).astype(np.float32)
    kernel, geometry = np.full((1, 15), 1 / 15), Geometry.create(boundary="constant")
    op = ConvOperator(kernel, x.shape, geometry, dtype=np.float32)
    reference = ConvOperator(kernel, x.shape, geometry).forward(x.astype(np.float64))
    for method in ("correlate", "running", "box"):
        ax = spatial(op, method).apply(x[None])[0]
        assert ax.dtype == np.float32
        np.testing.assert_allclose(ax, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "spec, dtype, expected",
    [
        ("motion:length=15", np.float32, SpatialGridOperator),
        ("motion:length=16", np.float32, SpatialGridOperator),
        ("motion:length=15,angle=90", np.float64, SpatialGridOperator),
        ("box:size=5", np.float32, SpatialGridOperator),
        ("gaussian:sigma=2", np.float32, GridOperator),
        ("motion:length=15,angle=30", np.float32, GridOperator),
        ("disk:radius=3", np.float64, GridOperator),
    ],
    ids=["motion", "motion-even", "motion-90", "box", "gaussian", "motion-30", "disk"],
)
def test_grid_operator_takes_the_spatial_engine_for_thin_and_small_kernels(spec, dtype, expected):
    from deconv_cli.kernels import load_kernel

    op = ConvOperator(load_kernel(spec).array, (544, 544), Geometry.create(), dtype=dtype)
    assert type(grid_operator(op)) is expected
    assert type(grid_operator(op, "fft")) is GridOperator
    assert type(grid_operator(op, "spatial")) is SpatialGridOperator
    with pytest.raises(DeconvError, match="grid engine"):
        grid_operator(op, "direct")


# -- Richardson-Lucy -----------------------------------------------------------------


def hand_rl_step(y, kernel, x):
    """One RL step with zero padding ('same', constant), by scipy.signal.fftconvolve."""

    def forward(a):
        return signal.fftconvolve(a, kernel, mode="same")

    def adjoint(a):
        return signal.fftconvolve(a, kernel[::-1, ::-1], mode="same")

    return x * adjoint(y / forward(x)) / adjoint(np.ones_like(y))


def test_rl_first_iteration_equals_hand_computation():
    x_true = camera_crop(48) + 0.05
    kernel = gaussian(1.2, 3)
    op = ConvOperator(kernel, x_true.shape, Geometry.create(boundary="constant"))
    y = op.forward(x_true)
    at1 = signal.fftconvolve(np.ones_like(y), kernel[::-1, ::-1], mode="same")
    x0 = np.full_like(y, y.sum() / at1.sum())  # the documented flat start
    result = richardson_lucy(y, op, iterations=1, tol=0)
    np.testing.assert_allclose(result.image, hand_rl_step(y, kernel, x0), rtol=1e-10)


def test_rl_equals_skimage_where_the_models_coincide():
    """skimage pads with zeros and assumes Aᵀ1 = 1: true away from the border. With the
    same start (0.5), plain RL agrees there, iteration after iteration."""
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    x_true = camera_crop(64) + 0.05
    kernel = gaussian(1.0, 2)
    op = ConvOperator(kernel, x_true.shape, Geometry.create(boundary="constant"))
    y = op.forward(x_true)
    at1 = op.adjoint(np.ones_like(y))
    y = y * 0.5 / (y.sum() / at1.sum())  # so that our flat start is skimage's 0.5
    iterations = 3
    ours = richardson_lucy(y, op, iterations=iterations, tol=0, accelerate=False).image
    theirs = sk_richardson_lucy(y, kernel, num_iter=iterations, clip=False)
    inner = slice(2 * iterations * 2 + 2, -(2 * iterations * 2 + 2))
    np.testing.assert_allclose(ours[inner, inner], theirs[inner, inner], rtol=1e-9)


def kl_divergence(y, ax):
    return float(np.sum(y * np.log(y / ax) - y + ax))


@pytest.mark.parametrize(
    "geometry",
    [Geometry.create(), Geometry.create(boundary="constant"), Geometry.create(mode="valid")],
    ids=["reflect", "constant", "valid"],
)
def test_rl_kl_divergence_decreases_on_noiseless_data(geometry):
    x_true = camera_crop(48) + 0.05
    op = ConvOperator(gaussian(1.5, 4), x_true.shape, geometry)
    y = op.forward(x_true)
    kls = []
    richardson_lucy(
        y,
        op,
        iterations=30,
        tol=0,
        accelerate=False,
        callback=lambda k, x, r: kls.append(kl_divergence(y, op.forward(x))),
    )
    assert len(kls) == 30
    assert np.all(np.diff(kls) <= 1e-12 * kls[0])


def test_rl_converges_to_the_image_on_a_well_posed_wrap_problem():
    x_true = camera_crop(32) + 0.1
    op = ConvOperator(gaussian(0.6, 2), x_true.shape, Geometry.create(boundary="wrap"))
    y = op.forward(x_true)
    errors = []
    richardson_lucy(
        y,
        op,
        iterations=300,
        tol=0,
        callback=lambda k, x, r: errors.append(np.linalg.norm(x - x_true)),
    )
    relative = np.array(errors) / np.linalg.norm(x_true)
    assert relative[-1] < 1e-3
    assert relative[-1] < relative[9] < relative[0]


@pytest.mark.parametrize(
    "geometry",
    [
        Geometry.create(),
        Geometry.create(mode="valid"),
        Geometry.create(boundary="constant", stride=2),
        Geometry.create(mode="full", boundary="constant"),
    ],
    ids=["reflect", "valid", "stride2", "full"],
)
def test_rl_output_is_non_negative_and_gains(geometry):
    x, op, y = noisy_problem(geometry)
    result = richardson_lucy(y, op)
    assert result.image.shape == op.input_shape
    assert result.image.min() >= 0
    assert result.converged is not False
    if geometry.stride == (1, 1) and geometry.mode == "same":
        assert psnr(x, result.image) > psnr(x, y) + 1


def test_rl_clips_negative_data_and_says_so():
    x, op, y = noisy_problem(sigma=0.05)
    y[:4] = -0.2
    result = richardson_lucy(y, op, iterations=5, tol=0)
    assert np.all(np.isfinite(result.image))
    assert any("raised" in note for note in result.notes)


def test_rl_refuses_negative_kernels_and_data():
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
    op = ConvOperator(laplacian, (8, 8))
    with pytest.raises(DeconvError, match="non-negative kernel"):
        richardson_lucy(np.ones((8, 8)), op)
    op = ConvOperator(gaussian(1, 1), (8, 8))
    with pytest.raises(DeconvError, match="positive values"):
        richardson_lucy(-np.ones((8, 8)), op)


@pytest.mark.parametrize("method", ["rl", "tv", "cgls", "lsqr"])
@pytest.mark.parametrize("n", [1, 7])
def test_tol_zero_runs_exactly_the_iterations(method, n):
    x, op, y = noisy_problem(size=32)
    calls = []
    function = {"rl": richardson_lucy, "tv": tv_deconvolve, "cgls": cgls, "lsqr": lsqr}[method]
    result = function(y, op, iterations=n, tol=0, callback=lambda k, x, r: calls.append(k))
    assert calls == list(range(1, n + 1))
    assert result.iterations == n
    assert result.converged is None


def test_rl_discrepancy_rule_stops_near_the_best_iteration():
    x, op, y = noisy_problem(size=128, blur=2.0, sigma=0.01)
    psnrs = []
    richardson_lucy(
        y, op, iterations=60, tol=0, callback=lambda k, xk, r: psnrs.append(psnr(x, xk))
    )
    result = richardson_lucy(y, op)
    assert result.converged
    assert psnr(x, result.image) > max(psnrs) - 0.5
    assert "discrepancy_iteration" in result.params


def test_rl_noise_estimate_is_skimage_s_on_unclipped_data():
    from skimage.restoration import estimate_sigma

    x, op, y = noisy_problem(size=64)
    result = richardson_lucy(y, op, iterations=2)
    assert result.params["noise_sigma"] == pytest.approx(estimate_sigma(y), rel=1e-12)


def test_rl_noise_estimate_ignores_clipped_data():
    """Noise clipped at 0 on a black background has a smaller spread: skimage's estimate
    counts it and is low; the rule's estimate skips it and finds the true level."""
    from skimage.restoration import estimate_sigma

    x = np.pad(camera_crop(128), 16)
    op = ConvOperator(np.full((1, 9), 1 / 9), x.shape, Geometry.create(boundary="constant"))
    y = np.maximum(op.forward(x) + 0.01 * rng(0).standard_normal(x.shape), 0)
    result = richardson_lucy(y, op, iterations=2)
    assert estimate_sigma(y) < 0.009
    assert result.params["noise_sigma"] == pytest.approx(0.01, rel=0.04)


@pytest.mark.parametrize("mode", ["same", "valid"], ids=["reflect", "valid-unknown"])
def test_rl_tv_term_gains_and_converges(mode):
    x, op, y = noisy_problem(Geometry.create(mode=mode), sigma=0.02)
    result = richardson_lucy(y, op, tv=0.002)
    assert result.params["tv"] == 0.002
    blurred = ConvOperator(op.kernel, x.shape).forward(x)  # the same blur, same size
    # with an unknown boundary, the rim no datum sees well is not recovered: the frame is
    frame = (slice(4, -4), slice(4, -4)) if mode == "valid" else (slice(None),) * 2
    gain = psnr(x[frame], result.image[frame]) - psnr(x[frame], blurred[frame])
    assert gain > (1 if mode == "same" else 0.5)
    if mode == "same":
        assert result.converged


def test_rl_bank_path_equals_the_grid_path(monkeypatch):
    """A (1, 1, kh, kw) bank is one kernel (the grid path); the path of kernel banks
    (``op.forward``/``op.adjoint``), forced, gives the same iterates."""
    from deconv_cli.restore import richardson_lucy as module

    x_true = camera_crop(32) + 0.05
    kernel = gaussian(1.0, 2)
    grid_op = ConvOperator(kernel, x_true.shape, Geometry.create(mode="valid"))
    bank_op = ConvOperator(kernel[None, None], x_true.shape, Geometry.create(mode="valid"))
    y = grid_op.forward(x_true)
    a = richardson_lucy(y, grid_op, iterations=10, tol=0).image
    monkeypatch.setattr(module, "one_kernel", lambda op: False)
    b = richardson_lucy(y, bank_op, iterations=10, tol=0).image
    np.testing.assert_allclose(a, b, rtol=1e-9)


def test_rl_channels_are_independent():
    r = rng(4)
    x = r.random((24, 20, 3)) + 0.1
    op = ConvOperator(gaussian(1.0, 2), x.shape, Geometry.create(boundary="nearest"))
    y = op.forward(x)
    both = richardson_lucy(y, op, iterations=8, tol=0).image
    op1 = ConvOperator(gaussian(1.0, 2), x.shape[:2], Geometry.create(boundary="nearest"))
    one = richardson_lucy(y[:, :, 1], op1, iterations=8, tol=0).image
    np.testing.assert_allclose(both[:, :, 1], one, rtol=1e-9)


def test_rl_keeps_float32():
    x, op, y = noisy_problem(size=32)
    op32 = ConvOperator(op.kernel, op.input_shape, op.geometry, dtype=np.float32)
    result = richardson_lucy(y.astype(np.float32), op32, iterations=5, tol=0)
    assert result.image.dtype == np.float32


def test_rl_float32_keeps_the_float64_quality_on_a_dark_background():
    """A black frame and clipped low noise: acceleration drives the dark pixels towards 0,
    where float32 rounding in ``A x`` must not be amplified by ``y / A x``."""
    x = np.pad(camera_crop(64), 8)
    kernel = np.full((1, 9), 1 / 9)  # a horizontal motion blur
    geometry = Geometry.create(boundary="constant")
    y = ConvOperator(kernel, x.shape, geometry).forward(x)
    y = np.maximum(y + 0.001 * rng(3).standard_normal(y.shape), 0)
    scores = {}
    for dtype in (np.float64, np.float32):
        op = ConvOperator(kernel, x.shape, geometry, dtype=dtype)
        result = richardson_lucy(y.astype(dtype), op, iterations=60, tol=0)
        scores[dtype] = psnr(x, result.image.astype(np.float64))
    assert scores[np.float64] > psnr(x, y) + 5
    assert scores[np.float32] == pytest.approx(scores[np.float64], abs=0.1)


def engine_patch(monkeypatch, engine: str) -> None:
    """Richardson-Lucy on the FFT or the spatial grid operator, whatever the cost rule says."""
    from deconv_cli.restore import richardson_lucy as module

    monkeypatch.setattr(module, "grid_operator", lambda op: grid_operator(op, engine))


RL_SPATIAL_CASES = {
    "motion-constant": (np.full((1, 9), 1 / 9), dict(boundary="constant"), {}),
    "motion-reflect": (np.full((1, 9), 1 / 9), dict(), {}),  # Aᵀ1 folded into the adjoint
    "ends-stride2": (ENDS[:, None], dict(boundary="constant", stride=2), {}),  # unseen pixels
    "box-valid": (np.full((3, 3), 1 / 9), dict(mode="valid"), {}),
    "motion-tv": (np.full((1, 9), 1 / 9), dict(boundary="constant"), dict(tv=0.002)),
    "motion-no-acceleration": (np.full((1, 9), 1 / 9), dict(), dict(accelerate=False)),
}


@pytest.mark.parametrize("case", RL_SPATIAL_CASES.values(), ids=RL_SPATIAL_CASES.keys())
def test_rl_spatial_engine_equals_the_fft_engine(monkeypatch, case):
    kernel, flags, options = case
    x = np.pad(camera_crop(40), 4)
    op = ConvOperator(kernel, x.shape, Geometry.create(**flags))
    y = np.maximum(op.forward(x) + 0.01 * rng(13).standard_normal(op.output_shape), 0)
    results = {}
    for engine in ("fft", "spatial"):
        engine_patch(monkeypatch, engine)
        results[engine] = richardson_lucy(y, op, iterations=12, tol=0, **options)
    # the engines round differently (~1e-16); 12 accelerated iterations amplify that
    np.testing.assert_allclose(
        results["spatial"].image, results["fft"].image, rtol=1e-9, atol=1e-10
    )
    assert results["spatial"].residual == pytest.approx(results["fft"].residual, rel=1e-9)


def test_rl_spatial_engine_in_float32_keeps_the_fft_engine_s_quality(monkeypatch):
    """float32, a black frame, the data clipped at 0 (the case bench_rl.py times)."""
    x = np.pad(camera_crop(64), 8)
    kernel = np.full((1, 15), 1 / 15)
    geometry = Geometry.create(boundary="constant")
    y = ConvOperator(kernel, x.shape, geometry).forward(x)
    y = np.maximum(y + 0.001 * rng(3).standard_normal(y.shape), 0).astype(np.float32)
    op = ConvOperator(kernel, x.shape, geometry, dtype=np.float32)
    scores = {}
    for engine in ("fft", "spatial"):
        engine_patch(monkeypatch, engine)
        result = richardson_lucy(y, op, iterations=60, tol=0)
        assert result.image.dtype == np.float32
        scores[engine] = psnr(x, result.image.astype(np.float64))
    assert scores["spatial"] == pytest.approx(scores["fft"], abs=0.02)


# -- CGLS and LSQR ----------------------------------------------------------------------

SOLVERS = {"cgls": cgls, "lsqr": lsqr}


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_least_squares_valid_mode_is_minimum_norm(solver):
    r = rng(5)
    op = ConvOperator(r.random((3, 3)), (9, 8), Geometry.create(mode="valid"))
    y = r.random(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0]
    result = solver(y, op, iterations=500, tol=1e-12)
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-9)
    assert result.converged


THIN = {"row-box": np.full((1, 7), 1 / 7), "column-motion": np.r_[0.5, np.ones(5), 0.5][:, None]}


@pytest.mark.parametrize("kernel", THIN.values(), ids=THIN.keys())
@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_least_squares_on_the_spatial_engine_is_minimum_norm(solver, kernel):
    # one-row / one-column kernels: grid_operator computes A and Aᵀ in space
    op = ConvOperator(kernel, (24, 20), Geometry.create(mode="valid"))
    assert isinstance(grid_operator(op), SpatialGridOperator)
    y = rng(8).random(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0]
    result = solver(y, op, iterations=2000, tol=1e-12)
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_least_squares_strided_bank_is_minimum_norm(solver):
    r = rng(6)
    bank = r.standard_normal((3, 2, 3, 3))
    geometry = Geometry.create(correlate=True, boundary="constant", padding=1, stride=2)
    op = ConvOperator(bank, (7, 7, 2), geometry)
    y = r.random(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0]
    result = solver(y, op, iterations=500, tol=1e-12)
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-9)


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_haar_bank_is_inverted_exactly(solver):
    haar = (
        0.5
        * np.array(
            [
                [[1, 1], [1, 1]],
                [[1, 1], [-1, -1]],
                [[1, -1], [1, -1]],
                [[1, -1], [-1, 1]],
            ],
            dtype=float,
        )[:, None]
    )
    geometry = Geometry.create(correlate=True, mode="valid", boundary="constant", stride=2)
    x = rng(7).random((16, 12))
    op = ConvOperator(haar, x.shape, geometry)
    result = solver(op.forward(x), op, tol=1e-14)
    np.testing.assert_allclose(result.image, x, atol=1e-12)
    assert result.iterations <= 2  # an orthogonal operator: one step


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_least_squares_reports_the_iteration_cap(solver):
    x, op, y = noisy_problem(size=32)
    result = solver(y, op, iterations=2, tol=1e-12)
    assert result.converged is False
    assert "iteration cap" in result.notes[0]


@pytest.mark.parametrize("solver", SOLVERS.values(), ids=SOLVERS.keys())
def test_least_squares_stopped_early_gains_over_the_blurred_image(solver):
    x, op, y = noisy_problem()
    by_discrepancy = solver(y, op, noise_sigma=0.01)
    assert by_discrepancy.converged
    assert by_discrepancy.iterations < 50
    assert psnr(x, by_discrepancy.image) > psnr(x, y) + 1
    assert psnr(x, solver(y, op, iterations=8).image) > psnr(x, y) + 1


def test_cgls_and_lsqr_agree():
    x, op, y = noisy_problem(size=32)
    a = cgls(y, op, iterations=15, tol=0).image
    b = lsqr(y, op, iterations=15, tol=0).image
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


# -- TV ---------------------------------------------------------------------------------


def test_tv_tends_to_least_squares_as_lambda_vanishes():
    r = rng(8)
    op = ConvOperator(gaussian(0.7, 1), (10, 9), Geometry.create(mode="full", boundary="constant"))
    y = op.forward(r.random(op.input_shape)) + 0.01 * r.standard_normal(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0].reshape(op.input_shape)
    result = tv_deconvolve(y, op, lam=1e-9, iterations=6000, tol=1e-13)
    np.testing.assert_allclose(result.image, expected, atol=1e-5)


@pytest.mark.parametrize(
    "flags",
    [
        dict(),
        dict(boundary="wrap"),
        dict(mode="valid"),
        dict(boundary="constant", stride=2),
        dict(boundary="nearest", correlate=True),
    ],
    ids=["reflect", "wrap", "valid-unknown", "stride2", "nearest-corr"],
)
def test_tv_gains_over_the_blurred_image(flags):
    x, op, y = noisy_problem(Geometry.create(**flags))
    result = tv_deconvolve(y, op)
    assert result.image.shape == op.input_shape
    assert "lam_rule" in result.params
    blurred = ConvOperator(op.kernel, x.shape).forward(x)  # the same blur, same size
    assert psnr(x, result.image) > psnr(x, blurred) + 1.5


def test_tv_beats_richardson_lucy_on_a_noisy_crop():
    x, op, y = noisy_problem(size=128, blur=2.0, sigma=0.01)
    assert psnr(x, tv_deconvolve(y, op).image) > psnr(x, richardson_lucy(y, op).image)


def test_tv_channels_are_independent():
    r = rng(9)
    x = r.random((20, 24, 2))
    op = ConvOperator(gaussian(1.0, 2), x.shape, Geometry.create(mode="valid"))
    y = op.forward(x)
    both = tv_deconvolve(y, op, lam=1e-3, iterations=20, tol=0).image
    op1 = ConvOperator(gaussian(1.0, 2), x.shape[:2], Geometry.create(mode="valid"))
    one = tv_deconvolve(y[:, :, 1], op1, lam=1e-3, iterations=20, tol=0).image
    np.testing.assert_allclose(both[:, :, 1], one, rtol=1e-9, atol=1e-12)


def test_tv_refuses_kernel_banks():
    op = ConvOperator(np.ones((2, 1, 2, 2)), (8, 8))
    with pytest.raises(DeconvError, match="kernel bank"):
        tv_deconvolve(np.ones(op.output_shape), op)


# -- the registry -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["richardson-lucy", "cgls", "lsqr", "tv"])
def test_registered_methods_honour_options_and_gain(name):
    import importlib

    from deconv_cli import restore

    for module in ("richardson_lucy", "iterative", "tv"):
        importlib.import_module(f"deconv_cli.restore.{module}")
    method = restore.REGISTRY[name]
    assert method.iterative
    assert {"iterations", "tol"} <= set(method.options)  # the callback is checked below
    x, op, y = noisy_problem()
    calls = []
    options = RestoreOptions(iterations=3, tol=0, callback=lambda k, xk, r: calls.append(r))
    result = method.function(y, op, options)
    assert len(calls) == 3 and result.iterations == 3
    assert result.method == name
    result = method.function(y, op, RestoreOptions(noise_sigma=0.01))
    assert psnr(x, result.image) > psnr(x, y) + 1


def test_cgls_on_a_widely_dilated_kernel_is_the_minimum_norm_solution():
    """A 3×3 kernel at dilation 40 on 16×16 (the sparse-taps plan, no 97² grid): CGLS
    reaches the minimum-norm least-squares solution of the matrix built by
    scipy.ndimage (the dilated kernel with its zeros written out)."""
    from oracles import dense_ndimage

    r = rng(12)
    kernel = r.random((3, 3))
    dilated = np.zeros((81, 81))
    dilated[::40, ::40] = kernel
    op = ConvOperator(kernel, (16, 16), Geometry.create(dilation=40, boundary="wrap"))
    assert op.engine == "taps"
    y = r.random((16, 16))
    matrix = dense_ndimage(dilated, (16, 16), "wrap")
    expected = np.linalg.lstsq(matrix, y.ravel(), rcond=1e-10)[0]
    result = cgls(y, op, iterations=500, tol=1e-12)
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-6)
