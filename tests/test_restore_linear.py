"""inverse, pinv, tikhonov and wiener against dense solves, numpy's pinv and textbook filters."""

from __future__ import annotations

import numpy as np
import pytest
from oracles import dense, dense_ndimage
from skimage.metrics import peak_signal_noise_ratio

from deconv_cli.errors import DeconvError, GeometryError, NotInvertibleError
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.inverse import check_data, inverse, pinv
from deconv_cli.restore.linear import tikhonov, wiener
from deconv_cli.spectral import quantization_sigma

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
HAAR = (
    0.5
    * np.array(
        [[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]], float
    )[:, None]
)


def rng(seed=0):
    return np.random.default_rng(seed)


def gaussian1() -> np.ndarray:
    return load_kernel("gaussian:sigma=1").array


def relative_error(x: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(x - truth) / np.linalg.norm(truth))


def dense_regularized(a, reg_matrix, weight, y):
    """``(AᵀA + ν RᵀR)⁻¹ Aᵀ y`` per channel, by numpy.linalg.solve."""
    normal = a.T @ a + weight * reg_matrix.T @ reg_matrix
    channels = y.reshape(-1, y.shape[2]) if y.ndim == 3 else y.reshape(-1, 1)
    if y.ndim == 3:
        channels = np.stack([y[:, :, c].ravel() for c in range(y.shape[2])], axis=1)
    return np.linalg.solve(normal, a.T @ channels)


# -- inverse ----------------------------------------------------------------------

EXACT_CASES = {
    "wrap-fft": ({"boundary": "wrap"}, 1e-8, "FFT division"),
    "reflect-dct": ({"boundary": "reflect"}, 1e-8, "DCT-II division"),
    "full-constant-lsqr": ({"mode": "full", "boundary": "constant"}, 1e-6, "LSQR"),
}


@pytest.mark.parametrize("case", EXACT_CASES.values(), ids=EXACT_CASES.keys())
def test_inverse_recovers_a_random_image(case):
    flags, tol, solver = case
    x = rng(1).random((64, 64))
    op = ConvOperator(gaussian1(), x.shape, Geometry.create(**flags))
    result = inverse(op.forward(x), op, RestoreOptions())
    assert relative_error(result.image, x) < tol
    assert result.params["solver"].startswith(solver)
    assert result.residual < 1e-10


def test_inverse_refuses_valid_mode_and_names_the_null_space():
    op = ConvOperator(gaussian1(), (64, 64), Geometry.create(mode="valid"))
    null_space = 64 * 64 - 58 * 58
    with pytest.raises(NotInvertibleError, match=f"null space has dimension {null_space} ") as err:
        inverse(np.zeros(op.output_shape), op, RestoreOptions())
    message = str(err.value)
    assert "valid mode" in message and "pinv" in message and "cgls" in message
    assert "\n" not in message


def test_inverse_refuses_spectral_zeros():
    op = ConvOperator(np.ones((4, 4)) / 16, (12, 8), Geometry.create(boundary="wrap"))
    with pytest.raises(NotInvertibleError, match="dimension 51 .*vanishes"):
        inverse(np.zeros((12, 8)), op, RestoreOptions())


def test_inverse_refuses_a_stride():
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(stride=2))
    with pytest.raises(
        NotInvertibleError, match="the stride 2 discards samples: it keeps 1 of every 4 outputs"
    ):
        inverse(np.zeros(op.output_shape), op, RestoreOptions())


def test_inverse_of_the_haar_layer_is_its_transpose():
    x = rng(2).random((16, 16))
    op = ConvOperator(HAAR, x.shape, Geometry.create(mode="valid", correlate=True, stride=2))
    y = op.forward(x)
    result = inverse(y, op, RestoreOptions())
    np.testing.assert_allclose(result.image, x, atol=1e-10)
    np.testing.assert_allclose(result.image, op.adjoint(y), atol=1e-10)


def test_inverse_warns_when_quantization_noise_is_amplified():
    op = ConvOperator(gaussian1(), (64, 64), Geometry.create(boundary="wrap"))
    options = RestoreOptions(noise_sigma=quantization_sigma(8))
    result = inverse(np.ones((64, 64)), op, options)
    assert any("amplified" in note and "tikhonov" in note for note in result.notes)
    assert result.params["noise_amplification"] > 100


def test_inverse_rejects_data_of_the_wrong_shape():
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="wrap"))
    with pytest.raises(GeometryError, match="shape 16x15"):
        inverse(np.zeros((16, 15)), op, RestoreOptions())


# -- pinv -------------------------------------------------------------------------------


