"""Report builders: rows + columns -> table, JSON, CSV, markdown."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

from deconv_cli import report
from deconv_cli.errors import InputError

COLUMNS = [
    report.Column("name", "name"),
    report.metric_column("psnr"),
    report.metric_column("ssim"),
    report.metric_column("mse"),
    report.Column("passed", "result", formatter=lambda v: "pass" if v else "FAIL"),
    report.Column("failures", "failures", in_table=False),
]
ROWS = [
    {"name": "a.png", "psnr": math.inf, "ssim": 1.0, "mse": 0.0, "passed": True, "failures": []},
    {
        "name": "b|c.png",
        "psnr": np.float64(21.3047),
        "ssim": 0.712345,
        "mse": 0.000123456789,
        "passed": False,
        "failures": ["psnr", "ssim"],
    },
    {"name": "d.png", "psnr": None, "ssim": None, "mse": None, "passed": False, "failures": []},
]


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


@pytest.mark.parametrize(
    "value, fmt, expected",
    [
        (21.30471, ".2f", "21.30"),
        (0.712345, ".4f", "0.7123"),
        (0.000123456789, ".4g", "0.0001235"),
        (1.5e-9, ".4g", "1.5e-09"),
        (math.inf, ".2f", "inf"),
        (-math.inf, ".4g", "-inf"),
        (math.nan, ".4g", "nan"),
    ],
    ids=["psnr", "ssim", "small", "tiny", "inf", "-inf", "nan"],
)
def test_format_number(value, fmt, expected):
    assert report.format_number(value, fmt) == expected


@pytest.mark.parametrize(
    "name, fmt, title",
    [
        ("psnr", ".2f", "PSNR (dB)"),
        ("ssim", ".4f", "SSIM"),
        ("mse", ".4g", "MSE"),
        ("max_error", ".4g", "max error"),
    ],
    ids=["psnr", "ssim", "mse", "max_error"],
)
def test_metric_column_formats(name, fmt, title):
    column = report.metric_column(name)
    assert (column.fmt, column.title, column.numeric) == (fmt, title, True)


def test_json_values():
    records = json.loads(report.to_json(ROWS, COLUMNS))
    assert [list(r) for r in records] == [[c.key for c in COLUMNS]] * 3
    assert records[0]["psnr"] == "inf"
    assert float(records[0]["psnr"]) == math.inf
    assert records[1]["psnr"] == 21.3047  # full precision, a plain float
    assert records[1]["failures"] == ["psnr", "ssim"]
    assert records[2]["mse"] is None
    assert records[1]["passed"] is False


def test_json_is_strict():
    text = report.to_json([{"x": math.nan}, {"x": -math.inf}], [report.Column("x", "x")])
    assert json.loads(text, parse_constant=pytest.fail) == [{"x": "nan"}, {"x": "-inf"}]


def test_csv_values():
    records = list(csv.DictReader(io.StringIO(report.to_csv(ROWS, COLUMNS))))
    assert list(records[0]) == [c.key for c in COLUMNS]
    assert float(records[0]["psnr"]) == math.inf
    assert float(records[1]["mse"]) == 0.000123456789  # repr round-trips
    assert records[1]["failures"] == "psnr;ssim"
    assert records[1]["passed"] == "false"
    assert records[2]["mse"] == ""


def test_markdown_table():
    lines = report.to_markdown(ROWS, COLUMNS, caption="2 of 3").splitlines()
    assert lines[0] == "| name | PSNR (dB) | SSIM | MSE | result |"
    assert lines[1] == "|---|---:|---:|---:|---|"
    assert lines[2] == "| a.png | inf | 1.0000 | 0 | pass |"
    assert lines[3] == r"| b\|c.png | **21.30 ✗** | **0.7123 ✗** | 0.0001235 | FAIL |"
    assert lines[4] == "| d.png | — | — | — | FAIL |"
    assert lines[-1] == "2 of 3"


def test_rich_table():
    table = report.to_table(ROWS, COLUMNS, title="t", caption="worst PSNR 21.30 dB (b.png)")
    assert [c.header for c in table.columns] == ["name", "PSNR (dB)", "SSIM", "MSE", "result"]
    text = _render(table)
    assert "21.30 ✗" in text and "0.7123 ✗" in text
    assert "inf" in text and "0.0001235" in text
    assert "failures" not in text
    assert "worst PSNR 21.30 dB (b.png)" in text


def test_rich_table_styles_failing_cells():
    table = report.to_table(ROWS, COLUMNS)
    psnr_cells = list(table.columns[1].cells)
    assert str(psnr_cells[1].style) == "bold red"
    assert str(psnr_cells[0].style) == ""


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_render_dispatch(fmt):
    out = report.render(ROWS, COLUMNS, fmt)
    if fmt == "table":
        assert type(out).__name__ == "Table"
    else:
        assert isinstance(out, str) and out.endswith("\n")


def test_render_unknown_format():
    with pytest.raises(InputError, match="^fmt: `xml` is not one of `table`"):
        report.render(ROWS, COLUMNS, "xml")


def test_compare_columns():
    keys = [c.key for c in report.compare_columns(["psnr", "ssim"])]
    assert keys == ["reference", "candidate", "psnr", "ssim", "passed", "failures", "error"]
    keys = [c.key for c in report.compare_columns(["mse"], per_channel=True)]
    assert keys[:3] == ["reference", "candidate", "channel"]


def test_compare_caption():
    caption = report.compare_caption(3, 4, {"psnr": (21.3047, "b.png"), "ssim": (0.71, "b.png")})
    assert caption == "3/4 passed · worst PSNR 21.30 dB (b.png) · worst SSIM 0.7100 (b.png)"
    assert report.compare_caption(1, 1, {"psnr": (math.inf, "a.png")}) == (
        "1/1 passed · worst PSNR inf dB (a.png)"
    )
    assert report.compare_caption(0, 2) == "0/2 passed"


# --- tables that fit ------------------------------------------------------------------------

LONG_NOTE = (
    "not run: A is not invertible: nullity 375; spectral zeros: the kernel's transfer "
    "function vanishes at 375 of 4096 frequencies, e.g. (fy, fx) = (0, 0.25) cycles/pixel"
)
ROUNDTRIP_ROWS = [
    {"method": "blurred", "psnr": 25.22, "ssim": 0.8369, "rmse": 0.05484, "seconds": None,
     "note": "the data y as is: the score of doing nothing"},
    {"method": "transpose", "psnr": 25.31, "ssim": 0.8145, "rmse": 0.05424, "seconds": 0.001,
     "note": "Aᵀy as is: restores the shape, not the values"},
    {"method": "inverse", "note": LONG_NOTE},
    {"method": "richardson-lucy", "psnr": 28.44, "ssim": 0.8567, "rmse": 0.03786,
     "seconds": 1.25, "note": ""},
    {"method": "tv", "psnr": -118.14, "ssim": 1e-5, "rmse": 8.075e05, "seconds": 12.5,
     "note": "ok"},
    {"method": "cgls", "psnr": 28.01, "ssim": 0.8508, "rmse": 0.03979, "seconds": 0.5,
     "note": LONG_NOTE},
]  # fmt: skip
ROUNDTRIP_COLUMNS = [
    report.Column("method", "method"),
    report.metric_column("psnr"),
    report.metric_column("ssim"),
    report.metric_column("rmse"),
    report.Column("seconds", "time", fmt=".2f", unit="s", numeric=True),
    report.Column("note", "note", footnote=True),
]


def rendered(renderable, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


def test_roundtrip_table_fits_80_columns_with_footnotes():
    title = "roundtrip: photo.png · kernel gaussian:sigma=2,size=13 · same, reflect · noise"
    lines = rendered(report.to_table(ROUNDTRIP_ROWS, ROUNDTRIP_COLUMNS, title=title, width=80), 80)
    text = "\n".join(lines)
    assert max(map(len, lines)) <= 80 and "…" not in text
    for row in ROUNDTRIP_ROWS:
        assert any(f"│ {row['method']} " in line for line in lines), row["method"]
    # long notes are footnotes [1], [2], ... under the table (the same note, one number);
    # the short ones stay in their cells
    flat = " ".join(text.split())
    assert "[1] the data y as is: the score of doing nothing" in flat
    assert "[2] Aᵀy as is: restores the shape, not the values" in flat
    assert f"[3] {LONG_NOTE}" in flat and "[4]" not in flat
    assert sum("│ [3]" in line for line in lines) == 2
    assert any("│ ok " in line for line in lines)


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_many_numeric_columns_split_into_tables_that_fit(width):
    columns = [report.Column("name", "name")] + [
        report.metric_column(m) for m in ("mse", "rmse", "nrmse", "psnr", "ssim", "mae")
    ]
    columns += [report.metric_column("max_error"), report.Column("passed", "result")]
    rows = [
        {"name": "richardson-lucy", "mse": 1.234e-05, "rmse": 0.003513, "nrmse": 0.01234,
         "psnr": 49.09, "ssim": 0.9988, "mae": 0.002811, "max_error": 0.01234, "passed": "pass"},
    ]  # fmt: skip
    lines = rendered(report.to_table(rows, columns, width=width), width)
    text = "\n".join(lines)
    assert max(map(len, lines)) <= width and "…" not in text
    # every number whole, in some table; the name repeated in each table
    for value in ("1.234e-05", "0.003513", "0.01234", "49.09", "0.9988", "0.002811", "pass"):
        assert value in text, value
    groups = report.column_groups(
        [c for c in columns if c.in_table], [15, 9, 8, 7, 9, 6, 8, 9, 6], width
    )
    assert text.count("richardson-lucy") == len(groups) == (1 if width == 120 else text.count("┏"))


def test_piped_tables_are_80_columns_or_COLUMNS(tmp_path):
    from click.testing import CliRunner

    from deconv_cli.cli import main

    image = tmp_path / "x.npy"
    np.save(image, np.random.default_rng(0).random((24, 24)))
    args = ["roundtrip", str(image), "-k", "box:size=4", "--boundary", "wrap", "-q"]
    args += ["-m", "inverse,richardson-lucy"]
    for env, width in (({"COLUMNS": None}, 80), ({"COLUMNS": "120"}, 120)):
        result = CliRunner(env=env).invoke(main, args)
        assert result.exit_code == 0, result.output
        table = [line for line in result.stdout.splitlines() if line[:1] in "┏┃┡│└"]
        assert max(map(len, table)) <= width and "richardson-lucy" in result.stdout
        assert "…" not in result.stdout
        assert re.search(r"^\[\d\] not run: A is not invertible", result.stdout, re.M)
        # 120 columns leave room for the short notes in their cells: wider than 80
        assert (max(map(len, table)) > 80) == (width == 120)


def test_a_word_wider_than_the_table_folds_and_is_not_cut():
    path = "/a/very/long/path/without/any/space/in/it/that/cannot/fit/anywhere.png"
    columns = [report.Column("file", "file"), report.Column("how", "how")]
    rows = [{"file": path, "how": "x"}]
    lines = rendered(report.to_table(rows, columns, width=40), 40)
    assert max(map(len, lines)) <= 40 and "…" not in "".join(lines)
    assert "".join(line.split("│")[1].strip() for line in lines if line.startswith("│")) == path
