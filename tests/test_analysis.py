"""``analyze``: singular values, rank and verdicts against independent computations.

Oracles: numpy FFTs of the zero-padded kernel (wrap), per-frequency SVDs of the
kernel bank's Fourier coefficients done here with numpy, dense SVDs of the operator's
matrix built here column by column from ``op.forward`` (itself tested against scipy
in test_operators.py), hand-counted spectral zeros, and the measured error of exact
inverses on synthetic noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from oracles import dense, dense_ndimage

from deconv_cli.analysis import (
    DEFAULT_BITS,
    DENSE_LIMIT,
    ILL_CONDITIONED_RMSE,
    analyze,
    noise_level,
    null_space,
)
from deconv_cli.errors import DeconvError
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions, get_method

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
EPS = np.finfo(np.float64).eps


def numpy_rank(sigma: np.ndarray, m: int, n: int) -> tuple[int, float, float]:
    """numpy's matrix_rank rule: rank, σ_max, smallest nonzero σ."""
    tol = max(m, n) * EPS * sigma[0]
    nonzero = sigma[sigma > tol]
    return int(nonzero.size), float(sigma[0]), float(nonzero.min())


def dilate(kernel: np.ndarray, d: int) -> np.ndarray:
    out = np.zeros((d * (kernel.shape[0] - 1) + 1, d * (kernel.shape[1] - 1) + 1))
    out[::d, ::d] = kernel
    return out


# -- wrap: the FFT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,kernel_shape,correlate,dilation",
    [
        ((16, 16), (3, 3), False, 1),
        ((12, 10), (4, 2), False, 1),
        ((12, 10), (4, 2), True, 1),
        ((16, 12), (3, 3), False, 2),
        ((8, 8, 3), (5, 5), False, 1),
    ],
    ids=["odd", "even-rect", "even-correlate", "dilated", "three-channels"],
)
def test_wrap_singular_values_are_sorted_fft_magnitudes(shape, kernel_shape, correlate, dilation):
    kernel = np.random.default_rng(1).random(kernel_shape)
    geometry = Geometry.create(boundary="wrap", correlate=correlate, dilation=dilation)
    result = analyze(ConvOperator(kernel, shape, geometry))
    magnitude = np.abs(np.fft.fft2(dilate(kernel, dilation), s=shape[:2])).ravel()
    channels = shape[2] if len(shape) == 3 else 1
    expected = np.sort(np.repeat(magnitude, channels))[::-1]
    np.testing.assert_allclose(result.sorted_singular_values(), expected, rtol=1e-10, atol=1e-13)
    assert result.sigma_max == pytest.approx(expected[0], rel=1e-12)
    assert result.sigma_min == pytest.approx(expected[-1], rel=1e-9)
    assert result.method.startswith("exact: FFT")
    assert all(result.exact.values())


@pytest.mark.parametrize(
    "bank_shape,correlate", [((3, 2, 3, 3), False), ((2, 3, 2, 2), True), ((4, 4, 3, 1), True)]
)
def test_wrap_bank_singular_values_are_per_frequency_svds(bank_shape, correlate):
    bank = np.random.default_rng(2).standard_normal(bank_shape)
    co, ci = bank_shape[:2]
    shape = (8, 6, ci)
    geometry = Geometry.create(boundary="wrap", correlate=correlate)
    result = analyze(ConvOperator(bank, shape, geometry))
    spectrum = np.fft.fft2(bank, s=shape[:2], axes=(2, 3))  # (co, ci, H, W)
    matrices = spectrum.transpose(2, 3, 0, 1).reshape(-1, co, ci)
    expected = np.sort(np.concatenate([np.linalg.svd(m, compute_uv=False) for m in matrices]))
    np.testing.assert_allclose(result.sorted_singular_values(), expected[::-1], rtol=1e-9)
    assert "per-frequency SVD" in result.method


