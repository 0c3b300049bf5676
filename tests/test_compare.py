"""``compare``: the core (pairing, scaling, thresholds, heat maps) and the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from skimage.metrics import (
    mean_squared_error,
    normalized_root_mse,
    peak_signal_noise_ratio,
    structural_similarity,
)

from deconv_cli import comparison as core
from deconv_cli import metrics, pictures, report
from deconv_cli.cli import compare as cli_compare
from deconv_cli.cli import main
from deconv_cli.errors import InputError, OutputError

METRIC_KEYS = ["mse", "rmse", "nrmse", "psnr", "ssim", "mae", "max_error"]


def run(*args: object):
    return CliRunner().invoke(main, ["compare", *map(str, args)])


def records(result) -> list[dict]:
    return json.loads(result.stdout)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
    else:
        iio.imwrite(path, array)
    return path


@pytest.fixture
def noisy_pair(tmp_path):
    """8×8 float64 reference and candidate in [0, 1], saved exactly as .npy."""
    rng = np.random.default_rng(7)
    reference = rng.uniform(0.2, 0.8, size=(8, 8))
    candidate = np.clip(reference + rng.normal(0, 0.05, size=(8, 8)), 0, 1)
    return (
        reference,
        candidate,
        save(tmp_path / "ref.npy", reference),
        save(tmp_path / "cand.npy", candidate),
    )


# --- core: pairing ------------------------------------------------------------------------


def test_pair_files(tmp_path):
    pairs = core.pair_inputs(tmp_path / "r.png", [tmp_path / "a.png", tmp_path / "b.png"])
    assert [(p.reference.name, p.candidate.name) for p in pairs] == [
        ("r.png", "a.png"),
        ("r.png", "b.png"),
    ]


def test_pair_directories_by_stem(tmp_path):
    for name in ["a.png", "b.png", "c.png", "notes.txt", ".hidden.png"]:
        (tmp_path / "ref" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "ref" / name).touch()
    for name in ["a.tif", "b.npy", "d.png"]:
        (tmp_path / "out" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "out" / name).touch()
    pairs = core.pair_inputs(tmp_path / "ref", [tmp_path / "out"])
    names = [(p.reference and p.reference.name, p.candidate and p.candidate.name) for p in pairs]
    assert names == [("a.png", "a.tif"), ("b.png", "b.npy"), ("c.png", None), (None, "d.png")]


def test_pair_duplicate_stems(tmp_path):
    for name in ["a.png", "a.tif"]:
        (tmp_path / "ref" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "ref" / name).touch()
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match=r"a\.png` and `.*a\.tif` have the same name"):
        core.pair_inputs(tmp_path / "ref", [tmp_path / "out"])


@pytest.mark.parametrize(
    "reference, candidates, message",
    [
        ("d1", ["f.png"], "REFERENCE `.*d1` is a directory, so CANDIDATE must be exactly one"),
        ("d1", ["d2", "f.png"], "REFERENCE `.*d1` is a directory"),
        ("f.png", ["d2"], "CANDIDATE `.*d2` is a directory"),
        ("d1", ["d2"], "no images in"),
    ],
    ids=["dir-file", "dir-two", "file-dir", "both-empty"],
)
def test_pair_usage_errors(tmp_path, reference, candidates, message):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    with pytest.raises(InputError, match=message):
        core.pair_inputs(tmp_path / reference, [tmp_path / c for c in candidates])


# --- core: scale, crop, thresholds, heat maps -------------------------------------------------


class FakeImage:
    def __init__(self, data, source_dtype, path="x"):
        self.data, self.source_dtype, self.path, self.alpha = (
            data,
            np.dtype(source_dtype),
            path,
            None,
        )
        self.axes = "YXC"[: np.ndim(data)]


def test_prepare_float_outside_unit_range_needs_data_range():
    image = FakeImage(np.array([[0.0, 255.0]]), "float32", "f.tif")
    with pytest.raises(InputError, match=r"`f\.tif`: float data spans \[0, 255\].*`data_range=R`"):
        core.prepare(image)
    assert core.prepare(image, 255.0).tolist() == [[0.0, 1.0]]


def test_prepare_leaves_integer_data_and_drops_single_channel():
    data = np.full((3, 4, 1), 0.5)
    assert core.prepare(FakeImage(data, "uint16"), 255.0).shape == (3, 4)
    assert np.all(core.prepare(FakeImage(data, "uint16"), 255.0) == 0.5)


def test_prepare_rejects_nan():
    with pytest.raises(InputError, match="NaN or infinite"):
        core.prepare(FakeImage(np.array([[np.nan, 0.0]]), "float64"))


def test_crop_border():
    data = np.arange(36.0).reshape(6, 6)
    assert core.crop_border(data, 2).tolist() == [[14.0, 15.0], [20.0, 21.0]]
    with pytest.raises(InputError, match="^ignore_border: `3` leaves nothing of the 6×6"):
        core.crop_border(data, 3)


@pytest.mark.parametrize(
    "name, limit, value, passes",
    [
        ("mse", 0.5, 0.5, True),
        ("mse", 0.5, np.nextafter(0.5, 1), False),
        ("psnr", 30.0, 30.0, True),
        ("psnr", 30.0, np.nextafter(30.0, 0), False),
        ("ssim", 0.9, math.nan, False),
        ("psnr", 99.0, math.inf, True),
    ],
    ids=["max-at", "max-above", "min-at", "min-below", "nan-fails", "inf-passes-min"],
)
def test_check_thresholds(name, limit, value, passes):
    assert core.check_thresholds({name: value}, {name: limit}) == ([] if passes else [name])


def test_difference_map():
    reference = np.zeros((2, 3, 3))
    candidate = reference.copy()
    candidate[0, 0] = [0.1, 0.4, 0.0]
    candidate[1, 2, 0] = 0.05
    rgb, peak, saturated = core.difference_map(reference, candidate, 0.2)
    table = pictures.inferno_table()
    assert peak == pytest.approx(0.4) and saturated == 1
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[0, 0].tolist() == table[255].tolist()  # 0.4 > 0.2: the top colour
    assert rgb[1, 2].tolist() == table[64].tolist()  # 0.05 / 0.2 = 1/4: entry 64
    assert rgb[0, 1].tolist() == table[0].tolist()


def test_diff_targets(tmp_path):
    one = [core.Pair(Path("r.png"), Path("c.png"))]
    assert core.diff_targets(one, tmp_path / "d.png") == [tmp_path / "d.png"]
    assert core.diff_targets(one, tmp_path / "dir") == [tmp_path / "dir" / "c.diff.png"]
    many = [
        core.Pair(Path("r.png"), Path("a/x.png")),
        core.Pair(Path("r.png"), Path("b/x.png")),
        core.Pair(Path("r.png"), None),
    ]
    assert core.diff_targets(many, tmp_path / "out") == [
        tmp_path / "out" / "x.diff.png",
        tmp_path / "out" / "x-2.diff.png",
        None,
    ]
    with pytest.raises(OutputError, match=r"^diff: `.*d\.gif` has an unknown image extension"):
        core.diff_targets(one, tmp_path / "d.gif")
    save(tmp_path / "file.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(OutputError, match="is a file, but 2 pairs need a directory"):
        core.diff_targets(many, tmp_path / "file.png")


# --- CLI: formats ------------------------------------------------------------------------


def test_cli_lists_match_the_core():
    assert list(cli_compare.METRIC_NAMES) == metrics.metric_names()
    assert cli_compare.FORMATS == report.FORMATS


def test_json_keys_and_values_match_skimage(noisy_pair):
    reference, candidate, ref_path, cand_path = noisy_pair
    result = run(ref_path, cand_path, "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = records(result)
    assert list(row) == ["reference", "candidate", *METRIC_KEYS, "passed", "failures", "error"]
    assert row["reference"] == str(ref_path) and row["candidate"] == str(cand_path)
    assert row["mse"] == pytest.approx(mean_squared_error(reference, candidate), rel=1e-12)
    assert row["psnr"] == pytest.approx(
        peak_signal_noise_ratio(reference, candidate, data_range=1), rel=1e-12
    )
    assert row["ssim"] == pytest.approx(
        structural_similarity(reference, candidate, data_range=1), rel=1e-12
    )
    assert row["nrmse"] == pytest.approx(normalized_root_mse(reference, candidate), rel=1e-12)
    assert (row["passed"], row["failures"], row["error"]) == (True, [], None)


def test_csv_parses(noisy_pair):
    reference, candidate, ref_path, cand_path = noisy_pair
    result = run(ref_path, cand_path, ref_path, "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2
    assert float(rows[0]["max_error"]) == pytest.approx(np.abs(reference - candidate).max())
    assert rows[1]["psnr"] == "inf" and float(rows[1]["psnr"]) == math.inf
    assert rows[0]["passed"] == "true"
    assert "1/2 passed" not in result.stdout  # the summary goes to stderr
    assert "2/2 passed" in result.stderr


def test_markdown_parses(noisy_pair):
    _, _, ref_path, cand_path = noisy_pair
    result = run(ref_path, cand_path, "--format", "markdown", "--metrics", "psnr,ssim")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "| reference | candidate | PSNR (dB) | SSIM | result |"
    assert lines[1] == "|---|---|---:|---:|---|"
    assert lines[2].count("|") == 6 and lines[2].endswith("| pass |")
    assert lines[-1].startswith("1/1 passed · worst PSNR ")


def test_table_default(noisy_pair):
    _, _, ref_path, cand_path = noisy_pair
    result = run(ref_path, ref_path, "--metrics", "psnr,ssim,mse")
    assert result.exit_code == 0, result.output
    assert "PSNR (dB)" in result.stdout and "inf" in result.stdout
    assert "1/1 passed · worst PSNR inf dB (ref.npy) · worst SSIM 1.0000 (ref.npy)" in (
        result.stdout
    )


def test_identical_psnr_is_inf_string_in_json(noisy_pair):
    _, _, ref_path, _ = noisy_pair
    (row,) = records(run(ref_path, ref_path, "--format", "json"))
    assert row["psnr"] == "inf" and row["mse"] == 0.0 and row["ssim"] == 1.0


def test_metrics_option_picks(noisy_pair):
    _, _, ref_path, cand_path = noisy_pair
    (row,) = records(run(ref_path, cand_path, "-f", "json", "-m", "ssim", "-m", "mae,mse"))
    assert [k for k in row if k in METRIC_KEYS] == ["mse", "ssim", "mae"]
    (row,) = records(run(ref_path, cand_path, "-f", "json", "-m", "mse", "--min-psnr", "1"))
    assert [k for k in row if k in METRIC_KEYS] == ["mse", "psnr"]


def test_unknown_metric_is_usage_error(noisy_pair):
    _, _, ref_path, cand_path = noisy_pair
    result = run(ref_path, cand_path, "--metrics", "psnr,snr")
    assert result.exit_code == 2
    assert "deconv: error: --metrics: `snr` is not one of `mse`" in result.stderr


# --- CLI: thresholds ---------------------------------------------------------------------


THRESHOLD_CASES = [
    ("--max-mse", "mse", +1),
    ("--max-rmse", "rmse", +1),
    ("--max-nrmse", "nrmse", +1),
    ("--min-psnr", "psnr", -1),
    ("--min-ssim", "ssim", -1),
    ("--max-mae", "mae", +1),
    ("--max-error", "max_error", +1),
]


def _oracle(name, reference, candidate):
    return {
        "mse": lambda: mean_squared_error(reference, candidate),
        "rmse": lambda: math.sqrt(mean_squared_error(reference, candidate)),
        "nrmse": lambda: normalized_root_mse(reference, candidate),
        "psnr": lambda: peak_signal_noise_ratio(reference, candidate, data_range=1.0),
        "ssim": lambda: structural_similarity(reference, candidate, data_range=1.0),
        "mae": lambda: np.mean(np.abs(candidate - reference)),
        "max_error": lambda: np.max(np.abs(candidate - reference)),
    }[name]()


@pytest.mark.parametrize(
    "option, name, direction", THRESHOLD_CASES, ids=[c[0] for c in THRESHOLD_CASES]
)
def test_threshold_flips_exactly_at_boundary(noisy_pair, option, name, direction):
    reference, candidate, ref_path, cand_path = noisy_pair
    value = float(_oracle(name, reference, candidate))
    at = run(ref_path, cand_path, option, repr(value), "-f", "json")
    assert at.exit_code == 0, at.output
    assert records(at)[0]["failures"] == []
    beyond = float(np.nextafter(value, -direction * math.inf))
    past = run(ref_path, cand_path, option, repr(beyond), "-f", "json")
    assert past.exit_code == 1, past.output
    (row,) = records(past)
    assert (row["passed"], row["failures"]) == (False, [name])


def test_failing_values_are_marked_and_caption_names_worst(tmp_path):
    reference = np.full((8, 8), 0.5)
    good = save(tmp_path / "good.npy", reference + 0.01)
    bad = save(tmp_path / "bad.npy", reference + 0.1)
    ref_path = save(tmp_path / "ref.npy", reference)
    result = run(ref_path, good, bad, "--min-psnr", "30", "--metrics", "psnr,mae")
    assert result.exit_code == 1
    assert "40.00" in result.stdout and "20.00 ✗" in result.stdout
    assert "1/2 passed · worst PSNR 20.00 dB (bad.npy)" in result.stdout
    assert "FAIL" in result.stdout


# --- CLI: pairing ------------------------------------------------------------------------


def test_directory_pairing_with_missing_files(tmp_path):
    image = np.full((8, 8), 0.25)
    for name in ["a.npy", "b.npy", "c.npy"]:
        save(tmp_path / "ref" / name, image)
    save(tmp_path / "out" / "a.npy", image)
    save(tmp_path / "out" / "b.png", np.full((8, 8), 64, np.uint8))  # 64/255, not 0.25
    save(tmp_path / "out" / "extra.npy", image)
    result = run(tmp_path / "ref", tmp_path / "out", "-f", "json", "--metrics", "mse")
    assert result.exit_code == 1
    rows = records(result)
    assert [(Path(r["reference"] or "-").name, Path(r["candidate"] or "-").name) for r in rows] == [
        ("a.npy", "a.npy"),
        ("b.npy", "b.png"),
        ("c.npy", "-"),
        ("-", "extra.npy"),
    ]
    assert rows[0]["mse"] == 0.0 and rows[1]["mse"] == pytest.approx((64 / 255 - 0.25) ** 2)
    assert [r["passed"] for r in rows] == [True, True, False, False]
    assert rows[2]["failures"] == ["missing"] and rows[2]["mse"] is None
    assert "no candidate named `c`" in rows[2]["error"]
    assert "no reference named `extra`" in rows[3]["error"]


def test_directory_pairing_table_names_missing_file(tmp_path):
    save(tmp_path / "ref" / "a.npy", np.zeros((8, 8)))
    save(tmp_path / "ref" / "lost.npy", np.zeros((8, 8)))
    save(tmp_path / "out" / "a.npy", np.zeros((8, 8)))
    result = run(tmp_path / "ref", tmp_path / "out")
    assert result.exit_code == 1
    # a path longer than the 80-column table is a footnote, folded at the width
    assert "lost.npy" in result.stdout.replace("\n", "") and "missing" in result.stdout
    assert "1/2 passed" in result.stdout


def test_missing_file_argument_is_exit_2(tmp_path, noisy_pair):
    _, _, ref_path, _ = noisy_pair
    result = run(ref_path, tmp_path / "nope.png")
    assert result.exit_code == 2
    assert result.stderr.startswith("deconv: error:") and "nope.png" in result.stderr


def test_shape_mismatch_names_both_shapes(tmp_path):
    ref = save(tmp_path / "r.npy", np.zeros((8, 8)))
    cand = save(tmp_path / "c.npy", np.zeros((8, 9, 3)))
    result = run(ref, cand)
    assert result.exit_code == 2
    assert "8×8" in result.stderr and "8×9×3" in result.stderr
    assert result.stderr.count("\n") == 1


# --- CLI: data ranges --------------------------------------------------------------------


def test_uint8_uint16_float_are_on_one_scale(tmp_path):
    levels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    as8 = save(tmp_path / "a8.png", levels)
    as16 = save(tmp_path / "a16.png", levels.astype(np.uint16) * 257)
    asfloat = save(tmp_path / "af.npy", levels / 255.0)
    result = run(as8, as16, asfloat, "-f", "json", "--metrics", "mse,max_error")
    assert result.exit_code == 0, result.output
    for row in records(result):
        assert row["max_error"] < 1e-12


@pytest.mark.parametrize(
    "dtype, full",
    [(np.uint8, 255), (np.uint16, 65535)],
    ids=["uint8", "uint16"],
)
def test_integer_full_scale_is_one(tmp_path, dtype, full):
    white = save(tmp_path / "white.png", np.full((8, 8), full, dtype))
    half = save(tmp_path / "half.npy", np.full((8, 8), 0.5))
    (row,) = records(run(white, half, "-f", "json"))
    assert row["mse"] == pytest.approx(0.25)
    assert row["max_error"] == pytest.approx(0.5)
    assert row["psnr"] == pytest.approx(10 * math.log10(1 / 0.25))  # data range 1


def test_float_outside_unit_range_needs_data_range(tmp_path):
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 255, size=(16, 16))
    candidate = reference + rng.normal(0, 3, size=(16, 16))
    ref = save(tmp_path / "r.npy", reference)
    cand = save(tmp_path / "c.npy", candidate)
    refused = run(ref, cand)
    assert refused.exit_code == 2
    assert "outside [0, 1]" in refused.stderr and "--data-range" in refused.stderr
    (row,) = records(run(ref, cand, "--data-range", "255", "-f", "json"))
    assert row["psnr"] == pytest.approx(
        peak_signal_noise_ratio(reference, candidate, data_range=255), rel=1e-12
    )
    assert row["ssim"] == pytest.approx(
        structural_similarity(reference, candidate, data_range=255), rel=1e-9
    )
    assert row["mse"] == pytest.approx(mean_squared_error(reference, candidate) / 255**2)


def test_data_range_must_be_positive(noisy_pair):
    _, _, ref_path, cand_path = noisy_pair
    assert run(ref_path, cand_path, "--data-range", "0").exit_code == 2


# --- CLI: border, channels, alpha ----------------------------------------------------------


def test_ignore_border(tmp_path):
    reference = np.full((12, 12), 0.5)
    candidate = reference.copy()
    candidate[:2, :] = candidate[-2:, :] = candidate[:, :2] = candidate[:, -2:] = 1.0
    candidate[5, 6] = 0.75
    ref = save(tmp_path / "r.npy", reference)
    cand = save(tmp_path / "c.npy", candidate)
    rows = {
        border: records(run(ref, cand, "--ignore-border", border, "-f", "json"))[0]
        for border in (0, 1, 2)
    }
    assert rows[0]["max_error"] == 0.5
    assert rows[0]["mse"] == pytest.approx((80 * 0.25 + 0.0625) / 144)
    assert rows[1]["mse"] == pytest.approx((36 * 0.25 + 0.0625) / 100)
    assert rows[2]["mse"] == pytest.approx(0.0625 / 64)
    assert rows[2]["max_error"] == 0.25
    assert rows[2]["ssim"] == pytest.approx(
        structural_similarity(reference[2:-2, 2:-2], candidate[2:-2, 2:-2], data_range=1)
    )
    too_much = run(ref, cand, "--ignore-border", 6)
    assert too_much.exit_code == 2 and "leaves nothing" in too_much.stderr


def test_per_channel_rows(tmp_path):
    rng = np.random.default_rng(5)
    reference = rng.uniform(0, 1, size=(10, 10, 3))
    candidate = np.clip(reference + rng.normal(0, [0.01, 0.05, 0.1], size=(10, 10, 3)), 0, 1)
    ref = save(tmp_path / "r.npy", reference)
    cand = save(tmp_path / "c.npy", candidate)
    (whole,) = records(run(ref, cand, "-f", "json"))
    assert "channel" not in whole
    rows = records(run(ref, cand, "-f", "json", "--per-channel"))
    assert [r["channel"] for r in rows] == [None, 0, 1, 2]
    assert rows[0]["mse"] == pytest.approx(mean_squared_error(reference, candidate))
    for c in range(3):
        assert rows[c + 1]["psnr"] == pytest.approx(
            peak_signal_noise_ratio(reference[..., c], candidate[..., c], data_range=1)
        )
    assert rows[0]["ssim"] == pytest.approx(
        structural_similarity(reference, candidate, data_range=1, channel_axis=-1)
    )
    failing = run(ref, cand, "-f", "json", "--per-channel", "--min-psnr", "30")
    assert failing.exit_code == 1
    assert [r["passed"] for r in records(failing)] == [False, True, False, False]


def test_alpha_is_ignored(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    opaque = save(tmp_path / "opaque.png", np.dstack([rgb, np.full((8, 8), 255, np.uint8)]))
    clear = save(tmp_path / "clear.png", np.dstack([rgb, np.zeros((8, 8), np.uint8)]))
    (row,) = records(run(opaque, clear, "-f", "json"))
    assert row["mse"] == 0.0


# --- CLI: heat maps ----------------------------------------------------------------------


def test_diff_single_file(tmp_path):
    from deconv_cli.comparison import DIFF_RANGE

    reference = np.zeros((8, 8))
    candidate = reference.copy()
    candidate[3, 4] = 0.0123
    candidate[5, 5] = 0.5
    ref = save(tmp_path / "r.npy", reference)
    cand = save(tmp_path / "c.npy", candidate)
    out = tmp_path / "diff.png"
    result = run(ref, cand, "--diff", out, "-f", "json")
    assert result.exit_code == 0, result.output
    assert (
        f"0 (black) to {DIFF_RANGE:g} (pale yellow); max |difference| 0.5, "
        "1 pixels above the range" in result.stderr
    )
    heat = iio.imread(out)
    table = pictures.inferno_table()
    # the map, then its colour bar on the right (at least BAR_MIN_HEIGHT tall)
    assert heat.dtype == np.uint8 and heat.shape[0] == pictures.BAR_MIN_HEIGHT
    assert heat.shape[1] == 8 + pictures.GAP + pictures.BAR_WIDTH + pictures.LABEL_WIDTH
    assert heat[3, 4].tolist() == table[int(0.0123 / DIFF_RANGE * 256)].tolist()
    assert heat[5, 5].tolist() == table[255].tolist() and heat[0, 0].tolist() == [0, 0, 4]
    again = run(ref, cand, "--diff", out)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    wider = run(ref, cand, "--diff", out, "--overwrite", "--diff-range", "1")
    assert wider.exit_code == 0 and "to 1 (pale yellow)" in wider.stderr
    assert iio.imread(out)[5, 5].tolist() == table[128].tolist()
    help_text = CliRunner().invoke(main, ["compare", "--help"]).output
    assert f"Default {DIFF_RANGE:g} " in " ".join(help_text.split())


def test_diff_range_must_be_positive(tmp_path):
    ref = save(tmp_path / "r.npy", np.zeros((8, 8)))
    result = run(ref, ref, "--diff", tmp_path / "d.png", "--diff-range", "0")
    assert result.exit_code == 2 and "--diff-range" in result.stderr
    assert not (tmp_path / "d.png").exists()


def test_diff_directory_one_per_pair(tmp_path):
    ref = save(tmp_path / "r.npy", np.zeros((8, 8)))
    a = save(tmp_path / "a.npy", np.full((8, 8), 0.1))
    b = save(tmp_path / "b.npy", np.full((8, 8), 0.2))
    result = run(ref, a, b, "--diff", tmp_path / "heat", "-q", "--max-mse", "0.001")
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "heat").iterdir()) == [
        "a.diff.png",
        "b.diff.png",
    ]
    assert result.stderr == ""


def test_diff_cropped_by_ignore_border(tmp_path):
    ref = save(tmp_path / "r.npy", np.zeros((12, 12)))
    cand = save(tmp_path / "c.npy", np.full((12, 12), 0.5))
    assert run(ref, cand, "--diff", tmp_path / "d.png", "--ignore-border", 2).exit_code == 0
    heat = iio.imread(tmp_path / "d.png")
    # an 8x8 map (0.5 > the range: the top colour), then background under it
    assert np.all(heat[:8, :8] == pictures.inferno_table()[255])
    assert np.all(heat[8:, :8] == pictures.BACKGROUND)


def test_help_has_examples():
    result = CliRunner().invoke(main, ["compare", "--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "--min-psnr 35" in result.stdout


def test_end_to_end_exit_code(tmp_path):
    import subprocess
    import sys

    ref = save(tmp_path / "r.npy", np.zeros((8, 8)))
    cand = save(tmp_path / "c.npy", np.full((8, 8), 0.1))
    command = [sys.executable, "-m", "deconv_cli", "compare", str(ref), str(cand), "-f", "json"]
    done = subprocess.run([*command, "--max-mse", "0.001"], capture_output=True, text=True)
    assert done.returncode == 1
    assert json.loads(done.stdout)[0]["failures"] == ["mse"]
    assert "0/1 passed" in done.stderr