@pytest.mark.parametrize("rcond", [1e-10, 1e-2], ids=["rank-tolerance", "truncated"])
def test_pinv_equals_numpy_pinv(rcond):
    kernel = np.ones((4, 4)) / 16 if rcond < 1e-3 else gaussian1()
    op = ConvOperator(kernel, (12, 8), Geometry.create(boundary="wrap"))
    y = rng(3).random((12, 8))
    expected = np.linalg.pinv(dense_ndimage(kernel, (12, 8), "wrap"), rcond=rcond) @ y.ravel()
    result = pinv(y, op, RestoreOptions(rcond=rcond))
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-9)
    assert result.params["truncated"] > 0


def test_pinv_is_the_minimum_norm_solution_in_valid_mode():
    kernel = rng(4).random((3, 3))
    op = ConvOperator(kernel, (8, 7), Geometry.create(mode="valid"))
    y = rng(5).random(op.output_shape)
    expected = np.linalg.lstsq(dense(op), y.ravel(), rcond=None)[0]
    result = pinv(y, op, RestoreOptions())
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-6)
    assert result.converged


def test_pinv_rejects_a_bad_rcond():
    op = ConvOperator(gaussian1(), (8, 8), Geometry.create(boundary="wrap"))
    with pytest.raises(DeconvError, match="^rcond: `2` must be below 1"):  # the parameter
        pinv(np.zeros((8, 8)), op, RestoreOptions(rcond=2.0))


# -- tikhonov and wiener: exact solutions -----------------------------------------------------


@pytest.mark.parametrize(
    "boundary,kernel",
    [("wrap", rng(6).random((3, 4))), ("reflect", gaussian1())],
    ids=["wrap-fft", "reflect-dct"],
)
def test_tikhonov_closed_form_equals_a_dense_solve(boundary, kernel):
    shape = (12, 10)
    op = ConvOperator(kernel, shape, Geometry.create(boundary=boundary))
    y = rng(7).random(shape)
    a = dense_ndimage(kernel, shape, boundary)
    lap = dense_ndimage(LAPLACIAN, shape, boundary)
    result = tikhonov(y, op, RestoreOptions(reg=0.01))
    assert result.params["solver"].startswith("closed form")
    np.testing.assert_allclose(
        result.image.ravel(), dense_regularized(a, lap, 0.01, y)[:, 0], atol=1e-10
    )
    residual = np.linalg.norm(a @ result.image.ravel() - y.ravel()) / np.linalg.norm(y)
    assert result.residual == pytest.approx(residual, rel=1e-8)


CG_CASES = {
    "same-constant": (lambda: rng(8).random((3, 3)), {"boundary": "constant"}, (10, 9), "constant"),
    "unknown-boundary": (gaussian1, {"mode": "valid"}, (14, 12), "reflect"),
    "reflect-motion-rgb": (
        lambda: load_kernel("motion:length=5,angle=30").array,
        {"boundary": "reflect"},
        (10, 9, 2),
        "reflect",
    ),
}


@pytest.mark.parametrize("case", CG_CASES.values(), ids=CG_CASES.keys())
def test_tikhonov_cg_equals_a_dense_solve(case):
    make, flags, shape, lap_mode = case
    op = ConvOperator(make(), shape, Geometry.create(**flags))
    y = rng(9).random(op.output_shape)
    result = tikhonov(y, op, RestoreOptions(reg=0.01, tol=1e-12, iterations=5000))
    assert result.params["solver"].startswith("CG") and result.converged
    one_channel = dense(ConvOperator(op.kernel, shape[:2], op.geometry))
    expected = dense_regularized(
        one_channel, dense_ndimage(LAPLACIAN, shape[:2], lap_mode), 0.01, y
    )
    got = (
        result.image.reshape(-1, expected.shape[1])
        if len(shape) == 3
        else result.image.reshape(-1, 1)
    )
    if len(shape) == 3:
        got = np.stack([result.image[:, :, c].ravel() for c in range(shape[2])], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-8)


def test_wiener_cg_equals_a_dense_solve():
    kernel = rng(10).random((3, 2))
    op = ConvOperator(kernel, (9, 8), Geometry.create(boundary="nearest"))
    y = rng(11).random((9, 8))
    result = wiener(y, op, RestoreOptions(nsr=0.05, tol=1e-12, iterations=5000))
    expected = dense_regularized(dense(op), np.eye(72), 0.05, y)[:, 0]
    np.testing.assert_allclose(result.image.ravel(), expected, atol=1e-9)


