"""Running a batch: each item to its end, in this process, in worker processes or on Dask.

:func:`run` processes the :class:`~deconv_cli.batch.Item` s that
:func:`deconv_cli.batch.plan` made, in this process, in worker processes
(``jobs > 1``) or on a Dask cluster (``scheduler``), and yields one
:class:`~deconv_cli.batch.ItemResult` per item as it completes. A failing item never
stops the others unless ``fail_fast``; outputs are written atomically, so an
interrupted batch leaves only complete outputs and resumes with ``skip_existing``.
:class:`Stop` turns Ctrl-C and SIGTERM into "start no more items".

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
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from deconv_cli import atomic, fs
from deconv_cli.batch import Item, ItemResult, Settings, Source, sniff
from deconv_cli.config import use as use_config
from deconv_cli.errors import DeconvError, InputError, OutputError, mention, signal_exit_code

POLL = 0.2  # seconds between checks for a stop request while items run


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
            return run_item(item, settings)
    except DeconvError as err:
        message = f"{err.parameter}: {err.detail}" if err.parameter else err.detail
        return ItemResult(item, "failed", message=message, parameter=err.parameter)
    except MemoryError:
        message = f"not enough memory for this image (try {mention('tile')})"
        return ItemResult(item, "failed", message=message)
    except OSError as err:  # the machine's answer (a full disk...), not a bug
        return ItemResult(item, "failed", message=fs.message(err))
    except Exception as err:  # a bug must not stop the other items; its type is reported
        return ItemResult(item, "failed", message=f"unexpected {type(err).__name__}: {err}")


def run_item(item: Item, settings: Settings) -> ItemResult:
    """Run one item; errors propagate (:func:`process_item` reports them as a result)."""
    from deconv_cli.process import process_file

    if fs.probe(item.output) is not None:
        if settings.skip_existing:
            return ItemResult(item, "skipped", message=f"`{item.output}` exists")
        if not settings.overwrite:
            raise OutputError(
                f"`{item.output}` (the output for `{item.source.label}`) exists; "
                f"use {mention('overwrite', True)}, or {mention('skip_existing', True)} to "
                "resume a batch"
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
                result = run_item(spooled, settings)
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
    f"killer: try fewer {mention('jobs')}, or {mention('tile')})"
)


_STOP = None  # in a worker process: the batch's stop event


def _worker_init(threads: int, stop) -> None:
    """Thread limits and signals for a worker process.

    FFT threads are set for the process; BLAS/OpenMP pools, loaded already, are limited
    through threadpoolctl. Ctrl-C (sent to the whole process group) is
    handled by the parent; SIGTERM (the pool ending a broken batch, or a second signal
    to the batch) ends the worker silently, removing the file it was writing.
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
    """SIGTERM in a worker: remove the file being written and end at once.

    Not by raising SystemExit: a signal landing while the worker runs a ``__del__`` or a
    weakref callback (the import machinery's module locks have one) has its exception
    printed as "Exception ignored" and lost, and the worker ran on.
    """
    atomic.remove_partial_files()
    os._exit(signal_exit_code(signum))


def _unless_stopped(item: Item, settings: Settings) -> ItemResult | None:
    """:func:`process_item` in a worker process, unless the batch was asked to stop."""
    if _STOP.is_set():
        return None
    return process_item(item, settings)


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


@contextlib.contextmanager
def dask_client(scheduler: str, jobs: int):
    """A Dask client: on a local cluster started here (``"local"``: ``jobs`` worker
    processes, or one per core), or connected to the scheduler at an address."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:
        raise DeconvError(
            "needs Dask: pip install 'deconv-cli[dask]' (or: pip install 'dask[distributed]')",
            parameter="scheduler",
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
                    f"cannot connect to the Dask scheduler at `{scheduler}`: {err}",
                    parameter="scheduler",
                ) from err
        yield client


def _run_dask(items, settings, scheduler: str, jobs: int, fail_fast: bool, stop: Stop):
    with dask_client(scheduler, jobs) as client:
        from dask.distributed import wait

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
