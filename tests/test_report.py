"""Report builders: rows + columns -> table, JSON, CSV, markdown."""

from __future__ import annotations

import csv
import io
import json
import math

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
    with pytest.raises(InputError, match="--format: `xml` is not one of `table`"):
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