@pytest.mark.parametrize(
    "kernel",
    [rng(12).random((5, 3)), gaussian1(), load_kernel("disk:radius=2").array],
    ids=["random-complex", "symmetric-real", "symmetric-real-rank-3"],
)
def test_wiener_is_the_textbook_filter_on_wrap(kernel):
    h, w = 16, 12
    kh, kw = kernel.shape
    op = ConvOperator(kernel, (h, w), Geometry.create(boundary="wrap"))
    y = rng(13).random((h, w))
    padded = np.zeros((h, w))
    padded[:kh, :kw] = kernel
    transfer = np.fft.fft2(np.roll(padded, (-(kh // 2), -(kw // 2)), axis=(0, 1)))
    gain = np.conj(transfer) / (np.abs(transfer) ** 2 + 0.03)
    expected = np.fft.ifft2(gain * np.fft.fft2(y)).real
    result = wiener(y, op, RestoreOptions(nsr=0.03))
    np.testing.assert_allclose(result.image, expected, atol=1e-12)
    assert result.params["nsr"] == 0.03 and result.params["nsr_rule"] == "given"


def test_multichannel_uses_one_parameter_for_all_channels():
    x = rng(14).random((24, 20, 3))
    op = ConvOperator(gaussian1(), x.shape, Geometry.create(boundary="wrap"))
    y = op.forward(x) + 0.01 * rng(15).standard_normal(x.shape)
    result = tikhonov(y, op, RestoreOptions())
    reg = result.params["reg"]
    single = ConvOperator(gaussian1(), x.shape[:2], Geometry.create(boundary="wrap"))
    for c in range(3):
        alone = tikhonov(y[:, :, c], single, RestoreOptions(reg=reg)).image
        np.testing.assert_allclose(result.image[:, :, c], alone, atol=1e-12)


@pytest.mark.parametrize(
    "flags", [{"boundary": "wrap"}, {"boundary": "constant"}], ids=["closed-form", "cg"]
)
@pytest.mark.parametrize("method", [tikhonov, wiener], ids=["tikhonov", "wiener"])
def test_float32_stays_float32(method, flags):
    x = rng(16).random((32, 32)).astype(np.float32)
    op = ConvOperator(gaussian1(), x.shape, Geometry.create(**flags), dtype=np.float32)
    result = method(op.forward(x), op, RestoreOptions(noise_sigma=0.01))
    assert result.image.dtype == np.float32


# -- iterations, callbacks, errors ------------------------------------------------------------


def test_closed_form_calls_back_once():
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="wrap"))
    calls = []
    tikhonov(np.ones((16, 16)), op, RestoreOptions(reg=0.1, callback=lambda *a: calls.append(a)))
    assert [c[0] for c in calls] == [1]


def test_cg_with_tol_zero_runs_every_iteration():
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="constant"))
    y = rng(17).random((16, 16))
    calls = []
    options = RestoreOptions(
        reg=0.01, iterations=7, tol=0, callback=lambda k, x, r: calls.append((k, r))
    )
    result = tikhonov(y, op, options)
    assert [k for k, _ in calls] == list(range(1, 8)) and result.iterations == 7
    assert result.converged is None
    residual = np.linalg.norm(op.forward(result.image) - y) / np.linalg.norm(y)
    assert calls[-1][1] == pytest.approx(residual, rel=1e-8)
    assert result.residual == pytest.approx(residual, rel=1e-8)


def test_cg_reports_the_iteration_cap():
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="constant"))
    result = tikhonov(
        rng(18).random((16, 16)), op, RestoreOptions(reg=1e-6, iterations=2, tol=1e-12)
    )
    assert result.converged is False
    assert any("iteration cap (2)" in note for note in result.notes)


@pytest.mark.parametrize(
    "method,options,pattern",
    [
        (tikhonov, RestoreOptions(reg=-1.0), "^reg: "),
        (wiener, RestoreOptions(nsr=float("nan")), "^nsr: "),
        (tikhonov, RestoreOptions(iterations=0), "^iterations: "),
    ],
    ids=["negative-reg", "nan-nsr", "zero-iterations"],
)
def test_bad_options_are_rejected(method, options, pattern):
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="constant"))
    with pytest.raises(DeconvError, match=pattern):
        method(np.ones((16, 16)), op, options)


@pytest.mark.parametrize("method", [inverse, pinv, tikhonov, wiener])
@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_data_is_rejected(method, bad):
    op = ConvOperator(gaussian1(), (16, 16), Geometry.create(boundary="wrap"))
    y = np.ones((16, 16))
    y[3, 4] = bad
    with pytest.raises(DeconvError, match="NaN or Inf"):
        method(y, op, RestoreOptions())


def test_huge_finite_data_is_not_mistaken_for_inf():
    op = ConvOperator(np.ones((1, 1)), (4, 4), Geometry.create(boundary="wrap"))
    y = np.full((4, 4), 1e308)  # its sum overflows
    np.testing.assert_array_equal(check_data(y, op), y)


