"""Many images through one transform: find inputs, name outputs, run, account for each.

A batch is a list of :class:`Item` (an input file and the output it goes to), planned
up front by :func:`plan` so that every naming problem (two inputs onto one output,
an output over an input, a bad ``--name`` template) is a usage error before any work
starts. :func:`run` then processes the items in this process, in worker processes
(``jobs > 1``) or on a Dask cluster (``scheduler``), and yields one
:class:`ItemResult` per item as it completes. A failing item never stops the others
unless ``fail_fast``; outputs are written atomically, so an interrupted batch leaves
only complete outputs and resumes with ``skip_existing``.

Standard input and output (``-``) are carried through a private temporary directory:
the data is written to a file there, read by the same readers as any file (the
format is recognised from its first bytes) and the result is copied to the stream.

Worker processes are forked (spawned where fork does not exist) and limited to
``cores // jobs`` FFT threads each.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from dataclasses import field as _field
from pathlib import Path
from typing import BinaryIO

from deconv_cli import formats, fs
from deconv_cli.config import Config
from deconv_cli.config import current as current_config
from deconv_cli.config import use as use_config
from deconv_cli.errors import DeconvError, InputError, OutputError, signal_exit_code

STDIO = "-"
POLL = 0.2  # seconds between checks for a stop request while items run
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
    message: str = ""
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
                hint = "" if recursive else " (add --recursive to descend into subdirectories)"
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
            f"--name: `{template}` is not a valid template ({err!s}); {fields}"
        ) from err
    for _, field, spec, conversion in parts:
        if field is not None and (field not in NAME_FIELDS or spec or conversion):
            whole = field + ("!" + conversion if conversion else "") + (":" + spec if spec else "")
            raise DeconvError(
                f"--name: `{{{whole}}}` in `{template}` is not allowed; {fields}, "
                "with no format specs, conversions or attributes"
            )
    example = template.format(stem="a", ext=".png")
    if not example or "/" in template or os.sep in template or example in (".", ".."):
        raise DeconvError(f"--name: `{template}` must give a file name, without directories")
    return template


def output_extension(fmt: str | None) -> str | None:
    """The extension for ``--format`` (``None`` when not given)."""
    if fmt is None:
        return None
    key = fmt.lower().lstrip(".")
    if key not in formats.FORMAT_NAMES:
        names = ", ".join(sorted(formats.FORMAT_NAMES))
        raise DeconvError(f"--format: `{fmt}` is not one of {names}")
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
            raise OutputError(f"-o -: standard output takes one input, not {len(sources)}")
        if name is not None:
            raise OutputError("--name names files in an output directory, not standard output")
        source = sources[0]
        ext = forced or _kept_extension(
            source, stdin_head, "-o -: give --format (png, tif, npy, ...) for standard output"
        )
        check_format(Path(f"-o -{ext}"), dtype)
        return [Item(source, None, ext)]
    if not as_dir and len(sources) > 1:
        if target.exists() or target.suffix.lower() in WRITE_EXTENSIONS:
            raise OutputError(
                f"-o `{target}` is a file but {len(sources)} inputs were given; "
                "give a directory for several inputs"
            )
        as_dir = True
    if not as_dir:
        ext = target.suffix.lower()
        if forced is not None and ext != forced:
            raise OutputError(f"-o `{target}` names a `{ext}` file but --format says `{fmt}`")
        items = [Item(sources[0], target, ext)]
    else:
        fs.check_directory(target, create=True, what="-o")  # each item's file: _process
        items = []
        for source in sources:
            ext = forced or _kept_extension(
                source, stdin_head, f"`{source.label}`: unknown format; give --format"
            )
            stem = source.relative.name[: -len(source.relative.suffix) or None]
            file_name = template.format(stem=stem, ext=ext)
            items.append(Item(source, target / source.relative.parent / file_name, ext))
    for item in items:
        if name is not None and item.output.suffix.lower() not in WRITE_EXTENSIONS:
            raise OutputError(
                f"--name `{name}` gives `{item.output.name}`, which has no output format's "
                "extension; end the template with {ext} or .png, .tif, .npy, ..."
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
            "give --format (png, tif, npy, ...)"
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
                "(choose another -o or a --name template)"
            )
        if key in owners:
            raise OutputError(
                f"inputs `{owners[key].source.label}` and `{item.source.label}` would both be "
                f"written to `{item.output}`; use a --name template or separate runs"
            )
        owners[key] = item


def _key(path: Path) -> str:
    return os.path.normcase(os.path.realpath(path))


def sniff(head: bytes) -> str | None:
    """The extension for data starting with ``head`` (:func:`deconv_cli.formats.sniff`), or None."""
    fmt = formats.sniff(head)
    return None if fmt is None else fmt.extensions[0]


# --------------------------------------------------------------------------- running


def process_item(item: Item, settings: Settings) -> ItemResult:
    """Run one item to completion; any error becomes a ``failed`` result.

    Items reading standard input or writing standard output are run by
    :func:`run_stdio` instead.
    """
    if settings.fft_threads is not None:
        from deconv_cli.operators import set_workers

        set_workers(settings.fft_threads)
    try:
        with use_config(settings.config):
            return _process(item, settings)
    except DeconvError as err:
        return ItemResult(item, "failed", message=str(err), parameter=err.parameter)
    except MemoryError:
        return ItemResult(item, "failed", message="not enough memory for this image (try --tile)")
    except OSError as err:  # the machine's answer (a full disk...), not a bug
        return ItemResult(item, "failed", message=fs.message(err))
    except Exception as err:  # a bug must not stop the other items; its type is reported
        return ItemResult(item, "failed", message=f"unexpected {type(err).__name__}: {err}")


def _process(item: Item, settings: Settings) -> ItemResult:
    from deconv_cli.process import process_file

    if fs.probe(item.output) is not None:
        if settings.skip_existing:
            return ItemResult(item, "skipped", message=f"`{item.output}` exists")
        if not settings.overwrite:
            raise OutputError(
                f"`{item.output}` (the output for `{item.source.label}`) exists; "
                "use --overwrite, or --skip-existing to resume a batch"
            )
    # Before this item's work: a directory, pipe or device in the way, a directory that
    # cannot take the file (whether it exists was settled above).
    fs.check_writable_file(item.output, overwrite=True, create=True)
    fs.make_directory(item.output.parent)
    report = process_file(
        item.source.path,
        item.output,
        settings.transform,
        dtype=settings.dtype,
        overwrite=settings.overwrite,
        axes=settings.axes,
    )
    return ItemResult(item, "done", report)


def run_stdio(item: Item, settings: Settings, stdin_data: bytes, stdout: BinaryIO) -> ItemResult:
    """Run the one item that reads standard input or writes standard output.

    Errors propagate (a one-item run reports them as a usage error).
    """
    from deconv_cli.process import process_file

    if item.source.path is None and not stdin_data:
        raise InputError("standard input is empty")
    with tempfile.TemporaryDirectory(prefix="deconv-stdio-") as spool:
        tmp = Path(spool)
        source = item.source.path
        if source is None:
            source = tmp / f"stdin{sniff(stdin_data) or ''}"
            _spool(source, stdin_data)
        output = tmp / f"stdout{item.extension}"
        try:
            if item.output is not None:
                spooled = Item(Source(source, item.source.relative), item.output, "")
                result = _process(spooled, settings)
            else:
                report = process_file(
                    source, output, settings.transform, dtype=settings.dtype, axes=settings.axes
                )
                with open(output, "rb") as handle, fs.naming(fs.STDOUT):
                    shutil.copyfileobj(handle, stdout)
                    stdout.flush()
                result = ItemResult(item, "done", report)
        except DeconvError as err:  # name the streams, not the files that carried them
            text = _stream_names(err.detail, {source: fs.STDIN, output: fs.STDOUT})
            if isinstance(err, OutputError) and str(output) in str(err):
                text += (
                    f" (standard output is carried through a file in the temporary directory "
                    f"{fs.shown(tmp.parent)}; set TMPDIR to a directory with room)"
                )
            raise type(err)(text, parameter=err.parameter) from err
    return _relabel(result, item)


def _spool(path: Path, data: bytes) -> None:
    """Copy standard input into ``path``; a full or limited disk is said in one line."""
    try:
        path.write_bytes(data)
    except OSError as err:
        raise InputError(
            f"standard input: cannot keep a copy in the temporary directory "
            f"{fs.shown(path.parent.parent)}: {fs.reason(err)} (set TMPDIR to a directory "
            "with room)"
        ) from err


def _stream_names(text: str, names: dict) -> str:
    """``text`` with every mention of a temporary file replaced by its stream's name."""
    for path, name in names.items():
        text = text.replace(f"`{path}`", name).replace(str(path), name)
    return text


