"""``convolve`` and ``transpose``: apply ``A`` or ``Aᵀ`` to images and write the results."""

from __future__ import annotations

import sys

import click

from deconv_cli.cli.options import (
    geometry_options,
    kernel_options,
    noise_options,
    output_shape_option,
    processing_options,
)
from deconv_cli.errors import DeconvError


def run_batch(batch, build, *, title, kernel, notes=()) -> list:
    """Process every input of ``batch`` with ``build(single)``'s transform, report, and
    return the items' results.

    One item runs in this process and its failure is a usage error (exit 2); with
    several, failures are reported per item, the rest go on, and the exit is 1.
    """
    from deconv_cli import batch as core
    from deconv_cli import batch_run
    from deconv_cli.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, CommandFailed

    if batch.overwrite and batch.skip_existing:
        raise DeconvError("--overwrite and --skip-existing contradict each other; give one")
    if batch.scheduler not in (None, "local") and batch.jobs != 1:
        raise DeconvError("--jobs sets the workers of --scheduler local; a cluster has its own")
    from deconv_cli.cli.chunked import run_zarr

    if run_zarr(batch, build, title=title):
        return []
    sources = core.collect(batch.inputs, recursive=batch.recursive)
    stdin_data = b""
    if any(s.path is None for s in sources):
        stdin_data = sys.stdin.buffer.read()
    items = core.plan(
        sources,
        batch.output,
        name=batch.name,
        fmt=batch.fmt,
        dtype=batch.dtype,
        stdin_head=stdin_data,
    )
    single = len(items) == 1
    settings = core.Settings(
        build(single),
        dtype=batch.dtype,
        axes=batch.axes,
        overwrite=batch.overwrite,
        skip_existing=batch.skip_existing,
    )
    if single and batch.scheduler is None:
        item = items[0]
        if item.source.path is None or item.output is None:
            results = [batch_run.run_stdio(item, settings, stdin_data, sys.stdout.buffer)]
        else:
            results = [batch_run.run_item(item, settings)]
        if not batch.quiet:
            _summary(title, kernel, results, notes, streamed=False)
        return results
    jobs = batch_run.available_cores() if batch.jobs == 0 else batch.jobs
    with batch_run.Stop() as stop:
        results = _run_with_progress(
            batch_run.run(
                items,
                settings,
                jobs=jobs,
                scheduler=batch.scheduler,
                fail_fast=batch.fail_fast,
                stop=stop,
            ),
            len(items),
            title,
            quiet=batch.quiet,
        )
    if stop.requested:
        what = "interrupted" if stop.exit_code == EXIT_INTERRUPTED else "terminated"
        click.echo(f"deconv: {what}: no new items were started; outputs are complete", err=True)
    _summary(title, kernel, results, notes, streamed=True, quiet=batch.quiet, total=len(items))
    if stop.requested:
        raise CommandFailed(stop.exit_code)
    if any(r.status == "failed" for r in results) or len(results) < len(items):
        raise CommandFailed(EXIT_CHECK_FAILED)
    return results


def _name_flag(result) -> None:
    """A failed item's message names flags where the library named its parameters."""
    from deconv_cli.cli import flag, said

    if result.parameter and result.message.startswith(f"{result.parameter}: "):
        result.message = flag(result.parameter) + result.message[len(result.parameter) :]
    result.message = said(result.message)


def _run_with_progress(results, total, title, *, quiet):
    """Collect results: a progress bar on a terminal, one line per item otherwise."""
    import time

    done = []
    start = time.perf_counter()
    bar = None
    console = None if quiet else _console()  # rich is imported only when it prints
    if console is not None and console.is_terminal:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        bar.start()
        task = bar.add_task(title, total=total, rate="")
    try:
        for result in results:
            _name_flag(result)
            done.append(result)
            rate = len(done) / max(time.perf_counter() - start, 1e-9)
            if bar is not None:
                bar.update(task, advance=1, rate=f"{rate:.2f} items/s")
            elif not quiet:
                click.echo(f"[{len(done)}/{total}] {_line(result)}", err=True)
    finally:
        if bar is not None:
            bar.stop()
    return done


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _line(result) -> str:
    """One line for one item: what was written, or why not."""
    item = result.item
    if result.status == "failed":
        return f"FAILED {item.source.label}: {result.message}"
    if result.status == "skipped":
        return f"skipped {item.source.label}: {result.message}"
    r = result.report
    return (
        f"{r.input} -> {r.output} ({r.output_dtype}): "
        f"{_shape(r.input_shape)} -> {_shape(r.output_shape)}, {r.engine} engine, "
        f"{r.seconds:.3f} s"
    )


def _shape(shape) -> str:
    return "x".join(map(str, shape))


MAX_TABLE_ROWS = 20


