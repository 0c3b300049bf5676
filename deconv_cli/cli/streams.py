"""The standard streams of a command: what happens when they fail or cannot encode.

- **Standard output**: an ``OSError`` writing it is named "standard output", so the
  error line says which file failed (``deconv ... -o - > /dev/full``: exit 2). A
  closed pipe (``deconv ... -o - | head -c 10``) ends the command silently with exit
  141, 128 + SIGPIPE: what a shell reports for ``yes | head`` or ``cat big | head``,
  the tools killed by SIGPIPE, so ``set -o pipefail`` scripts treat deconv as they
  treat them. Nothing else is written to standard output afterwards.
- **Standard error** is best effort: once a write to it fails (a full disk, a closed
  pipe or terminal), the rest of the messages are discarded and the exit code stays
  the one the work earned (a successful run still exits 0).
- **Encodings**: on a stream whose encoding cannot hold a character deconv prints
  (``PYTHONIOENCODING=ascii``: ``σ``, ``×``, ``ᵀ``...), the character is written as
  ASCII (``sigma``, ``x``, ``^T``; ``?`` for the others) instead of failing.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import sys

from deconv_cli import fs
from deconv_cli.errors import EXIT_BROKEN_PIPE, EXIT_USAGE

FALLBACK = "deconv-ascii"  # the codec error handler
_ASCII = {
    "×": "x",
    "·": "*",
    "σ": "sigma",
    "λ": "lambda",
    "μ": "mu",
    "ᵀ": "^T",
    "²": "^2",
    "≤": "<=",
    "≥": ">=",
    "≈": "~",
    "→": "->",
    "←": "<-",
    "—": "-",
    "–": "-",
    "…": "...",
    "‖": "||",
    "∞": "inf",
    "±": "+/-",
    "√": "sqrt",
    "“": '"',
    "”": '"',
    "‘": "'",
    "’": "'",
}


def _fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = "".join(_ASCII.get(c, "?") for c in err.object[err.start : err.end])
    return text, err.end


codecs.register_error(FALLBACK, _fallback)


def _discard(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: later writes and the flush at exit
    succeed, and go nowhere."""
    with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()  # what the failed write left in the buffer, into /dev/null


class _Proxy:
    """A text stream that handles its own write errors; everything else is the stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def __iter__(self):  # pragma: no cover - output streams are not iterated
        return iter(self._stream)


class _NamedStdout(_Proxy):
    """Standard output whose ``OSError`` s name it (see :func:`deconv_cli.fs.naming`)."""

    def write(self, text):
        with fs.naming(fs.STDOUT):
            return self._stream.write(text)

    def flush(self) -> None:
        with fs.naming(fs.STDOUT):
            self._stream.flush()


class _BestEffortStderr(_Proxy):
    """Standard error that never fails: after a failed write, the rest is discarded."""

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError:
            _discard(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            _discard(self._stream)


def broken_pipe() -> int:
    """After EPIPE on standard output: discard what is left of it; the exit code, 141."""
    _discard(sys.__stdout__ if sys.stdout is None else getattr(sys.stdout, "_stream", sys.stdout))
    return EXIT_BROKEN_PIPE


@contextlib.contextmanager
def _ascii_fallback(stream):
    """Write characters ``stream``'s encoding cannot hold as ASCII, while active."""
    reconfigure = getattr(stream, "reconfigure", None)
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if reconfigure is None or encoding.startswith("utf") or stream.errors != "strict":
        yield
        return
    saved = stream.errors
    reconfigure(errors=FALLBACK)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            reconfigure(errors=saved)


@contextlib.contextmanager
def guarded():
    """Run a command with its standard streams guarded as the module describes.

    Standard output is flushed before the end: a failure to flush is the command's
    failure (exit 2; 141 for a closed pipe), not an error ignored at exit.
    """
    out, err = sys.stdout, sys.stderr
    with _ascii_fallback(out), _ascii_fallback(err):
        # A stream closed before the start (`>&-`) is None: click writes nothing to it.
        sys.stdout = None if out is None else _NamedStdout(out)
        sys.stderr = None if err is None else _BestEffortStderr(err)
        try:
            yield
        finally:
            code = _flush_stdout()
            sys.stdout, sys.stderr = out, err
            if code is not None:
                raise SystemExit(code)  # the output is lost: that is the command's outcome


def _flush_stdout() -> int | None:
    """Flush standard output; on failure, the exit code (after one line on stderr)."""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as err:
        if err.errno == errno.EPIPE:
            return broken_pipe()
        _discard(sys.stdout._stream)
        if sys.stderr is not None:
            sys.stderr.write(f"deconv: error: {fs.message(err)}\n")
            sys.stderr.flush()
        return EXIT_USAGE
    return None