@pytest.mark.parametrize(
    "bank_shape,stride,shape",
    [
        ((4, 1, 2, 2), 2, (8, 8)),
        ((3, 2, 3, 3), 2, (8, 6, 2)),
        ((5, 1, 3, 3), 2, (6, 8)),
        ((6, 2, 3, 2), "2x1", (8, 6, 2)),
    ],
    ids=["4-from-1", "3-from-2", "5-from-1", "stride-2x1"],
)
def test_strided_wrap_bank_matches_dense_svd(bank_shape, stride, shape):
    bank = np.random.default_rng(3).standard_normal(bank_shape)
    op = ConvOperator(bank, shape, Geometry.create(boundary="wrap", stride=stride))
    result = analyze(op)
    sigma = np.linalg.svd(dense(op), compute_uv=False)
    rank, smax, smin = numpy_rank(sigma, *op.shape)
    assert "polyphase" in result.method
    assert (result.rank, result.nullity) == (rank, op.shape[1] - rank)
    assert result.sigma_max == pytest.approx(smax, rel=1e-10)
    assert result.sigma_min == pytest.approx(smin, rel=1e-8)


# -- small operators of every geometry: dense SVD ---------------------------------------------

_SINGLE = np.random.default_rng(4).random((3, 2))
_SEPARABLE = np.outer([1.0, 3.0, 2.0], [2.0, 1.0, 1.5])
_BANK = np.random.default_rng(5).standard_normal((2, 3, 2, 3))

GEOMETRIES = [
    *[
        (_SINGLE, dict(mode=mode, boundary=boundary), (7, 6))
        for mode in ("same", "full", "valid")
        for boundary in ("constant", "reflect", "mirror", "nearest", "wrap")
    ],
    (_SINGLE, dict(stride=2, correlate=True), (8, 7)),
    (_SINGLE, dict(boundary="wrap", stride=2), (7, 6)),
    (_SINGLE, dict(padding="2x1", boundary="nearest", dilation=2), (7, 6)),
    (_SEPARABLE, dict(mode="full", boundary="mirror"), (7, 6, 2)),
    (_SEPARABLE, dict(boundary="constant", stride=2), (9, 8)),
    (_BANK, dict(mode="same", boundary="reflect"), (5, 4, 3)),
    (_BANK, dict(mode="full", boundary="constant", correlate=True), (4, 4, 3)),
    (_BANK, dict(padding=1, boundary="constant", stride=2), (6, 5, 3)),
]
GEOMETRY_IDS = [
    f"{'bank' if k.ndim == 4 else 'sep' if k is _SEPARABLE else 'single'}-"
    + "-".join(f"{key}={value}" for key, value in flags.items())
    for k, flags, _ in GEOMETRIES
]


@pytest.mark.parametrize("kernel,flags,shape", GEOMETRIES, ids=GEOMETRY_IDS)
def test_small_operators_match_dense_svd(kernel, flags, shape):
    op = ConvOperator(kernel, shape, Geometry.create(**flags))
    result = analyze(op)
    sigma = np.linalg.svd(dense(op), compute_uv=False)
    rank, smax, smin = numpy_rank(sigma, *op.shape)
    assert result.exact["rank"] and result.method.startswith("exact")
    assert (result.rank, result.nullity) == (rank, op.shape[1] - rank)
    assert result.sigma_max == pytest.approx(smax, rel=1e-10)
    assert result.sigma_min == pytest.approx(smin, rel=1e-8)
    assert result.condition_number == pytest.approx(smax / smin, rel=1e-8)
    assert result.invertible == (rank == op.shape[1])


# -- null spaces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(9, 8), (80, 80)], ids=["dense", "large-theory"])
def test_valid_mode_nullity_is_at_least_inputs_minus_outputs(shape):
    kernel = np.random.default_rng(6).random((5, 4))
    op = ConvOperator(kernel, shape, Geometry.create(mode="valid"))
    result = analyze(op)
    m, n = op.shape
    assert result.nullity >= n - m
    assert result.verdict == "not invertible"
    assert any("fewer equations than unknowns" in r for r in result.reasons)


