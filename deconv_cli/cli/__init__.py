"""The ``deconv`` command line: a click group; each command parses, calls the core, reports.

Exit codes are defined in :mod:`deconv_cli.errors` (which says where the few exits
outside this module happen: signal handlers and the last flush of standard output);
the mapping from errors to exit codes happens here, in :class:`DeconvGroup`:

- a :class:`~deconv_cli.errors.CommandFailed` (a ``compare`` threshold, a failed batch
  item, a batch stopped by a signal) exits with its code; the command has reported;

- the library names parameters (``iterations: ...``); :func:`shown` says them as the
  flags that set them (``--iterations: ...``), through :func:`flag`, the one place the
  two meet;

- a core :class:`~deconv_cli.errors.DeconvError` and every click usage error (unknown
  option, bad value, missing argument) print one line, ``deconv: error: ...``, and
  exit 2;
- running out of memory is the same, ``deconv: error: not enough memory ...``;
- an ``OSError`` (a full disk, a name too long...) is one line naming the path and
  the errno in words (:mod:`deconv_cli.fs`), exit 2; a closed pipe on standard output
  exits 141 silently, standard error is best effort (:mod:`deconv_cli.cli.streams`);
- Ctrl-C exits 130, SIGTERM 143, SIGHUP 129, after removing the temporary file being
  written;
- Python warnings print on one line each, ``deconv: warning: ...``;
- anything else is a bug: one line, ``deconv: internal error: ...``, exit 3 (set
  ``DECONV_DEBUG=1`` to get the traceback instead).

Every command runs inside :func:`deconv_cli.fs.protect_inputs`: no file the command
read is ever written over, whichever option names it, and no file is written twice.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
import threading

import click

from deconv_cli import __version__
from deconv_cli.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandFailed,
    DeconvError,
    signal_exit_code,
    spoken,
)

DEBUG_ENV = "DECONV_DEBUG"


class OneLineError(click.ClickException):
    """A click error shown as ``deconv: error: MESSAGE`` on one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"deconv: error: {self.format_message()}", err=True)


def _one_line(err: click.ClickException) -> OneLineError:
    """Click's usage errors (usage text, a hint, the message) as one line, with the help hint."""
    message = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    if isinstance(err, click.UsageError) and ctx is not None:
        words = ctx.command_path.split()[1:]
        message += f" (see `{' '.join(['deconv', *words, '--help'])}`)"
    return OneLineError(message, err.exit_code)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


# Signals that end a command as Ctrl-C does, with the words printed and exit 128 + signal.
_ENDING_SIGNALS = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up (the terminal closed)"}


