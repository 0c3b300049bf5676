"""`deconv invert` through the CLI: exactness where A is injective, refusals where not."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from skimage.metrics import peak_signal_noise_ratio

from deconv_cli.cli import main
from deconv_cli.restore import methods

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def rel_err(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture
def sharp(tmp_path) -> Path:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((64, 64)))
    return path


def blur_then_invert(tmp_path, sharp, flags, method="inverse", extra=()):
    y, x = tmp_path / "y.npy", tmp_path / "xr.npy"
    done = run("convolve", sharp, *flags, "-o", y, "-q")
    assert done.exit_code == 0, done.output
    return run("invert", y, *flags, "-m", method, *extra, "-o", x), x


@pytest.mark.parametrize(
    "flags,tolerance",
    [
        (["-k", "gaussian:sigma=1", "--boundary", "wrap"], 1e-8),
        (["-k", "gaussian:sigma=1", "--boundary", "reflect"], 1e-8),
        (["-k", "gaussian:sigma=1", "--mode", "full", "--boundary", "constant"], 1e-6),
    ],
    ids=["wrap-fft", "reflect-dct", "full-constant-lsqr"],
)
def test_inverse_recovers_exactly_where_injective(tmp_path, sharp, flags, tolerance):
    result, x = blur_then_invert(tmp_path, sharp, flags)
    assert result.exit_code == 0, result.output
    assert rel_err(np.load(x), np.load(sharp)) < tolerance


def test_inverse_refuses_valid_mode_and_names_the_null_space(tmp_path, sharp):
    result, x = blur_then_invert(tmp_path, sharp, ["-k", "gaussian:sigma=1", "--mode", "valid"])
    assert result.exit_code == 2
    # 64x64 unknowns, 58x58 equations (sigma 1: a 7x7 kernel): nullity 4096 - 3364
    assert "dimension 732" in result.output
    assert "pinv" in result.output or "cgls" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not x.exists()


def test_cgls_on_valid_mode_is_the_minimum_norm_solution(tmp_path):
    r = np.random.default_rng(1)
    x_true = r.random((12, 10))
    np.save(tmp_path / "x.npy", x_true)
    kernel = r.random((3, 3))
    np.save(tmp_path / "k.npy", kernel)
    flags = ["-k", tmp_path / "k.npy", "--mode", "valid"]
    result, x = blur_then_invert(
        tmp_path, tmp_path / "x.npy", flags, "cgls", ["--tol", "1e-14", "--iterations", "500"]
    )
    assert result.exit_code == 0, result.output
    # the oracle: numpy's minimum-norm least squares on the dense matrix of valid convolution
    from scipy.signal import convolve2d

    columns = []
    for i in range(x_true.size):
        e = np.zeros(x_true.size)
        e[i] = 1
        columns.append(convolve2d(e.reshape(x_true.shape), kernel, mode="valid").ravel())
    matrix = np.array(columns).T
    y = np.load(tmp_path / "y.npy").ravel()
    expected = np.linalg.lstsq(matrix, y, rcond=None)[0].reshape(x_true.shape)
    np.testing.assert_allclose(np.load(x), expected, atol=1e-8)


@pytest.mark.parametrize("method", ["inverse", "cgls"])
def test_haar_conv_layer_is_inverted_exactly_and_equals_transpose(tmp_path, method):
    x_true = np.random.default_rng(2).random((32, 24))
    np.save(tmp_path / "x.npy", x_true)
    flags = ["-k", SAMPLES / "haar_bank.npy", "--correlate", "--stride", "2", "--mode", "valid"]
    result, x = blur_then_invert(tmp_path, tmp_path / "x.npy", flags, method)
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(x), x_true, atol=1e-10)
    t = run("transpose", tmp_path / "y.npy", *flags, "-o", tmp_path / "t.npy", "-q")
    assert t.exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), np.load(x), atol=1e-10)


def camera_blurred(tmp_path, sigma=0.01, size=96):
    from skimage import data

    sharp = data.camera()[200 : 200 + size, 200 : 200 + size] / 255.0
    np.save(tmp_path / "sharp.npy", sharp)
    done = run(
        "convolve",
        tmp_path / "sharp.npy",
        "-k",
        "gaussian:sigma=1.5",
        "--noise",
        f"gaussian:sigma={sigma}",
        "--seed",
        "3",
        "-o",
        tmp_path / "blurred.npy",
        "-q",
    )
    assert done.exit_code == 0
    return sharp, np.load(tmp_path / "blurred.npy")


@pytest.mark.parametrize(
    "method", [m for m in methods() if m not in ("inverse", "pinv", "cgls", "lsqr")]
)
def test_every_regularized_method_gains_psnr_over_the_blurred_input(tmp_path, method):
    sharp, blurred = camera_blurred(tmp_path)
    result = run(
        "invert",
        tmp_path / "blurred.npy",
        "-k",
        "gaussian:sigma=1.5",
        "-m",
        method,
        "-o",
        tmp_path / "x.npy",
    )
    assert result.exit_code == 0, result.output
    before = peak_signal_noise_ratio(sharp, blurred, data_range=1)
    after = peak_signal_noise_ratio(sharp, np.load(tmp_path / "x.npy"), data_range=1)
    assert after > before + 0.5, (before, after)


def test_reference_and_history(tmp_path):
    sharp, _ = camera_blurred(tmp_path)
    hist = tmp_path / "h.csv"
    result = run(
        "invert",
        tmp_path / "blurred.npy",
        "-k",
        "gaussian:sigma=1.5",
        "-m",
        "richardson-lucy",
        "--iterations",
        "7",
        "--tol",
        "0",
        "--reference",
        tmp_path / "sharp.npy",
        "--history",
        hist,
        "-o",
        tmp_path / "x.npy",
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(hist.open()))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 8))
    assert set(rows[0]) == {"iteration", "residual", "psnr", "ssim", "seconds"}
    # the last PSNR in the history is the PSNR of the written result (skimage as oracle)
    expected = peak_signal_noise_ratio(sharp, np.load(tmp_path / "x.npy"), data_range=1)
    assert float(rows[-1]["psnr"]) == pytest.approx(expected, abs=1e-3)


def test_a_bank_takes_a_reference_with_any_number_of_channels(tmp_path):
    """``Kernel.max_channels`` is None for a bank: the reference is read as the input is."""
    rng = np.random.default_rng(5)
    bank = rng.random((6, 6, 3, 3))
    x = rng.random((12, 12, 6))
    np.save(tmp_path / "bank.npy", bank)
    np.save(tmp_path / "x.npy", x)
    hist = tmp_path / "h.csv"
    common = ["-k", tmp_path / "bank.npy", "--correlate", "--boundary", "wrap"]
    blurred = run("convolve", tmp_path / "x.npy", *common, "-o", tmp_path / "y.npy")
    assert blurred.exit_code == 0, blurred.output
    result = run(
        "invert", tmp_path / "y.npy", *common, "-m", "cgls", "--iterations", "3", "--tol", "0",
        "--reference", tmp_path / "x.npy", "--history", hist, "-o", tmp_path / "out.npy",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(hist.open()))
    expected = peak_signal_noise_ratio(x, np.load(tmp_path / "out.npy"), data_range=1)
    assert float(rows[-1]["psnr"]) == pytest.approx(expected, abs=1e-3)


def test_tol_zero_runs_exactly_the_iterations(tmp_path):
    camera_blurred(tmp_path)
    hist = tmp_path / "h.csv"
    result = run(
        "invert",
        tmp_path / "blurred.npy",
        "-k",
        "gaussian:sigma=1.5",
        "-m",
        "cgls",
        "--iterations",
        "5",
        "--tol",
        "0",
        "--history",
        hist,
        "-o",
        tmp_path / "x.npy",
    )
    assert result.exit_code == 0
    assert len(list(csv.DictReader(hist.open()))) == 5


def test_non_convergence_is_reported(tmp_path):
    camera_blurred(tmp_path)
    result = run(
        "invert",
        tmp_path / "blurred.npy",
        "-k",
        "gaussian:sigma=1.5",
        "-m",
        "cgls",
        "--iterations",
        "2",
        "--tol",
        "1e-12",
        "-o",
        tmp_path / "x.npy",
    )
    assert result.exit_code == 0
    assert "NOT converged" in result.output


def test_unknown_boundary_returns_the_observed_frame(tmp_path):
    from skimage import data

    scene = data.camera()[100:228, 100:228] / 255.0
    np.save(tmp_path / "scene.npy", scene)
    big = tmp_path / "big.npy"
    assert (
        run(
            "convolve",
            tmp_path / "scene.npy",
            "-k",
            "gaussian:sigma=1.5",
            "--noise",
            "gaussian:sigma=0.005",
            "--seed",
            "1",
            "-o",
            big,
            "-q",
        ).exit_code
        == 0
    )
    crop = np.load(big)[16:-16, 16:-16]
    np.save(tmp_path / "crop.npy", crop)
    truth = scene[16:-16, 16:-16]
    outs = {}
    for boundary in ("unknown", "reflect"):
        out = tmp_path / f"x_{boundary}.npy"
        result = run(
            "invert",
            tmp_path / "crop.npy",
            "-k",
            "gaussian:sigma=1.5",
            "-m",
            "tikhonov",
            "--boundary",
            boundary,
            "-o",
            out,
        )
        assert result.exit_code == 0, result.output
        outs[boundary] = peak_signal_noise_ratio(truth, np.load(out), data_range=1)
    assert np.load(tmp_path / "x_unknown.npy").shape == crop.shape
    assert outs["unknown"] > outs["reflect"]


def test_quantization_warning_on_8bit_inverse(tmp_path):
    import imageio.v3 as iio

    x = (np.random.default_rng(4).random((64, 64)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "x.png", x)
    flags = ["-k", "gaussian:sigma=1", "--boundary", "wrap"]
    assert (
        run("convolve", tmp_path / "x.png", *flags, "-o", tmp_path / "y.png", "-q").exit_code == 0
    )
    result = run("invert", tmp_path / "y.png", *flags, "-m", "inverse", "-o", tmp_path / "x.npy")
    assert result.exit_code == 0
    assert "8-bit quantization noise" in result.output


BAD = {
    "unknown-method": (["-m", "magic"], "--method: `magic` is not one of"),
    "option-not-for-method": (["-m", "wiener", "--reg", "0.1"], "--reg does not apply"),
    "missing-kernel": ([], "Missing option '-k'"),
    "negative-reg": (["-m", "tikhonov", "--reg", "-1"], "--reg"),
    "zero-iterations": (["-m", "cgls", "--iterations", "0"], "--iterations"),
    "unknown-with-stride": (["--boundary", "unknown", "--stride", "2"], "unknown"),
    "reference-shape": (["--reference", "{tmp}/small.npy", "-m", "wiener"], "--reference"),
    "bank-channels": (
        ["-k", str(SAMPLES / "haar_bank.npy"), "--correlate", "--stride", "2"],
        "output channels",
    ),
}


@pytest.mark.parametrize("args,needle", BAD.values(), ids=BAD.keys())
def test_bad_usage_exits_2(tmp_path, args, needle):
    np.save(tmp_path / "y.npy", np.random.default_rng(5).random((20, 20)))
    np.save(tmp_path / "small.npy", np.zeros((5, 5)))
    argv = ["invert", str(tmp_path / "y.npy")] + [a.format(tmp=tmp_path) for a in args]
    if "-k" not in args and needle != "Missing option '-k'":
        argv += ["-k", "box:size=3"]
    result = CliRunner().invoke(main, argv + ["-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.npy").exists()


WEIGHTS = {  # method, option: the limit is 1e9 (--lam: × the data scale), 1e3 for σ
    "tikhonov": ("--reg", 1e9),
    "wiener": ("--nsr", 1e9),
    "tv": ("--lam", 1e9),
    "richardson-lucy": ("--tv", 1e9),
    "auto": ("--noise-sigma", 1e3),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("boundary", ["constant", "reflect", "unknown"])
@pytest.mark.parametrize("method", sorted(WEIGHTS))
def test_extreme_weights_are_refused_above_the_limit_and_finite_at_it(
    tmp_path, method, boundary, dtype
):
    """Regression: --reg 1e20 in float32 wrote NaN with exit 0, --noise-sigma 1e200 was an
    internal error, --lam 1e20 drifted off the data's range."""
    option, limit = WEIGHTS[method]
    y = np.random.default_rng(6).random((16, 16))
    np.save(tmp_path / "y.npy", y)
    flags = ["-k", "gaussian:sigma=1", "--boundary", boundary, "-m", method, "--dtype", dtype]
    out = tmp_path / "x.npy"
    for value in (limit * 1.01, 1e20, 1e300):
        refused = run("invert", tmp_path / "y.npy", *flags, option, f"{value:g}", "-o", out)
        assert refused.exit_code == 2, refused.output
        assert f"{option}: `{value:g}` is above the largest accepted" in refused.output
        assert not out.exists()
    done = run("invert", tmp_path / "y.npy", *flags, option, f"{limit:g}", "-o", out, "-q")
    assert done.exit_code == 0, done.output
    x = np.load(out)
    assert np.isfinite(x).all()
    assert x.min() >= -0.5 and x.max() <= 4  # data in [0, 1]: no drift off its range