def test_large_valid_mode_nullity_is_exactly_inputs_minus_outputs_by_theory():
    op = ConvOperator(np.random.default_rng(7).random((5, 4)), (80, 80), Geometry(mode="valid"))
    result = analyze(op)
    assert result.nullity == op.shape[1] - op.shape[0] == 80 * 80 - 76 * 77
    assert result.exact["rank"] and result.rank_method.startswith("theory")
    assert result.method.startswith("estimate")


@pytest.mark.parametrize(
    "size,shape,nullity",
    # a box of width b on a period of n vanishes at the multiples of n/b other than 0:
    # 8 points, width 4: 3 zeros per axis, 5 x 5 nonzero; 6 points, width 2: 1 zero, 5 x 5.
    [(4, (8, 8), 64 - 25), (2, (6, 6), 36 - 25), (4, (8, 12), 96 - 5 * 9)],
    ids=["box4-8x8", "box2-6x6", "box4-8x12"],
)
def test_even_box_with_wrap_reports_the_exact_nullity(size, shape, nullity):
    op = ConvOperator(load_kernel(f"box:size={size}").array, shape, Geometry(boundary="wrap"))
    result = analyze(op)
    assert result.nullity == nullity and result.exact["rank"]
    assert result.verdict == "not invertible"
    zeros = [r for r in result.reasons if r.startswith("spectral zeros")]
    assert zeros and "0.5" in zeros[0] + "".join(result.frequency_zeros)


@pytest.mark.parametrize(
    "flags",
    [
        dict(mode="valid"),
        dict(boundary="wrap"),
        dict(padding=0, boundary="constant"),
    ],
    ids=["valid", "wrap-same", "padding-0"],
)
def test_haar_stride2_bank_has_condition_number_one(flags):
    haar = np.load(SAMPLES / "haar_bank.npy")
    op = ConvOperator(haar, (16, 12), Geometry.create(correlate=True, stride=2, **flags))
    result = analyze(op)
    assert result.condition_number == pytest.approx(1.0, abs=1e-12)
    assert result.sigma_max == pytest.approx(1.0, abs=1e-12)
    assert result.invertible and result.verdict == "invertible"
    assert result.predicted_rmse == pytest.approx(result.noise_sigma, rel=1e-12)


@pytest.mark.parametrize("boundary", ["reflect", "wrap", "constant"])
def test_stride2_single_kernel_is_not_invertible(boundary):
    kernel = load_kernel("gaussian:sigma=0.7").array
    op = ConvOperator(kernel, (12, 12), Geometry.create(boundary=boundary, stride=2))
    result = analyze(op)
    assert result.verdict == "not invertible" and not result.invertible
    assert result.nullity >= 144 - 36
    assert any("stride 2 discards samples" in r for r in result.reasons)


def test_bank_with_fewer_outputs_than_inputs_per_phase_says_so():
    bank = np.random.default_rng(8).standard_normal((3, 1, 2, 2))
    op = ConvOperator(bank, (8, 8), Geometry.create(boundary="wrap", stride=2, correlate=True))
    result = analyze(op)
    assert result.nullity == 64 - 48
    assert any(
        "fewer output channels than input channels per phase: 3 < 1×4" in r for r in result.reasons
    )


def test_bank_with_fewer_outputs_than_inputs_says_so():
    bank = np.random.default_rng(9).standard_normal((2, 3, 3, 3))
    result = analyze(ConvOperator(bank, (6, 6, 3), Geometry.create(boundary="wrap")))
    assert result.nullity == 36
    assert any("fewer output than input channels (2 < 3)" in r for r in result.reasons)


# -- large operators: iterative estimates ------------------------------------------------------