@contextlib.contextmanager
def _signals_clean_up():
    """SIGTERM and SIGHUP raise SystemExit(128 + signal), so the file being written is
    removed, as on Ctrl-C (a closed terminal sends SIGHUP)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal someone else owns (a test runner, a scheduler, nohup's SIG_IGN) is left alone.
    owned = [s for s in _ENDING_SIGNALS if signal.getsignal(s) is signal.SIG_DFL]

    def terminate(signum, frame):
        signal.signal(signum, signal.SIG_DFL)  # a second one kills at once
        click.echo(f"deconv: {_ENDING_SIGNALS[signum]}", err=True)
        raise SystemExit(signal_exit_code(signum))

    for signum in owned:
        signal.signal(signum, terminate)
    try:
        yield
    finally:
        for signum in owned:
            signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def _one_line_warnings():
    """Python warnings as ``deconv: warning: MESSAGE (Category, file.py:line)``, once each.

    The default format spends a second line on the source line that warned, which
    means nothing to a user and breaks one-line-per-event logs.
    """
    import warnings

    seen: set[tuple[str, str]] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        where = f"{category.__name__}, {os.path.basename(filename)}:{lineno}"
        if (text, where) not in seen:
            seen.add((text, where))
            click.echo(f"deconv: warning: {text} ({where})", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


class DeconvGroup(click.Group):
    """A click group that turns every error into one line on stderr and its exit code."""

    def main(self, *args, **kwargs):
        from deconv_cli.cli.streams import guarded

        with guarded():
            return super().main(*args, **kwargs)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except OneLineError:
            raise
        except click.ClickException as err:
            raise _one_line(err) from None

    def invoke(self, ctx: click.Context):
        try:
            with _signals_clean_up(), _one_line_warnings():
                return super().invoke(ctx)
        except DeconvError as err:
            click.echo(f"deconv: error: {shown(err)}", err=True)
            ctx.exit(err.exit_code)
        except CommandFailed as end:  # the command reported already
            ctx.exit(end.exit_code)
        except OneLineError:
            raise
        except click.ClickException as err:
            raise _one_line(err) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except MemoryError:
            click.echo(
                "deconv: error: not enough memory for this job (try a smaller image, "
                "kernel or geometry)",
                err=True,
            )
            ctx.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("deconv: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as err:
            if _debug():
                raise
            _os_error(ctx, err)
        except Exception as err:
            if _debug():
                raise
            _internal(ctx, err)


def shown(err: DeconvError) -> str:
    """The error as the command line says it: the parameters it names as their flags."""
    return said(f"{flag(err.parameter)}: {err.detail}" if err.parameter else err.detail)


def said(text: str) -> str:
    """A library message (:func:`deconv_cli.errors.mention`) with its parameters as flags."""
    return spoken(
        text, lambda name, value: flag(name) if value in (None, "True") else f"{flag(name)} {value}"
    )


def flag(parameter: str) -> str:
    """The flag that sets a library ``parameter`` (``noise_sigma``: ``--noise-sigma``), or
    the name itself when no command has one: the one place parameters become flags."""
    return _flags().get(parameter, parameter)


@functools.cache
def _flags() -> dict[str, str]:
    """Every command's options and ``deconv``'s own (``--max-pixels``): the parameter
    (click's name for it) -> its long flag."""
    found: dict[str, str] = {}
    for command in (main, *_leaves(main)):
        for param in command.params:
            longs = [o for o in param.opts if o.startswith("--")]
            if isinstance(param, click.Option) and longs:
                found.setdefault(param.name, longs[0])
    return found


def _os_error(ctx: click.Context, err: OSError) -> None:
    """The machine said no: one line naming the path and the errno in words, exit 2; a
    closed pipe on standard output exits 141 silently (see :mod:`deconv_cli.cli.streams`)."""
    from deconv_cli import fs
    from deconv_cli.cli.streams import broken_pipe

    if err.errno == errno.EPIPE:
        ctx.exit(broken_pipe())
    if err.errno is None:  # not the operating system's answer: a library's own OSError
        _internal(ctx, err)
    click.echo(f"deconv: error: {fs.message(err)}", err=True)
    ctx.exit(EXIT_USAGE)


def _internal(ctx: click.Context, err: Exception) -> None:
    """A bug: one line naming the exception, and how to get the traceback."""
    text = " ".join(str(err).split())
    if len(text) > 300:
        text = text[:297] + "..."
    click.echo(
        f"deconv: internal error: {type(err).__name__}: {text} (a bug in deconv; please "
        f"report it with the command line; {DEBUG_ENV}=1 shows the traceback)",
        err=True,
    )
    ctx.exit(EXIT_INTERNAL)


def _max_pixels(ctx: click.Context, param, value):
    if value is not None:
        from deconv_cli import config

        ctx.with_resource(config.use(config.Config(max_pixels=value)))  # the flag wins
    return value


@click.group(cls=DeconvGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="deconv")
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    expose_value=False,
    is_eager=True,
    callback=_max_pixels,
    help="Largest image (height × width) any command reads; default 268435456 (2**28) "
    "or $DECONV_MAX_PIXELS. Checked on the file's header, before decoding, against "
    "decompression bombs.",
)
def main() -> None:
    """Blur and deblur images, and find out when a blur can be undone.

    \b
    convolve   blur with a kernel (any boundary, stride, dilation, padding)
    transpose  apply the exact adjoint: restores the shape, not the values
    invert     true deconvolution: recover the values where the maths allows
    compare    reconstruction error metrics, with thresholds for CI
    analyze    is this operator invertible, and how well?
    roundtrip  blur, transpose and invert one image, in one table
    kernels    list kernel families, or show one kernel

    \b
    Exit codes: 0 success; 1 a check failed (compare thresholds, a failed batch
    item); 2 bad usage or bad input, a full disk or another refusal of the system
    (one line on stderr); 3 internal error (a bug); 130 Ctrl-C, 143 SIGTERM, 129
    SIGHUP; 141 standard output closed by its reader (`deconv ... -o - | head`).
    """


def _protected(callback):
    """Run a command inside :func:`deconv_cli.fs.protect_inputs` (after parsing, so that
    ``--help`` stays fast: the import brings numpy)."""

    @functools.wraps(callback)
    def run(*args, **kwargs):
        from deconv_cli.fs import protect_inputs

        with protect_inputs():
            return callback(*args, **kwargs)

    return run


def _leaves(command: click.Command):
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _leaves(sub)
    else:
        yield command


def _register() -> None:
    from deconv_cli.cli import analyze, blind, compare, invert, kernels, process

    for module in (process, invert, blind, compare, analyze, kernels):
        for command in module.COMMANDS:
            for leaf in _leaves(command):
                if leaf.callback is not None:
                    leaf.callback = _protected(leaf.callback)
            main.add_command(command)


_register()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
