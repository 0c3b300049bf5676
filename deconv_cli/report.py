"""Report builders: rows of dicts + column specs -> rich table, JSON, CSV or markdown.

Pure functions from data to text (or to a ``rich`` Table, imported lazily inside
:func:`to_table`, so the rest of the core never loads rich). Any command that reports
rows (compare, analyze, roundtrip) describes its columns once with :class:`Column`
and gets every output format:

- **table / markdown** (for people): numbers in fixed formats (PSNR ``.2f``, SSIM
  ``.4f``, everything else ``.4g``), units in the header, ``—`` for a missing value,
  and each value whose column key is listed in the row's ``failures`` marked ``✗``
  (red and bold in the table, bold in markdown). Columns with ``in_table=False``
  are left out.
- **json / csv** (for machines): every column, full precision. Non-finite numbers
  are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has no
  literal for them; Python's ``float()`` parses the strings back); a missing value
  is ``null`` in JSON and an empty cell in CSV; lists are JSON arrays and
  ``;``-joined in CSV; booleans are ``true``/``false`` in both.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMATS = ("table", "json", "csv", "markdown")
FAIL_MARK = "✗"
MISSING = "—"
NUMBER_FORMATS = {"psnr": ".2f", "ssim": ".4f"}
METRIC_HEADERS = {"max_error": "max error"}
DEFAULT_NUMBER_FORMAT = ".4g"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    """How one key of the rows is shown.

    Attributes
    ----------
    key : str
        Key in each row dict; also the JSON key and CSV header.
    header : str
        Header in the table and markdown.
    fmt : str
        Format spec for numbers in the table and markdown (``format(value, fmt)``).
    unit : str
        Unit shown in the table/markdown header, e.g. ``"dB"``.
    numeric : bool
        Right-justified in the table and markdown.
    in_table : bool
        False for columns that only go to JSON and CSV.
    formatter : callable, optional
        ``value -> str`` for the table and markdown, instead of the number format.
    styler : callable, optional
        ``value -> rich style`` (or None) for the table cell.
    footnote : bool
        In a table of a given width, a value too long to fit on one line goes
        under the table as a numbered footnote, ``[n]`` in the cell.
    """

    key: str
    header: str
    fmt: str = DEFAULT_NUMBER_FORMAT
    unit: str = ""
    numeric: bool = False
    in_table: bool = True
    formatter: Callable[[Any], str] | None = None
    styler: Callable[[Any], str | None] | None = None
    footnote: bool = False

    @property
    def title(self) -> str:
        """Header with its unit, e.g. ``PSNR (dB)``."""
        return f"{self.header} ({self.unit})" if self.unit else self.header


def metric_column(name: str, *, header: str | None = None) -> Column:
    """A numeric column for a metric, in the standard format (psnr ``.2f`` dB, ssim ``.4f``)."""
    return Column(
        key=name,
        header=header or METRIC_HEADERS.get(name, name.upper()),
        fmt=NUMBER_FORMATS.get(name, DEFAULT_NUMBER_FORMAT),
        unit="dB" if name == "psnr" else "",
        numeric=True,
    )


def format_number(value: float, fmt: str = DEFAULT_NUMBER_FORMAT) -> str:
    """Format a number for people: ``inf``, ``-inf`` and ``nan`` spelled out."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, fmt)


def format_cell(value: Any, column: Column) -> str:
    """The text of one table/markdown cell (without the failure mark)."""
    if column.formatter is not None:
        return column.formatter(value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) or _is_numpy_number(value):
        return format_number(value, column.fmt)
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or MISSING
    return str(value)


