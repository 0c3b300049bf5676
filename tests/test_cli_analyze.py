"""``deconv analyze`` and ``deconv roundtrip`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner

from deconv_cli.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
JSON_KEYS = {
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
}
REGULARIZED = ("tikhonov", "wiener", "richardson-lucy", "tv", "cgls")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deconv: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def crop(tmp_path_factory) -> Path:
    """A 64x64 8-bit crop of the camera sample."""
    path = tmp_path_factory.mktemp("crop") / "camera64.png"
    iio.imwrite(path, iio.imread(SAMPLES / "camera.png")[96:160, 96:160])
    return path


# -- analyze ---------------------------------------------------------------------------------


def test_analyze_json_has_the_documented_keys():
    result = run(
        "analyze", "-k", "box:size=4", "--shape", "8x8", "--boundary", "wrap", "-f", "json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert JSON_KEYS <= set(record)
    assert record["input_shape"] == [8, 8] and record["output_shape"] == [8, 8]
    assert (record["rank"], record["nullity"]) == (25, 39)
    assert record["invertible"] is False and record["verdict"] == "not invertible"
    assert record["method"].startswith("exact: FFT")


def test_analyze_takes_the_shape_and_bit_depth_from_an_image():
    image = SAMPLES / "camera16.png"
    result = run("analyze", image, "-k", "gaussian:sigma=1", "-f", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["input_shape"] == [256, 256]
    assert "16-bit" in record["noise_source"]
    assert record["noise_sigma"] == pytest.approx(1 / (65535 * 12**0.5))


def test_analyze_bank_shape_gets_the_input_channels(tmp_path):
    np.save(tmp_path / "bank.npy", np.random.default_rng(0).standard_normal((2, 3, 3, 3)))
    result = run("analyze", "-k", tmp_path / "bank.npy", "--shape", "6x6", "-f", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["input_shape"] == [6, 6, 3] and record["output_shape"] == [6, 6, 2]
    assert record["verdict"] == "not invertible"


def test_analyze_noise_options_set_the_prediction():
    base = ("analyze", "-k", "gaussian:sigma=1", "--shape", "32x32", "--boundary", "wrap", "-f")
    quiet = json.loads(run(*base, "json", "--noise-sigma", "1e-9").stdout)
    noisy = json.loads(run(*base, "json", "--noise-sigma", "0.1").stdout)
    default = json.loads(run(*base, "json").stdout)
    assert quiet["verdict"] == "invertible"
    assert noisy["verdict"] == "invertible but ill-conditioned"
    assert noisy["predicted_rmse"] == pytest.approx(1e8 * quiet["predicted_rmse"], rel=1e-9)
    assert "8-bit" in default["noise_source"]


def test_analyze_table_states_how_and_the_verdict():
    result = run("analyze", "-k", "box:size=4", "--shape", "8x8", "--boundary", "wrap")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "verdict: not invertible" in out
    assert "exact: FFT" in out and "rank tolerance" in out
    assert "spectral zeros" in out


def test_analyze_spectrum_without_matplotlib_is_the_raw_picture(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    path = tmp_path / "spectrum.png"
    result = run("analyze", "-k", "motion:length=7", "--shape", "16x16", "--spectrum", path)
    assert result.exit_code == 0, result.output
    picture = iio.imread(path)
    assert picture.dtype == np.uint8 and picture.shape == (256, 256, 3)
    assert "pip install deconv-cli[plot]` gives the labelled figure" in result.stderr


def test_analyze_spectrum_with_matplotlib_is_the_labelled_figure(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "spectrum.png"
    result = run("analyze", "-k", "motion:length=7", "--shape", "16x16", "--spectrum", path)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"wrote {path}"
    picture = iio.imread(path)
    assert picture.dtype == np.uint8 and picture.shape == (440, 1100, 3)
    bank = run(
        "analyze", "-k", SAMPLES / "haar_bank.npy", "--shape", "8x8", "--correlate",
        "--stride", "2", "--boundary", "wrap", "--spectrum", tmp_path / "bank.png",
    )  # fmt: skip
    assert bank.exit_code == 0, bank.output
    assert iio.imread(tmp_path / "bank.png").shape == (440, 600, 3)  # singular values only


def test_cli_imports_no_matplotlib_or_pillow():
    import subprocess
    import sys

    code = "import sys, deconv_cli.cli; print(sorted({'matplotlib', 'PIL'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "args,words",
    [
        (["-k", "box:size=3"], "--shape"),
        ([SAMPLES / "camera.png", "-k", "box:size=3", "--shape", "8x8"], "not both"),
        (["-k", "box:size=3", "--shape", "64"], "--shape: `64`"),
        (["-k", "box:size=3", "--shape", "8x8", "--noise-sigma", "0.1", "--bits", "8"], "not both"),
        (["-k", "box:size=3", "--shape", "8x8", "--boundary", "nope"], "--boundary"),
        (["missing.png", "-k", "box:size=3"], "no such file"),
    ],
    ids=["no-shape", "image-and-shape", "bad-shape", "sigma-and-bits", "bad-boundary", "missing"],
)
def test_analyze_usage_errors_exit_2_with_one_line(args, words):
    line = one_error_line(run("analyze", *args))
    assert words in line


# -- roundtrip -------------------------------------------------------------------------------


def rows_by_method(result) -> dict[str, dict]:
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    return {row["method"]: row for row in record["rows"]}


def test_roundtrip_transpose_is_below_every_regularized_method_on_noisy_data(crop):
    result = run(
        "roundtrip", crop, "-k", "gaussian:sigma=1.5", "--noise", "gaussian:sigma=0.01",
        "--seed", "0", "-m", ",".join(REGULARIZED), "-f", "json", "-q",
    )  # fmt: skip
    rows = rows_by_method(result)
    assert list(rows) == ["blurred", "transpose", *REGULARIZED]
    for method in REGULARIZED:
        assert rows[method]["psnr"] > rows["transpose"]["psnr"] + 2, method
        assert rows[method]["psnr"] > rows["blurred"]["psnr"], method
        assert set(rows[method]) >= {"method", "psnr", "ssim", "seconds", "note"}


def test_roundtrip_with_noise_too_large_to_square_reports_each_method(tmp_path):
    """Regression: --noise gaussian:sigma=1e200 was an internal error (σ² overflowed);
    now each method's row says why it failed, and the command succeeds."""
    np.save(tmp_path / "x.npy", np.random.default_rng(9).random((16, 16)))
    result = run(
        "roundtrip", tmp_path / "x.npy", "-k", "gaussian:sigma=1",
        "--noise", "gaussian:sigma=1e200", "--seed", "0", "-f", "json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = rows_by_method(result)
    for method, row in rows.items():
        if method not in ("blurred", "transpose"):
            assert row["note"].startswith("failed: the blurred image's values reach"), row


def test_roundtrip_without_noise_every_default_method_beats_the_transpose(crop):
    result = run("roundtrip", crop, "-k", "gaussian:sigma=1.5", "-f", "json", "-q")
    record = json.loads(result.stdout)
    assert record["verdict"] == "invertible"
    rows = rows_by_method(result)
    assert list(rows) == ["blurred", "transpose", "inverse", *REGULARIZED]
    assert rows["inverse"]["psnr"] > 100  # float data: the exact inverse is exact
    for method in ("inverse", *REGULARIZED):
        assert rows[method]["psnr"] > rows["transpose"]["psnr"] + 5, method


def test_roundtrip_exact_inverse_under_noise_is_as_predicted(crop):
    result = run(
        "roundtrip", crop, "-k", "gaussian:sigma=1", "--boundary", "wrap", "--noise",
        "gaussian:sigma=0.01", "--seed", "1", "-m", "inverse", "-f", "json", "-q",
    )  # fmt: skip
    record = json.loads(result.stdout)
    rows = rows_by_method(result)
    assert record["verdict"] == "invertible but ill-conditioned"
    measured, predicted = rows["inverse"]["rmse"], record["analysis"]["predicted_rmse"]
    assert 0.3 * predicted < measured < 3 * predicted
    assert "ill-conditioned" in rows["inverse"]["note"]


def test_roundtrip_skips_the_inverse_where_not_invertible(crop):
    result = run(
        "roundtrip", crop, "-k", "box:size=4", "--boundary", "wrap", "-m", "inverse,tikhonov",
        "-f", "json", "-q",
    )  # fmt: skip
    rows = rows_by_method(result)
    assert rows["inverse"]["psnr"] is None and rows["inverse"]["note"].startswith("not run")
    assert "spectral zeros" in rows["inverse"]["note"]
    assert rows["tikhonov"]["psnr"] > rows["transpose"]["psnr"]


def test_roundtrip_haar_bank_inverse_is_exact(tmp_path):
    # small: `inverse` itself checks the null space of a bank by a dense SVD
    small = tmp_path / "camera16.png"
    iio.imwrite(small, iio.imread(SAMPLES / "camera.png")[100:116, 100:116])
    result = run(
        "roundtrip", small, "-k", SAMPLES / "haar_bank.npy", "--correlate", "--stride", "2",
        "--mode", "valid", "--bits", "16", "-m", "inverse", "-f", "json", "-q",
    )  # fmt: skip
    record = json.loads(result.stdout)
    assert record["analysis"]["condition_number"] == pytest.approx(1.0)
    rows = rows_by_method(result)
    assert rows["inverse"]["psnr"] > 90
    # an orthogonal layer: the transpose is the inverse, and the row says so
    assert rows["transpose"]["psnr"] > 90 and "orthogonal" in rows["transpose"]["note"]


def test_roundtrip_table_has_the_verdict_on_top(crop):
    result = run("roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "wiener", "-q")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("verdict: ")
    assert "transpose" in result.stdout and "wiener" in result.stdout


def test_roundtrip_out_dir_keeps_every_image_and_a_montage(crop, tmp_path):
    out = tmp_path / "out"
    result = run(
        "roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "wiener,cgls", "--out-dir", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["blurred.npy", "cgls.npy", "montage.png", "transpose.npy", "wiener.npy"]
    assert np.load(out / "wiener.npy").shape == (64, 64)
    again = run("roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "wiener", "--out-dir", out)
    assert "--overwrite" in one_error_line(again)


def test_roundtrip_blurred_row_is_the_data_scored_in_every_format(crop, tmp_path):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    args = ["roundtrip", crop, "-k", "gaussian:sigma=1.5", "--noise", "gaussian:sigma=0.02"]
    args += ["--seed", "3", "-m", "wiener", "-q"]
    saved = run(*args, "--out-dir", tmp_path / "out", "-f", "json")
    truth = iio.imread(crop) / 255.0
    blurred = np.load(tmp_path / "out" / "blurred.npy")
    psnr = peak_signal_noise_ratio(truth, blurred, data_range=1.0)
    ssim = structural_similarity(truth, blurred, data_range=1.0)
    row = rows_by_method(saved)["blurred"]
    assert row["psnr"] == pytest.approx(psnr, abs=1e-9)
    assert row["ssim"] == pytest.approx(ssim, abs=1e-9)
    assert row["seconds"] is None and rows_by_method(saved)["wiener"]["psnr"] > psnr

    table = run(*args)
    assert table.exit_code == 0, table.output
    line = next(line for line in table.stdout.splitlines() if "blurred" in line)
    assert f" {psnr:.2f} " in line and f" {ssim:.4f} " in line
    markdown = run(*args, "-f", "markdown")
    assert markdown.exit_code == 0, markdown.output
    assert f"| blurred | {psnr:.2f} | {ssim:.4f} |" in markdown.stdout
    assert markdown.stdout.startswith("verdict: ")


def test_roundtrip_blurred_row_of_other_shaped_data_says_why(crop):
    result = run("roundtrip", crop, "-k", "box:size=3", "--mode", "valid", "-m", "cgls",
                 "-f", "json", "-q")  # fmt: skip
    row = rows_by_method(result)["blurred"]
    assert row["psnr"] is None
    assert row["note"] == "not scored: the data is 62×62, the image 64×64"


@pytest.mark.parametrize(
    "args,words",
    [
        (["-m", "nope"], "--method: `nope`"),
        (["--noise", "laplace:b=1"], "--noise"),
        (["--bits", "0"], "--bits"),
    ],
    ids=["unknown-method", "bad-noise", "bad-bits"],
)
def test_roundtrip_usage_errors_exit_2(crop, args, words):
    result = run("roundtrip", crop, "-k", "box:size=3", *args)
    assert result.exit_code == 2
    assert words in result.output


def test_roundtrip_montage_panels_are_the_images_with_captions(crop, tmp_path, monkeypatch):
    import sys

    from deconv_cli.pictures import BACKGROUND, GAP, LINE_HEIGHT, PAD

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the montage needs no matplotlib

    path, out = tmp_path / "side.png", tmp_path / "out"
    result = run(
        "roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "wiener,cgls",
        "--montage", path, "--out-dir", out, "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    picture = iio.imread(path)
    assert np.array_equal(picture, iio.imread(out / "montage.png"))
    # truth, blurred, transpose, wiener, cgls: 64x64 images shown twice as large (the
    # smallest panel side is 128), 4 to a row, three caption lines under each
    tile, caption = 128, 3 * LINE_HEIGHT + 2 * PAD
    cell_h = tile + caption
    assert picture.shape == (2 * (cell_h + GAP) + GAP, 4 * (tile + GAP) + GAP, 3)
    images = [iio.imread(crop) / 255.0] + [
        np.load(out / f"{name}.npy") for name in ("blurred", "transpose", "wiener", "cgls")
    ]
    strips = []
    for i, image in enumerate(images):
        top, left = GAP + (i // 4) * (cell_h + GAP), GAP + (i % 4) * (tile + GAP)
        expected = np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
        expected = np.repeat(np.repeat(expected, 2, axis=0), 2, axis=1)
        panel = picture[top : top + tile, left : left + tile]
        assert np.array_equal(panel, np.repeat(expected[:, :, None], 3, axis=2)), i
        strip = picture[top + tile : top + cell_h, left : left + tile]
        assert (strip != BACKGROUND).sum() > 100, i  # some text is drawn
        strips.append(strip)
    for i in range(len(strips)):
        for j in range(i):
            assert not np.array_equal(strips[i], strips[j]), (i, j)
    # the empty cells and the gaps are background
    assert np.all(picture[GAP + cell_h + GAP :, GAP + 1 * (tile + GAP) :] == BACKGROUND)
    again = run("roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "cgls", "--montage", path)
    assert "--overwrite" in one_error_line(again)
    same = run("roundtrip", crop, "-k", "box", "-m", "cgls", "--montage", out / "montage.png",
               "--out-dir", out, "--overwrite")  # fmt: skip
    assert "is the montage --out-dir writes" in one_error_line(same)
    missing = run("roundtrip", crop, "-k", "box", "-m", "cgls", "--montage", tmp_path / "no/m.png")
    one_error_line(missing)


def test_roundtrip_status_is_live_on_a_terminal_and_lines_in_a_log(crop, monkeypatch):
    args = ("roundtrip", crop, "-k", "gaussian:sigma=1", "-m", "wiener,cgls")
    log = run(*args)
    assert log.exit_code == 0, log.output
    assert "roundtrip: running wiener\nroundtrip: running cgls\n" in log.stderr
    from rich.console import Console

    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    live = run(*args)
    assert live.exit_code == 0, live.output
    assert "running" not in live.stderr and "roundtrip: cgls" in live.stderr
    assert "1/2" in live.stderr  # cgls runs after one of two methods is done
    assert "blurred" in live.stdout  # the table still follows on stdout