def test_iterative_estimates_bound_the_dense_values():
    kernel = load_kernel("motion:length=5,angle=30").array
    op = ConvOperator(kernel, (12, 11), Geometry.create(boundary="nearest"))
    result = analyze(op, dense_limit=0, kronecker_limit=0)
    sigma = np.linalg.svd(dense(op), compute_uv=False)
    assert result.method.startswith("estimate")
    assert not result.exact["sigma_max"] and not result.exact["sigma_min"]
    assert result.sigma_max == pytest.approx(sigma[0], rel=1e-5)
    # a Rayleigh quotient: an upper bound on the smallest singular value
    assert result.sigma_min >= sigma[-1] * (1 - 1e-9)
    assert result.condition_number <= sigma[0] / sigma[-1] * (1 + 1e-5)
    assert result.exact["rank"] is False and result.nullity == 0
    assert any("not proven" in reason for reason in result.reasons)


def test_large_full_mode_is_injective_by_theory():
    kernel = load_kernel("motion:length=7,angle=30").array
    op = ConvOperator(kernel, (60, 60), Geometry.create(mode="full", boundary="constant"))
    result = analyze(op)
    assert result.method.startswith("estimate")
    assert result.nullity == 0 and result.exact["rank"]
    assert result.rank_method.startswith("theory: full mode")


# -- noise and the verdict ------------------------------------------------------------------------


def _mean_squared_error(errors: list[np.ndarray]) -> float:
    return float(np.mean([np.mean(e**2) for e in errors]))


def test_predicted_rmse_matches_the_exact_inverse_wrap():
    """The registry's exact inverse on blurred data with white noise, over a few seeds."""
    kernel = np.array([[0.0, 1.0, 0.0], [1.0, 6.0, 1.0], [0.0, 1.0, 0.0]]) / 10
    op = ConvOperator(kernel, (48, 48), Geometry.create(boundary="wrap"))
    sigma = 0.02
    result = analyze(op, noise_sigma=sigma)
    inverse = get_method("inverse").function
    x = np.random.default_rng(10).random((48, 48))
    errors = []
    for seed in range(6):
        y = op.forward(x) + sigma * np.random.default_rng(seed).standard_normal((48, 48))
        errors.append(inverse(y, op, RestoreOptions()).image - x)
    assert math.sqrt(_mean_squared_error(errors)) == pytest.approx(result.predicted_rmse, rel=0.1)
    # independently: sigma · sqrt(mean 1/|H|²) over the FFT of the kernel
    h = np.abs(np.fft.fft2(kernel, s=(48, 48)))
    assert result.predicted_rmse == pytest.approx(sigma * math.sqrt(np.mean(1 / h**2)), rel=1e-12)


@pytest.mark.parametrize(
    "kernel,flags,shape",
    [
        (
            np.random.default_rng(11).random((3, 3)) + 0.5,
            dict(mode="full", boundary="constant"),
            (9, 8),
        ),
        (
            np.random.default_rng(12).standard_normal((4, 1, 2, 2)),
            dict(boundary="wrap", stride=2, correlate=True),
            (8, 8),
        ),
        (np.random.default_rng(13).random((3, 2)), dict(mode="valid"), (9, 8)),
    ],
    ids=["full-lstsq", "bank-stride2", "valid-pinv"],
)
def test_predicted_rmse_matches_the_pseudo_inverse_on_noise(kernel, flags, shape):
    op = ConvOperator(kernel, shape, Geometry.create(**flags))
    sigma = 0.01
    result = analyze(op, noise_sigma=sigma)
    pinv = np.linalg.pinv(dense(op))
    rng = np.random.default_rng(14)
    errors = [pinv @ (sigma * rng.standard_normal(op.shape[0])) for _ in range(400)]
    assert math.sqrt(_mean_squared_error(errors)) == pytest.approx(result.predicted_rmse, rel=0.1)


def test_ill_conditioned_verdict_follows_the_threshold():
    kernel = load_kernel("gaussian:sigma=1").array
    op = ConvOperator(kernel, (32, 32), Geometry.create(boundary="wrap"))
    amplification = analyze(op, noise_sigma=1.0).amplification
    below = ILL_CONDITIONED_RMSE / amplification * 0.9
    above = ILL_CONDITIONED_RMSE / amplification * 1.1
    assert analyze(op, noise_sigma=below).verdict == "invertible"
    assert analyze(op, noise_sigma=above).verdict == "invertible but ill-conditioned"
    assert any("amplified" in r for r in analyze(op, noise_sigma=above).reasons)