def _is_numpy_number(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _is_marked(row: Row, column: Column) -> bool:
    return column.key in (row.get("failures") or ())


def _plain(value: Any) -> Any:
    """A JSON-able version of one value (numpy scalars to Python, non-finite to strings)."""
    if _is_numpy_number(value):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return format_number(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_records(rows: Iterable[Row], columns: Sequence[Column]) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts holding exactly the columns' keys, in column order."""
    return [{column.key: _plain(row.get(column.key)) for column in columns} for row in rows]


def to_json(rows: Iterable[Row], columns: Sequence[Column], *, indent: int | None = 2) -> str:
    """Rows as a JSON list of objects (see the module docstring for value rules)."""
    return json.dumps(to_records(rows, columns), indent=indent, ensure_ascii=False)


def _csv_value(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return ";".join(_csv_value(v) for v in value)
    return str(value)


def to_csv(rows: Iterable[Row], columns: Sequence[Column]) -> str:
    """Rows as CSV text with a header line of column keys, numbers at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.key for column in columns])
    for row in rows:
        writer.writerow([_csv_value(row.get(column.key)) for column in columns])
    return buffer.getvalue()


def _markdown_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(
    rows: Iterable[Row],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    caption: str | None = None,
) -> str:
    """Rows as a GitHub-flavoured markdown table, with an optional title and caption."""
    shown = [column for column in columns if column.in_table]
    lines = []
    if title:
        lines += [f"**{_markdown_escape(title)}**", ""]
    lines.append("| " + " | ".join(_markdown_escape(c.title) for c in shown) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in shown) + "|")
    for row in rows:
        cells = []
        for column in shown:
            text = _markdown_escape(format_cell(row.get(column.key), column))
            if _is_marked(row, column):
                text = f"**{text} {FAIL_MARK}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    if caption:
        lines += ["", _markdown_escape(caption)]
    return "\n".join(lines) + "\n"


def footnoted(
    rows: Sequence[Row], columns: Sequence[Column], width: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows whose long ``footnote`` values are replaced by ``[n]``, and the footnotes.

    The room of a footnote column is ``width`` less the other columns' natural
    widths (their longest cell or title) and the table's rules (3 per column + 1);
    a value longer than that room (or than the column's title, if wider) becomes
    footnote ``n``, numbered in order of appearance; equal values share a number.
    """
    shown = [column for column in columns if column.in_table]
    movable = [column for column in shown if column.footnote]
    if not movable:
        return [dict(row) for row in rows], []
    from rich.cells import cell_len

    def natural(column: Column) -> int:
        cells = [cell_len(format_cell(row.get(column.key), column)) for row in rows]
        return max([cell_len(column.title), *cells]) + (2 if _any_marked(rows, column) else 0)

    fixed = sum(natural(column) for column in shown if not column.footnote)
    room = (width - fixed - 3 * len(shown) - 1) // len(movable)
    notes: list[str] = []
    out = []
    for row in rows:
        row = dict(row)
        for column in movable:
            text = format_cell(row.get(column.key), column)
            if cell_len(text) > max(room, cell_len(column.title)):
                if text not in notes:
                    notes.append(text)
                row[column.key] = f"[{notes.index(text) + 1}]"
        out.append(row)
    return out, [f"[{n}] {text}" for n, text in enumerate(notes, 1)]


def _any_marked(rows: Sequence[Row], column: Column) -> bool:
    return any(_is_marked(row, column) for row in rows)


def to_table(
    rows: Iterable[Row],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    caption: str | None = None,
    width: int | None = None,
):
    """Rows as a ``rich`` renderable (rich is imported here, not at module import).

    Without ``width``: one ``rich.table.Table``. With it, fitted to that many
    columns of text, as a ``rich.console.Group``:

    - long values of ``footnote`` columns go under the table (:func:`footnoted`);
    - a numeric cell is never broken, a text cell wraps at spaces and folds only a
      word longer than its column; nothing is cut with an ellipsis;
    - when the numeric columns still do not fit beside the leading text columns
      (the row's name), they are split over several tables, each repeating the
      leading columns (:func:`column_groups`); the title heads the first.
    """
    from rich.table import Table
    from rich.text import Text

    rows = list(rows)
    notes: list[str] = []
    if width is not None:
        rows, notes = footnoted(rows, columns, width)
    shown = [column for column in columns if column.in_table]
    cells = [[_cell(row, column) for column in shown] for row in rows]
    least = _least_widths(shown, cells)
    groups = [list(range(len(shown)))] if width is None else column_groups(shown, least, width)
    tables = []
    for n, group in enumerate(groups):
        table = Table(
            title=title if n == 0 else None,
            caption=caption if n == len(groups) - 1 else None,
            caption_justify="left",
        )
        # too narrow even for whole words: let text fold inside words rather than overflow
        folding = width is not None and sum(least[i] + 3 for i in group) + 1 > width
        for i in group:
            table.add_column(
                shown[i].title,
                justify="right" if shown[i].numeric else "left",
                overflow="fold",
                no_wrap=shown[i].numeric,
                min_width=None if folding and not shown[i].numeric else least[i],
            )
        for row in cells:
            table.add_row(*(Text(row[i][0], style=row[i][1] or "") for i in group))
        tables.append(table)
    if width is None:
        return tables[0]
    from rich.console import Group

    return Group(*tables, *(Text(note) for note in notes))


def _least_widths(shown: Sequence[Column], cells: Sequence[Sequence[tuple[str, Any]]]) -> list[int]:
    """Each column's narrowest width: a numeric column's longest cell or title (neither
    wraps), a text column's longest word."""
    from rich.cells import cell_len

    least = []
    for i, column in enumerate(shown):
        texts = [row[i][0] for row in cells] + [column.title]
        pieces = texts if column.numeric else [w for text in texts for w in text.split()]
        least.append(max(cell_len(p) for p in pieces))
    return least


def column_groups(shown: Sequence[Column], least: Sequence[int], width: int) -> list[list[int]]:
    """Split column indices into tables no wider than ``width`` at their least widths.

    The leading text columns (up to the first numeric one) are in every group; the
    others are packed in order while ``sum(least) + 3·columns + 1 <= width`` (a
    column takes its width, two spaces of padding and one rule). A column too wide
    on its own still gets a group (its text then folds).
    """
    lead = next((i for i, column in enumerate(shown) if column.numeric), len(shown))
    base = sum(least[:lead]) + 3 * lead + 1
    groups: list[list[int]] = []
    current: list[int] = []
    used = base
    for i in range(lead, len(shown)):
        if current and used + least[i] + 3 > width:
            groups.append(current)
            current, used = [], base
        current.append(i)
        used += least[i] + 3
    groups.append(current)
    return [list(range(lead)) + group for group in groups]


def _cell(row: Row, column: Column) -> tuple[str, str | None]:
    """The text and rich style of one table cell."""
    value = row.get(column.key)
    text = format_cell(value, column)
    style = column.styler(value) if column.styler is not None else None
    if _is_marked(row, column):
        text, style = f"{text} {FAIL_MARK}", "bold red"
    return text, style


def render(
    rows: Sequence[Row],
    columns: Sequence[Column],
    fmt: str,
    *,
    title: str | None = None,
    caption: str | None = None,
):
    """Dispatch on ``fmt`` (one of :data:`FORMATS`): a rich Table for ``table``, else text."""
    if fmt == "table":
        return to_table(rows, columns, title=title, caption=caption)
    if fmt == "json":
        return to_json(rows, columns) + "\n"
    if fmt == "csv":
        return to_csv(rows, columns)
    if fmt == "markdown":
        return to_markdown(rows, columns, title=title, caption=caption)
    from deconv_cli.errors import InputError, choice_error

    raise choice_error(InputError, "fmt", fmt, FORMATS)


# --- compare -------------------------------------------------------------------------


def _passed_text(value: Any) -> str:
    return "pass" if value else "FAIL"


def _passed_style(value: Any) -> str:
    return "green" if value else "bold red"


def _file_text(value: Any) -> str:
    return "missing" if value is None else str(value)


def _file_style(value: Any) -> str | None:
    return "bold red" if value is None else None


def _channel_text(value: Any) -> str:
    return "all" if value is None else str(value)


def compare_columns(
    metric_names: Sequence[str], *, per_channel: bool = False, per_slice: bool = False
) -> list[Column]:
    """Columns of a ``compare`` report: files, [z], [channel], metrics, passed, failures,
    error.

    A file without a partner shows as ``missing`` in the table (null in JSON).
    ``failures`` and ``error`` go to JSON/CSV only; in the table the failing values
    themselves are marked.
    """
    columns = [
        Column(key, key, formatter=_file_text, styler=_file_style, footnote=True)
        for key in ("reference", "candidate")
    ]
    if per_slice:
        columns.append(Column("z", "z", formatter=_channel_text))
    if per_channel:
        columns.append(Column("channel", "channel", formatter=_channel_text))
    columns += [metric_column(name) for name in metric_names]
    columns += [
        Column("passed", "result", formatter=_passed_text, styler=_passed_style),
        Column("failures", "failures", in_table=False),
        Column("error", "error", in_table=False),
    ]
    return columns


def compare_caption(
    passed: int,
    total: int,
    worst: Mapping[str, tuple[float, str]] | None = None,
) -> str:
    """One-line summary of a comparison.

    For example ``3/4 passed · worst PSNR 21.30 dB (b.png) · worst SSIM 0.7100 (b.png)``.

    Parameters
    ----------
    passed, total : int
        Comparisons that passed, and all comparisons.
    worst : mapping, optional
        ``{metric: (value, where)}`` for the metrics to summarize (``psnr``, ``ssim``).
    """
    parts = [f"{passed}/{total} passed"]
    for name, (value, where) in (worst or {}).items():
        parts.append(f"worst {metric_text(name, value)} ({where})")
    return " · ".join(parts)


def metric_text(name: str, value: float | None) -> str:
    """A metric for people, e.g. ``PSNR 21.30 dB``, ``SSIM 0.7100``, ``SSIM —``."""
    column = metric_column(name)
    text = MISSING if value is None else format_number(value, column.fmt)
    return f"{column.header} {text}" + (f" {column.unit}" if column.unit else "")
