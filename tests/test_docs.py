"""The documentation agrees with the code: the CLI reference, every option, every link.

- ``docs/reference/cli.md`` is what ``docs/gen_cli_reference.py`` renders from the
  commands' ``--help`` (``make docs`` regenerates it);
- every option of every command (walking click's parameters, not the generator's
  output) appears in that command's section of the committed page;
- every relative link in README.md and docs/**/*.md names a file that exists and, for
  ``#anchor`` links, a heading of the target page.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import click
import pytest

from deconv_cli.cli import main

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference" / "cli.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "gen_cli_reference", ROOT / "docs" / "gen_cli_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(command: click.Command, path: str = "deconv"):
    """``(full name, command)`` for the group and every command below it."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def _sections(text: str) -> dict[str, str]:
    """The reference page's ``## deconv ...`` sections by command name."""
    parts = re.split(r"^## (deconv[\w -]*)$", text, flags=re.M)
    return {name.strip(): body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_cli_reference_is_up_to_date():
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.exists() else ""
    rendered = _generator().render()
    if committed != rendered:
        import difflib

        diff = "\n".join(
            list(difflib.unified_diff(committed.splitlines(), rendered.splitlines(), lineterm=""))[
                :40
            ]
        )
        pytest.fail(
            f"docs/reference/cli.md disagrees with the commands' --help: run `make docs`\n{diff}"
        )


@pytest.mark.parametrize(
    "path, command", list(_commands(main)), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_option_of_every_command_is_in_the_reference(path, command):
    sections = _sections(REFERENCE.read_text(encoding="utf-8"))
    assert path in sections, f"docs/reference/cli.md has no section for `{path}`: run `make docs`"
    section = sections[path]
    missing = []
    for param in command.params:
        if isinstance(param, click.Option):
            if param.hidden:
                continue
            names = [*param.opts, *param.secondary_opts]
        else:
            names = [param.human_readable_name.upper()]
        missing += [
            n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", section)
        ]
    help_names = command.get_help_option_names(click.Context(command, info_name=path.split()[-1]))
    missing += [n for n in help_names if n not in section]
    assert not missing, (
        f"`{path}` options missing from docs/reference/cli.md: {missing}; run `make docs`"
    )


# --- links -----------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where links are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation
    removed (letters, digits, spaces, hyphens and underscores stay), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (repeated headings get -1, -2, ...)."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text("utf-8")), re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text("utf-8"))) if not re.match(r"[a-z]+:", t)]


def test_the_link_finder_finds_links_and_skips_code():
    text = "see [a](x.md) and ![b](img/y.png), [c [d]](z.md#h) `[no](n.md)`\n```\n[no](m.md)\n```\n"
    assert LINK.findall(_prose(text)) == ["x.md", "img/y.png", "z.md#h"]
    assert _slug("Real photographs: `--boundary unknown`") == "real-photographs---boundary-unknown"
    assert _slug("`deconv invert`: true deconvolution") == "deconv-invert-true-deconvolution"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading `{anchor}` in {file.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


# --- the performance page ----------------------------------------------------------------------


def test_make_bench_writes_one_section_per_benchmark(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    (tmp_path / "bench_a.py").write_text(f"print('ratio 2.5x'); print({str(ROOT / 'x.png')!r})\n")
    (tmp_path / "bench_b.py").write_text("print('partial'); raise SystemExit(3)\n")
    (tmp_path / "helper.py").write_text("raise SystemExit('not a benchmark')\n")
    page = tmp_path / "performance.md"

    assert run_all.main(["bench_a"], folder=tmp_path, page=page) == 0
    assert not page.exists()  # a partial run leaves the page alone

    assert run_all.main([], folder=tmp_path, page=page) == 1  # bench_b failed
    text = page.read_text()
    assert text.startswith("# Performance\n")
    assert "Generated by `make bench`" in text
    assert re.findall(r"^## (\S+)$", text, re.M) == ["bench_a", "bench_b"]
    a, b = text.split("## bench_a")[1].split("## bench_b")
    assert "ratio 2.5x" in a and "x.png" in a and str(ROOT) not in text
    assert "partial" in b and "exit code 3" in b
    assert "ratio 2.5x" in capsys.readouterr().out  # echoed as it ran
