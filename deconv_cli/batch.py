"""Many images through one transform: find inputs, name outputs, run, account for each.

A batch is a list of :class:`Item` (an input file and the output it goes to), planned
up front by :func:`plan` so that every naming problem (two inputs onto one output,
an output over an input, a bad ``--name`` template) is a usage error before any work
starts. :mod:`deconv_cli.batch_run` then runs the items and yields one
:class:`ItemResult` per item.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path

from deconv_cli import formats, fs
from deconv_cli.config import Config
from deconv_cli.config import current as current_config
from deconv_cli.errors import DeconvError, InputError, OutputError, mention

STDIO = "-"
NAME_FIELDS = ("stem", "ext")
DEFAULT_NAME = "{stem}{ext}"


@dataclass(frozen=True)
class Source:
    """An input: a file (``path``) or standard input (``path is None``).

    ``relative`` is where the output goes under ``-o DIR``: the file's name, or
    its path below the directory it was found in (``--recursive`` mirrors it).
    """

    path: Path | None
    relative: Path

    @property
    def label(self) -> str:
        return STDIO if self.path is None else str(self.path)


@dataclass(frozen=True)
class Item:
    """One unit of work: read ``source``, write ``output`` (None: standard output)."""

    source: Source
    output: Path | None
    extension: str

    @property
    def output_label(self) -> str:
        return "<stdout>" if self.output is None else str(self.output)


@dataclass
class ItemResult:
    """How one item ended: ``done`` (with its report), ``skipped`` or ``failed``."""

    item: Item
    status: str
    report: object | None = None  # a process.ItemReport when done
    message: str = ""  # parameters in it are marked (errors.mention; errors.spoken says them)
    parameter: str | None = None  # the parameter a failure's message names first


@dataclass
class Settings:
    """What every item shares: the transform and the writing options."""

    transform: object  # a process.Transform
    dtype: str | None = None
    axes: str | None = None  # the inputs' axes as stored (--axes); None: the files' own
    overwrite: bool = False
    skip_existing: bool = False
    fft_threads: int | None = None  # set in each worker (Dask); None: leave as is
    config: Config = _field(default_factory=current_config)  # the pixel limit, for workers


# --------------------------------------------------------------------------- planning


def collect(specs: Sequence[str], *, recursive: bool = False) -> list[Source]:
    """The input files named by ``specs``: files, directories, ``-`` (standard input).

    A directory contributes the image files (:data:`deconv_cli.formats.READ_EXTENSIONS`,
    hidden files excluded) directly in it, or below it with ``recursive``, in sorted order.
    A file named twice is processed once.

    Raises
    ------
    InputError
        A path that does not exist, ``-`` given twice, a directory with no images.
    """
    sources: list[Source] = []
    seen: set[str] = set()
    for spec in specs:
        if spec == STDIO:
            if any(s.path is None for s in sources):
                raise InputError("`-` (standard input) can be given only once")
            sources.append(Source(None, Path("stdin")))
            continue
        path = Path(spec)
        fs.probe(path, InputError, follow=True)  # a name too long, a link loop...
        if path.is_dir():
            found = _images_in(path, recursive)
            if not found:
                add = mention("recursive", True)
                hint = "" if recursive else f" (add {add} to descend into subdirectories)"
                raise InputError(
                    f"`{path}`: no image files ({', '.join(formats.READ_EXTENSIONS)}){hint}"
                )
            pairs = [(f, f.relative_to(path)) for f in found]
        elif path.exists():
            pairs = [(path, Path(path.name))]
        else:
            raise InputError(f"`{path}`: no such file or directory")
        for file, relative in pairs:
            key = os.path.normcase(os.path.realpath(file))
            if key not in seen:
                seen.add(key)
                sources.append(Source(file, relative))
    return sources


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    walk = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(
        p
        for p in walk
        if p.suffix.lower() in formats.READ_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def check_name(template: str) -> str:
    """Validate an output name template: literal text and the fields ``{stem}`` and ``{ext}``.

    Nothing else a Python format string allows (attribute access, indexing,
    conversions, format specs such as ``{stem:>999999999}``) is accepted: a name
    template needs none of them, and they could read objects or build huge strings.
    """
    import string

    fields = "fields are {stem} (input name without extension) and {ext} (output extension)"
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise DeconvError(
            f"`{template}` is not a valid template ({err!s}); {fields}", parameter="name"
        ) from err
    for _, field, spec, conversion in parts:
        if field is not None and (field not in NAME_FIELDS or spec or conversion):
            whole = field + ("!" + conversion if conversion else "") + (":" + spec if spec else "")
            raise DeconvError(
                f"`{{{whole}}}` in `{template}` is not allowed; {fields}, "
                "with no format specs, conversions or attributes",
                parameter="name",
            )
    example = template.format(stem="a", ext=".png")
    if not example or "/" in template or os.sep in template or example in (".", ".."):
        raise DeconvError(
            f"`{template}` must give a file name, without directories", parameter="name"
        )
    return template


def output_extension(fmt: str | None) -> str | None:
    """The extension for the output format ``fmt`` (``None`` when not given)."""
    if fmt is None:
        return None
    key = fmt.lower().lstrip(".")
    if key not in formats.FORMAT_NAMES:
        names = ", ".join(sorted(formats.FORMAT_NAMES))
        raise DeconvError(f"`{fmt}` is not one of {names}", parameter="fmt")
    return formats.FORMAT_NAMES[key]


def plan(
    sources: Sequence[Source],
    output: str,
    *,
    name: str | None = None,
    fmt: str | None = None,
    dtype: str | None = None,
    stdin_head: bytes = b"",
) -> list[Item]:
    """Map each input to its output.

    ``output`` is a file (one input, no ``name``), ``-`` (standard output, one input),
    or a directory (created when needed): ``DIR/<relative dir>/<name>`` with
    ``name`` (default ``{stem}{ext}``) formatted from the input's stem and the output
    extension (``fmt``'s, else the input's; data from standard input is recognised
    from ``stdin_head``, its first bytes).

    Raises
    ------
    DeconvError
        A bad template or format, an output extension deconv does not write (or
        whose format cannot hold ``dtype``), several inputs with a file or ``-``
        output, an output that would replace an input, two inputs mapping onto one
        output.
    """
    from deconv_cli.formats import WRITE_EXTENSIONS, check_format

    template = check_name(DEFAULT_NAME if name is None else name)
    forced = output_extension(fmt)
    target = Path(output)
    as_dir = name is not None or output.endswith(("/", os.sep)) or target.is_dir()
    if output == STDIO:
        if len(sources) != 1:
            raise OutputError(
                f"`-`: standard output takes one input, not {len(sources)}", parameter="output"
            )
        if name is not None:
            raise OutputError(
                f"`{name}` names files in an output directory, not standard output",
                parameter="name",
            )
        source = sources[0]
        ext = forced or _kept_extension(
            source,
            stdin_head,
            f"{mention('output', '-')}: give {mention('fmt')} (png, tif, npy, ...) for "
            "standard output",
        )
        check_format(Path(f"-o -{ext}"), dtype)
        return [Item(source, None, ext)]
    if not as_dir and len(sources) > 1:
        if target.exists() or target.suffix.lower() in WRITE_EXTENSIONS:
            raise OutputError(
                f"`{target}` is a file but {len(sources)} inputs were given; "
                "give a directory for several inputs",
                parameter="output",
            )
        as_dir = True
    if not as_dir:
        ext = target.suffix.lower()
        if forced is not None and ext != forced:
            raise OutputError(
                f"`{target}` names a `{ext}` file but {mention('fmt')} says `{fmt}`",
                parameter="output",
            )
        items = [Item(sources[0], target, ext)]
    else:
        fs.check_directory(target, create=True, what="output")  # each item's file: run_item
        items = []
        for source in sources:
            ext = forced or _kept_extension(
                source, stdin_head, f"`{source.label}`: unknown format; give {mention('fmt')}"
            )
            stem = source.relative.name[: -len(source.relative.suffix) or None]
            file_name = template.format(stem=stem, ext=ext)
            items.append(Item(source, target / source.relative.parent / file_name, ext))
    for item in items:
        if name is not None and item.output.suffix.lower() not in WRITE_EXTENSIONS:
            raise OutputError(
                f"`{name}` gives `{item.output.name}`, which has no output format's "
                "extension; end the template with {ext} or .png, .tif, .npy, ...",
                parameter="name",
            )
        check_format(item.output, dtype)
    _check_plan(items)
    return items


def _kept_extension(source: Source, stdin_head: bytes, unknown: str) -> str:
    """The input's extension (standard input's from its first bytes), for an output in
    the input's format; ``unknown`` is the error when there is none."""
    if source.path is not None:
        ext, fmt = source.path.suffix.lower(), formats.by_extension(source.path)
    else:
        fmt = formats.sniff(stdin_head)
        ext = "" if fmt is None else fmt.extensions[0]
    if not ext:
        raise OutputError(unknown)
    if fmt is not None and not fmt.writable:
        raise OutputError(
            f"`{source.label}` is {fmt.name}, which deconv reads but does not write; "
            f"give {mention('fmt')} (png, tif, npy, ...)"
        )
    return ext


def _check_plan(items: Sequence[Item]) -> None:
    """No output onto an input, no two inputs onto one output."""
    inputs = {_key(i.source.path): i.source.path for i in items if i.source.path is not None}
    owners: dict[str, Item] = {}
    for item in items:
        key = _key(item.output)
        if key in inputs:
            raise OutputError(
                f"`{item.output}` is an input; refusing to write over it "
                f"(choose another {mention('output')} or a {mention('name')} template)"
            )
        if key in owners:
            raise OutputError(
                f"inputs `{owners[key].source.label}` and `{item.source.label}` would both be "
                f"written to `{item.output}`; use a {mention('name')} template or separate runs"
            )
        owners[key] = item


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def sniff(head: bytes) -> str | None:
    """The extension for data starting with ``head`` (:func:`deconv_cli.formats.sniff`), or None."""
    fmt = formats.sniff(head)
    return None if fmt is None else fmt.extensions[0]