def test_tv_weight_limit_scales_with_the_data(tmp_path):
    """--lam is relative to the data scale (its 99.9th percentile above 1.5): ×1000 data
    take 1000× the weight."""
    y = 1000 * np.random.default_rng(7).random((32, 32))
    np.save(tmp_path / "y.npy", y)
    scale = float(np.percentile(y, 99.9))
    flags = ["-k", "gaussian:sigma=1", "-m", "tv", "-o", tmp_path / "x.npy", "-q"]
    assert (
        run("invert", tmp_path / "y.npy", *flags, "--lam", f"{0.99e9 * scale:.6g}").exit_code == 0
    )
    refused = run(
        "invert", tmp_path / "y.npy", *flags, "--lam", f"{1.01e9 * scale:.6g}", "--overwrite"
    )
    assert refused.exit_code == 2
    assert f"the data scale, {scale:.3g}" in refused.output


@pytest.mark.parametrize("method", sorted(methods()))
def test_huge_data_is_refused_beyond_the_limit_and_finite_below_it(tmp_path, method):
    """Regression: data near 1e200 made wiener/tv/richardson-lucy/auto internal errors
    (a squared noise level overflowed) and cgls write NaN with exit 0. The limit is
    1e-8 · sqrt(float64 max) ≈ 1.3e146."""
    r = np.random.default_rng(8).random((16, 16))
    out = tmp_path / "x.npy"
    np.save(tmp_path / "huge.npy", 1e200 * r)
    refused = run(
        "invert", tmp_path / "huge.npy", "-k", "gaussian:sigma=1", "-m", method, "-o", out
    )
    assert refused.exit_code == 2, refused.output
    assert f"values reach {1e200 * r.max():.3g}" in refused.output
    assert "up to 1.3e+146" in refused.output
    np.save(tmp_path / "large.npy", 1e140 * r)
    done = run("invert", tmp_path / "large.npy", "-k", "gaussian:sigma=1", "-m", method, "-o", out)
    assert done.exit_code == 0, done.output
    x = np.load(out)
    assert np.isfinite(x).all() and np.abs(x).max() < 1e145  # inverse amplifies ~300x


def test_nan_in_the_input_is_refused(tmp_path):
    y = np.ones((10, 10))
    y[3, 3] = np.nan
    np.save(tmp_path / "y.npy", y)
    result = run("invert", tmp_path / "y.npy", "-k", "box:size=3", "-o", tmp_path / "x.npy")
    assert result.exit_code == 2
    assert "NaN" in result.output


def test_help_lists_every_method():
    result = run("invert", "--help")
    for name in methods():
        assert name in result.output