def _summary(title, kernel, results, notes, *, streamed, quiet=False, total=None) -> None:
    """The end of a run on stderr: a table on a terminal, plain lines otherwise.

    Per-item details (method, parameters, clipping) follow; in logs they are
    printed once per item. Large batches list only the items not done.
    """
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    failed = [r for r in results if r.status == "failed"]
    if quiet:
        for r in failed:
            click.echo(f"FAILED {r.item.source.label}: {r.message}", err=True)
        return
    from rich.table import Table

    from deconv_cli.cli import said

    console = _console()
    shown = (
        results if len(results) <= MAX_TABLE_ROWS else [r for r in results if r.status != "done"]
    )
    if console.is_terminal:
        table = Table(title=title, caption=f"kernel {kernel.description}", title_justify="left")
        for column in ("input", "output", "shape", "engine", "time", "status"):
            table.add_column(column, justify="right" if column == "time" else "left")
        for r in shown:
            if r.report is None:
                table.add_row(r.item.source.label, r.item.output_label, "", "", "", r.message)
                continue
            p = r.report
            table.add_row(
                str(p.input),
                f"{p.output} ({p.output_dtype})",
                f"{_shape(p.input_shape)} -> {_shape(p.output_shape)}",
                p.engine,
                f"{p.seconds:.3f} s",
                r.status,
            )
        console.print(table)
    elif not streamed:
        click.echo(f"{title}, kernel {kernel.description}", err=True)
        for r in shown:
            click.echo(_line(r), err=True)
    if len(results) <= MAX_TABLE_ROWS or not console.is_terminal:
        for r in results:
            if r.report is None:
                continue
            if r.report.clipped:
                click.echo(
                    f"{r.report.output}: {r.report.clipped} pixels clipped to the "
                    f"{r.report.output_dtype} range",
                    err=True,
                )
            for key, value in r.report.details.items():
                click.echo(f"{r.report.output}: {key}: {said(value)}", err=True)
    if total is not None:
        seconds = sum(r.report.seconds for r in results if r.report is not None)
        missing = total - len(results)
        click.echo(
            f"{total} items: {counts['done']} done, {counts['skipped']} skipped, "
            f"{counts['failed']} failed"
            + (f", {missing} not run" if missing else "")
            + f" ({seconds:.1f} s of processing)",
            err=True,
        )
        for r in failed:
            click.echo(f"failed: {r.item.source.label}: {r.message}", err=True)
    for note in notes:
        click.echo(note, err=True)


@click.command()
@processing_options
@kernel_options
@geometry_options()
@noise_options
def convolve(batch, kernel, geometry, noise, seed):
    """Blur images: apply the convolution operator A.

    \b
    Examples:
      deconv convolve photo.png -k gaussian:sigma=2 -o blurred.png
      deconv convolve img.npy -k motion:length=15,angle=30 --boundary wrap -o b.npy
      deconv convolve a.png b.png -k disk:radius=3 --noise gaussian:sigma=0.01 --seed 1 -o out/
      deconv convolve photo.png -k shake:size=21,seed=3 --noise jpeg:quality=90 -o b.png
      deconv convolve raw.npy -k disk:radius=4 --noise poisson:peak=200+quantize:bits=8 -o b.npy
      deconv convolve x.npy -k samples/haar_bank.npy --correlate --stride 2 -o coeffs.npy
      deconv convolve stack.zarr -k gaussian:sigma=1.5,sigma_z=3 -o blurred.zarr --scheduler local
    """
    from deconv_cli.cli.models import operator_inputs
    from deconv_cli.noise import parse_noise
    from deconv_cli.process import Convolve

    geometry, kernel = operator_inputs(kernel, geometry)
    transform = Convolve(kernel, geometry, noise=parse_noise(noise), seed=seed, tile=batch.tile)
    run_batch(
        batch,
        lambda single: transform,
        title=f"convolve ({geometry.describe()})",
        kernel=kernel,
    )


@click.command()
@processing_options
@kernel_options
@geometry_options()
@output_shape_option
def transpose(batch, kernel, geometry, output_shape):
    """Apply the exact adjoint Aᵀ of `convolve` with the same flags.

    The transpose (deep learning's "deconvolution", conv_transpose2d) restores the
    image's shape, not its values: Aᵀ A is a second blur, not the identity.
    To recover the values use `deconv invert`.

    \b
    Examples:
      deconv transpose blurred.png -k gaussian:sigma=2 -o adjoint.png
      deconv transpose coeffs.npy -k samples/haar_bank.npy --correlate --stride 2 -o x.npy
      deconv transpose y.npy -k box:size=3 --stride 2 --output-shape 64x64 -o x.npy
    """
    from deconv_cli.cli.models import operator_inputs
    from deconv_cli.operators import parse_pair
    from deconv_cli.process import Transpose

    geometry, kernel = operator_inputs(kernel, geometry)
    requested = parse_pair(output_shape, "output_shape")
    transform = Transpose(kernel, geometry, output_shape=requested, tile=batch.tile)
    run_batch(
        batch,
        lambda single: transform,
        title=f"transpose ({geometry.describe()})",
        kernel=kernel,
        notes=[
            "The transpose restores the shape, not (in general) the values: "
            "use `deconv invert` to recover the image."
        ],
    )


COMMANDS = [convolve, transpose]