def test_noise_level_defaults_to_8_bit_quantization():
    assert DEFAULT_BITS == 8
    sigma, source = noise_level()
    assert sigma == pytest.approx(1 / (255 * math.sqrt(12)))
    assert "8-bit" in source and "default" in source
    assert noise_level(bits=16)[0] == pytest.approx(1 / (65535 * math.sqrt(12)))
    assert noise_level(noise_sigma=0.05) == (0.05, "given")


@pytest.mark.parametrize(
    "kwargs",
    [dict(noise_sigma=0.1, bits=8), dict(noise_sigma=-1.0), dict(bits=0)],
    ids=["both", "negative", "zero-bits"],
)
def test_noise_level_rejects_bad_values(kwargs):
    with pytest.raises(DeconvError):
        noise_level(**kwargs)


def test_as_dict_has_the_documented_keys():
    op = ConvOperator(load_kernel("box:size=3").array, (8, 8), Geometry())
    record = analyze(op).as_dict()
    for key in (
        "input_shape",
        "output_shape",
        "rank",
        "nullity",
        "sigma_max",
        "sigma_min",
        "condition_number",
        "invertible",
        "verdict",
        "method",
        "predicted_rmse",
        "reasons",
    ):
        assert key in record
    assert record["input_shape"] == [8, 8] and isinstance(record["invertible"], bool)


def rng(seed=0):
    return np.random.default_rng(seed)


# -- null_space: the nullity that inverse and auto check ---------------------------------


def box_zero_count(size: int, h: int, w: int) -> int:
    """Zeros of the 2-D transfer function of a size×size box on h×w, by hand.

    The 1-D box transfer function sin(π k s / n) / sin(π k / n) vanishes at the
    k != 0 that are multiples of n / s (s divides n): s - 1 of them per axis.
    """
    zy, zx = size - 1, size - 1
    return zy * w + zx * h - zy * zx


@pytest.mark.parametrize("size", [2, 4])
def test_box_with_wrap_has_the_hand_counted_nullity(size):
    h, w = 12, 8
    op = ConvOperator(np.ones((size, size)) / size**2, (h, w), Geometry.create(boundary="wrap"))
    nullity, exact, reason = null_space(op)
    expected = box_zero_count(size, h, w)
    assert (nullity, exact) == (expected, True)
    assert "vanishes" in reason and f"{expected} of {h * w}" in reason
    matrix = dense_ndimage(np.ones((size, size)) / size**2, (h, w), "wrap")
    assert h * w - np.linalg.matrix_rank(matrix) == expected


def test_nullity_counts_every_channel():
    op = ConvOperator(np.ones((4, 4)) / 16, (12, 8, 3), Geometry.create(boundary="wrap"))
    assert null_space(op)[0] == 3 * box_zero_count(4, 12, 8)


def test_invertible_wrap_reports_the_condition_number():
    op = ConvOperator(
        load_kernel("gaussian:sigma=1").array, (64, 64), Geometry.create(boundary="wrap")
    )
    nullity, exact, reason = null_space(op)
    assert (nullity, exact) == (0, True)
    assert "condition number" in reason


@pytest.mark.parametrize("kshape", [(3, 3), (4, 2)], ids=["3x3", "4x2"])
def test_valid_mode_nullity_is_n_minus_m(kshape):
    kernel = rng(5).random(kshape)
    op = ConvOperator(kernel, (10, 9), Geometry.create(mode="valid"))
    m, n = op.shape
    nullity, exact, reason = null_space(op)
    assert nullity >= n - m
    assert (nullity, exact) == (n - m, True)
    assert n - np.linalg.matrix_rank(dense(op)) == n - m
    assert "valid mode" in reason


