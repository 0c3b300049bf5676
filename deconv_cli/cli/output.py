"""Reports on stdout and live status on stderr: the one place that decides widths.

On a terminal a table takes the terminal's width. Piped or redirected, it takes
``$COLUMNS`` when set (a positive whole number), else :data:`PIPE_WIDTH`, the width of
a standard terminal. Tables are built by :func:`deconv_cli.report.to_table` for that
width, so long notes become numbered footnotes instead of tall cells.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

PIPE_WIDTH = 80


def stdout_console():
    """A rich Console on stdout, :data:`PIPE_WIDTH` (or ``$COLUMNS``) wide when not a terminal."""
    from rich.console import Console

    console = Console()
    if console.is_terminal:
        return console
    columns = os.environ.get("COLUMNS", "").strip()
    return Console(width=int(columns) if columns.isdigit() and int(columns) > 0 else PIPE_WIDTH)


def print_table(
    rows,
    columns,
    *,
    title: str | None = None,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
) -> None:
    """Plain lines, the table (fitted to the console's width), plain lines, on stdout.

    The plain lines are never wrapped by rich (a terminal wraps them itself).
    """
    from rich.text import Text

    from deconv_cli.report import to_table

    console = stdout_console()
    for line in before:
        console.print(Text(line), soft_wrap=True)
    console.print(to_table(rows, columns, title=title, width=console.width))
    for line in after:
        console.print(Text(line), soft_wrap=True)


@contextlib.contextmanager
def live_status(total: int, *, quiet: bool = False, label: str) -> Iterator:
    """Yield a function ``step(name)`` that announces each of ``total`` steps on stderr.

    On a terminal: one live rich progress line (``label``, the step's name, steps
    done, elapsed time), removed at the end. Otherwise (a log): one line per step,
    ``label: running NAME``. Nothing with ``quiet``.
    """
    from rich.console import Console

    console = Console(stderr=True)
    if quiet:
        yield lambda name: None
        return
    if not console.is_terminal:
        import click

        yield lambda name: click.echo(f"{label}: running {name}", err=True)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task(label, total=total)
    done = iter(range(total + 1))  # steps finished when the next one starts

    def step(name: str) -> None:
        progress.update(task, completed=next(done), description=f"{label}: {name}")

    with progress:
        yield step