class Stop:
    """Ctrl-C or SIGTERM for a batch: the first asks to stop starting items, a second
    interrupts at once (as it would outside a batch; worker processes are ended too).

    Used as a context manager (in the main thread), it replaces the SIGINT, SIGTERM and SIGHUP
    handlers for the duration of the batch, so a signal never lands in the middle of
    bookkeeping: :func:`run` sees :attr:`requested` between items, starts no more
    (worker processes check :attr:`event` before each item), lets the running ones
    finish and yields them, then ends. :attr:`exit_code` is ``128 + signal``: 130
    for SIGINT, 143 for SIGTERM, 129 for SIGHUP (a closed terminal).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.event = None  # a multiprocessing.Event shared with worker processes
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return signal_exit_code(self.signum)

    def _handler(self, signum, frame) -> None:
        if self.requested:  # the second signal: what it would do outside a batch
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signum = signum
        if self.event is not None:
            self.event.set()

    def __enter__(self) -> Stop:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


def run(
    items: Sequence[Item],
    settings: Settings,
    *,
    jobs: int = 1,
    scheduler: str | None = None,
    fail_fast: bool = False,
    stop: Stop | None = None,
) -> Iterator[ItemResult]:
    """Process ``items``, yielding each result as it completes.

    ``jobs > 1`` runs them in that many worker processes, each with
    ``cores // jobs`` FFT threads (never more threads than cores); ``scheduler``
    (``"local"`` or a Dask scheduler address) runs them on a Dask cluster.

    With ``fail_fast`` the first failure, and ``stop.requested`` (Ctrl-C, SIGTERM),
    stop new items from starting; the items already running finish and are yielded,
    so every output is complete and accounted for. Items not run are not yielded.
    A worker process that dies (killed by a signal, e.g. by the out-of-memory
    killer) fails the items it and the other workers had, and the items not run.
    """
    stop = stop or Stop()
    if scheduler is not None:
        yield from _run_dask(items, settings, scheduler, jobs, fail_fast, stop)
    elif jobs > 1 and len(items) > 1:
        yield from _run_processes(items, settings, min(jobs, len(items)), fail_fast, stop)
    else:
        yield from _drive(
            items, lambda item: _done(process_item(item, settings)), set, 1, fail_fast, stop
        )


def _done(result: ItemResult):
    from concurrent.futures import Future

    future = Future()
    future.set_result(result)
    return future


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _drive(items, submit, wait_first, window: int, fail_fast: bool, stop: Stop):
    """Keep ``window`` items in flight; on a stop, start no more and drain the rest.

    ``submit(item)`` returns a future, ``wait_first(futures)`` the finished ones
    (possibly none, after a short wait, so a stop request is seen promptly). A
    future's result is an :class:`ItemResult`, or None for an item a worker did not
    start because of a stop request.
    """
    from concurrent.futures.process import BrokenProcessPool

    queue = iter(items)
    in_flight: dict[object, Item] = {}
    failed = broken = False
    while True:
        while not (stop.requested or failed or broken) and len(in_flight) < window:
            item = next(queue, None)
            if item is None:
                break
            try:
                in_flight[submit(item)] = item
            except BrokenProcessPool:
                broken = True
                yield ItemResult(item, "failed", message=f"not run: {KILLED_WORKER}")
        if not in_flight:
            break
        for future in wait_first(list(in_flight)):
            item = in_flight.pop(future)
            try:
                result = future.result()
            except BrokenProcessPool:
                broken = True
                result = ItemResult(item, "failed", message=f"stopped: {KILLED_WORKER}")
            except Exception as err:  # the item must be accounted for, whatever happened
                reason = str(err) or type(err).__name__
                message = f"worker failed ({type(err).__name__}): {reason}"
                result = ItemResult(item, "failed", message=message)
            if result is None:
                continue
            failed = failed or (fail_fast and result.status == "failed")
            yield _relabel(result, item)
    if broken:
        for item in queue:
            yield ItemResult(item, "failed", message=f"not run: {KILLED_WORKER}")


KILLED_WORKER = (
    "a worker process of the batch was killed (by a signal, e.g. by the out-of-memory "
    "killer: try fewer --jobs, or --tile)"
)


_STOP = None  # in a worker process: the batch's stop event


def _worker_init(threads: int, stop) -> None:
    """Thread limits and signals for a worker process.

    FFT threads are set for the process; BLAS/OpenMP pools, loaded already, are limited
    through threadpoolctl. Ctrl-C (sent to the whole process group) is
    handled by the parent; SIGTERM (the pool ending a broken batch) ends the worker
    silently, removing the file it was writing.
    """
    global _STOP
    _STOP = stop
    from threadpoolctl import threadpool_limits

    from deconv_cli.operators import set_workers

    threadpool_limits(threads)
    set_workers(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_worker)


def _end_worker(signum, frame) -> None:
    raise SystemExit(signal_exit_code(signum))


def _unless_stopped(item: Item, settings: Settings) -> ItemResult | None:
    """:func:`process_item` in a worker process, unless the batch was asked to stop."""
    if _STOP.is_set():
        return None
    try:
        return process_item(item, settings)
    except SystemExit as end:  # SIGTERM: the file being written is removed; end now
        os._exit(end.code)


def _run_processes(items, settings, jobs: int, fail_fast: bool, stop: Stop):
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import deconv_cli.process  # noqa: F401  (forked workers start with it imported)

    threads = max(1, available_cores() // jobs)
    # fork: workers start in milliseconds with everything imported (spawn re-imports
    # numpy, scipy and skimage in each worker: about a second each).
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    stop.event = context.Event()
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_worker_init,
        initargs=(threads, stop.event),
    ) as pool:
        try:
            yield from _drive(
                items,
                lambda item: pool.submit(_unless_stopped, item, settings),
                lambda futures: wait(futures, timeout=POLL, return_when=FIRST_COMPLETED)[0],
                2 * jobs,
                fail_fast,
                stop,
            )
        except (KeyboardInterrupt, SystemExit):  # a second signal: end the running items too
            for worker in multiprocessing.active_children():
                worker.terminate()  # SIGTERM: each removes the file it was writing
            raise


def _run_dask(items, settings, scheduler: str, jobs: int, fail_fast: bool, stop: Stop):
    try:
        from dask.distributed import Client, LocalCluster, wait
    except ImportError as err:
        raise DeconvError(
            "--scheduler needs Dask: pip install 'deconv-cli[dask]' "
            "(or: pip install 'dask[distributed]')"
        ) from err
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=jobs if jobs > 1 else available_cores(),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    host="127.0.0.1",
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="10s"))
            except (OSError, TimeoutError, ValueError) as err:
                raise DeconvError(
                    f"--scheduler: cannot connect to the Dask scheduler at `{scheduler}`: {err}"
                ) from err
        single = replace(settings, fft_threads=1)  # one task per worker thread
        slots = sum(client.nthreads().values()) or 1
        yield from _drive(
            items,
            # Workers have their own working directory: they get absolute paths.
            lambda item: client.submit(process_item, _absolute(item), single, pure=False),
            lambda futures: _dask_wait(wait, futures),
            2 * slots,
            fail_fast,
            stop,
        )


def _dask_wait(wait, futures):
    try:
        return wait(futures, timeout=POLL, return_when="FIRST_COMPLETED").done
    except TimeoutError:
        return set()


def _absolute(item: Item) -> Item:
    source = Source(item.source.path.absolute(), item.source.relative)
    return Item(source, item.output.absolute(), item.extension)


def _relabel(result: ItemResult, item: Item) -> ItemResult:
    """A result for ``item`` run under other paths, with the paths as the user gave them
    (in its message too: Dask workers see absolute paths)."""
    for seen, label in ((item.output, item.output_label), (item.source.path, item.source.label)):
        if seen is not None:
            result.message = result.message.replace(str(seen.absolute()), label)
    if result.report is not None:
        result.report.input = Path(item.source.label)
        result.report.output = Path(item.output_label)
    result.item = item
    return result