def test_full_constant_is_injective():
    op = ConvOperator(
        rng(6).random((3, 4)), (9, 8), Geometry.create(mode="full", boundary="constant")
    )
    assert null_space(op)[:2] == (0, True)
    assert np.linalg.matrix_rank(dense(op)) == op.shape[1]


DENSE_CASES = {
    "same-constant-random": (lambda r: r.random((3, 3)), {"boundary": "constant"}, (9, 8)),
    "same-nearest-separable": (
        lambda r: np.outer(r.random(3), r.random(5)),
        {"boundary": "nearest"},
        (9, 8),
    ),
    "same-mirror-box": (lambda r: np.ones((2, 2)), {"boundary": "mirror"}, (8, 6)),
    "stride2-same": (lambda r: r.random((3, 3)), {"boundary": "reflect", "stride": 2}, (8, 7)),
    "padding1-stride2": (
        lambda r: r.random((3, 3)),
        {"boundary": "constant", "padding": 1, "stride": 2},
        (8, 8),
    ),
    "separable-stride": (
        lambda r: np.outer(r.random(3), r.random(3)),
        {"boundary": "wrap", "stride": 2},
        (8, 8),
    ),
    "bank-2to1": (
        lambda r: r.random((1, 2, 3, 3)),
        {"boundary": "constant", "correlate": True},
        (6, 5, 2),
    ),
    "bank-1to1": (lambda r: r.random((1, 1, 3, 3)), {"boundary": "constant"}, (6, 5)),
    "full-reflect-difference": (
        lambda r: np.array([[1.0, -1.0]]),
        {"mode": "full", "boundary": "reflect"},
        (5, 6),
    ),
}


@pytest.mark.parametrize("case", DENSE_CASES.values(), ids=DENSE_CASES.keys())
def test_dense_svd_agrees_with_matrix_rank(case):
    make, flags, shape = case
    op = ConvOperator(make(rng(7)), shape, Geometry.create(**flags))
    nullity, exact, _ = null_space(op)
    assert exact
    assert nullity == op.shape[1] - np.linalg.matrix_rank(dense(op))


def test_haar_bank_is_injective():
    haar = (
        0.5
        * np.array(
            [[[1, 1], [1, 1]], [[1, -1], [1, -1]], [[1, 1], [-1, -1]], [[1, -1], [-1, 1]]], float
        )[:, None]
    )
    op = ConvOperator(haar, (8, 8), Geometry.create(mode="valid", correlate=True, stride=2))
    assert null_space(op)[:2] == (0, True)


def test_large_operators_get_bounds():
    kernel = load_kernel("motion:length=5,angle=30").array
    side = math.isqrt(DENSE_LIMIT) + 2
    strided = ConvOperator(kernel, (side, side), Geometry.create(boundary="constant", stride=2))
    m, n = strided.shape
    nullity, exact, reason = null_space(strided)
    assert (nullity, exact) == (n - m, False)
    assert "keeps 1 of every 4 outputs" in reason
    same = ConvOperator(kernel, (side, side), Geometry.create(boundary="constant"))
    assert null_space(same)[:2] == (0, False)


def test_the_svds_run_on_the_measured_number_of_blas_threads(monkeypatch):
    # analyze KERNEL and the null space run their SVDs inside the limit that analyze
    # MODEL uses; outside it, the pool is as it was.
    from threadpoolctl import threadpool_info, threadpool_limits

    import deconv_cli.analysis as analysis
    from deconv_cli.operators.threads import SVD_THREADS

    def blas() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    seen = []
    exact = analysis.exact_spectrum

    def spy(*args):
        seen.append(blas())
        return exact(*args)

    monkeypatch.setattr(analysis, "exact_spectrum", spy)
    op = ConvOperator(np.ones((3, 3)) / 9, (16, 16), Geometry.create(boundary="wrap"))
    with threadpool_limits(2, user_api="blas"):
        before = blas()
        analysis.analyze(op)
        analysis.null_space(op)
        assert blas() == before
    assert seen == [{SVD_THREADS}, {SVD_THREADS}]