def test_strided_operator_falls_back_to_a_noise_rule():
    x = rng(19).random((32, 32))
    op = ConvOperator(gaussian1(), x.shape, Geometry.create(stride=2))
    result = tikhonov(op.forward(x), op, RestoreOptions())
    assert result.params["reg_rule"].startswith("30·σ²")
    assert any("rule of thumb" in note for note in result.notes)


# -- quality on a natural image ---------------------------------------------------------------


def camera(size: int = 128) -> np.ndarray:
    from skimage import data

    image = data.camera().astype(np.float64) / 255
    return image[160 : 160 + size, 200 : 200 + size]


QUALITY_CASES = {
    "gaussian-reflect": ("gaussian:sigma=2", "reflect"),
    "motion-reflect-cg": ("motion:length=15,angle=30", "reflect"),
    "disk-unknown": ("disk:radius=3", "unknown"),
}


@pytest.mark.parametrize("method", [tikhonov, wiener], ids=["tikhonov", "wiener"])
@pytest.mark.parametrize("case", QUALITY_CASES.values(), ids=QUALITY_CASES.keys())
def test_psnr_gain_over_the_blurred_image(case, method):
    spec, boundary = case
    truth = camera()
    kernel = load_kernel(spec).array
    blur = ConvOperator(kernel, truth.shape, Geometry.create(boundary="reflect"))
    blurred = blur.forward(truth) + 0.01 * rng(20).standard_normal(truth.shape)
    if boundary == "unknown":
        kh, kw = kernel.shape
        m = 8
        y = blurred[m:-m, m:-m]
        op = ConvOperator(
            kernel, (y.shape[0] + kh - 1, y.shape[1] + kw - 1), Geometry.create(mode="valid")
        )
        top, left = (kh - 1) // 2, (kw - 1) // 2
        restored = method(y, op, RestoreOptions()).image[
            top : top + y.shape[0], left : left + y.shape[1]
        ]
        reference = truth[m:-m, m:-m]
    else:
        y, reference = blurred, truth
        restored = method(y, blur, RestoreOptions()).image
    before = peak_signal_noise_ratio(reference, y, data_range=1.0)
    after = peak_signal_noise_ratio(reference, restored, data_range=1.0)
    assert after > before + 1.0


def test_gcv_is_near_the_best_parameter_of_a_sweep():
    truth = camera()
    op = ConvOperator(load_kernel("gaussian:sigma=2").array, truth.shape, Geometry.create())
    y = op.forward(truth) + 0.01 * rng(21).standard_normal(truth.shape)
    auto = tikhonov(y, op, RestoreOptions())
    assert auto.params["reg_rule"] == "GCV"
    auto_psnr = peak_signal_noise_ratio(truth, auto.image, data_range=1.0)
    sweep = auto.params["reg"] * 10.0 ** np.arange(-1.0, 1.01, 0.125)
    best = max(
        peak_signal_noise_ratio(truth, tikhonov(y, op, RestoreOptions(reg=v)).image, data_range=1.0)
        for v in sweep
    )
    assert auto_psnr >= best - 0.1


@pytest.mark.parametrize(
    "flags",
    [{"boundary": "reflect"}, {"mode": "full", "boundary": "constant"}],
    ids=["dct", "lsqr"],
)
def test_inverse_handles_channels_and_float32(flags):
    x = rng(22).random((20, 18, 3))
    op = ConvOperator(gaussian1(), x.shape, Geometry.create(**flags))
    assert relative_error(inverse(op.forward(x), op, RestoreOptions()).image, x) < 1e-8
    op32 = ConvOperator(gaussian1(), x.shape, Geometry.create(**flags), dtype=np.float32)
    result = inverse(op32.forward(x.astype(np.float32)), op32, RestoreOptions())
    assert result.image.dtype == np.float32
    assert relative_error(result.image, x) < 1e-2


def test_automatic_parameters_on_a_single_pixel_are_finite_and_silent():
    # 1x1, reflect, a normalized kernel: A = 1 and the Laplacian is 0, so Tikhonov
    # returns y whatever reg GCV picks (hand-computed); nothing warns on the way.
    import warnings

    op = ConvOperator(gaussian1(), (1, 1), Geometry.create())
    y = np.array([[0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tik = tikhonov(y, op, RestoreOptions())
        wie = wiener(y, op, RestoreOptions())
    np.testing.assert_allclose(tik.image, y, rtol=1e-12)
    assert np.isfinite(wie.image).all() and 0 < wie.params["nsr"] < np.inf
