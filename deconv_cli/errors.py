"""Errors and exit codes: the one place the exit-code policy is defined.

Exit codes
----------
0  success
1  a check failed (a ``compare`` threshold, a failed item in a batch)
2  bad usage or bad input: one clear line on stderr, no traceback
3  internal error (a bug): one line naming the exception; ``DECONV_DEBUG=1`` shows
   the traceback
129  hung up (SIGHUP: the terminal closed); as SIGTERM
130  interrupted (Ctrl-C); a batch starts no more items, finishes the running ones and
     prints what it did first
141  standard output is a closed pipe (``deconv ... -o - | head``): silent, as a
     tool killed by SIGPIPE
143  terminated (SIGTERM); the file being written is removed first; a batch as for 130

An ``OSError`` (a full disk, a name too long, a read-only directory) is bad input
from the machine: one line naming the path and the errno in words, exit 2
(:mod:`deconv_cli.fs`).

The core raises :class:`DeconvError` subclasses (they are ``ValueError`` s, so
library callers can catch them generically); commands that report a failed outcome
raise :class:`CommandFailed`. Only the CLI turns them into exit codes
(:class:`deconv_cli.cli.DeconvGroup`). The other exits are the signal handlers'
``SystemExit(signal_exit_code(signum))`` (a signal must unwind every handler, in the
main process as in a batch's workers) and the closed-pipe exit at the last flush of
standard output (:mod:`deconv_cli.cli.streams`), both with the codes defined here.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3  # an unexpected exception: a bug, reported on one line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool killed by SIGPIPE


class DeconvError(ValueError):
    """Bad usage or bad input; the message is one line naming the problem.

    ``parameter`` names the argument at fault (a keyword of the library: ``iterations``,
    ``padding``); the message then reads ``parameter: detail``, and the command line
    shows the parameter as its flag (``--iterations: detail``).
    """

    exit_code = EXIT_USAGE

    def __init__(self, detail: str, *, parameter: str | None = None) -> None:
        super().__init__(f"{parameter}: {detail}" if parameter else detail)
        self.detail = detail
        self.parameter = parameter

    def __reduce__(self):  # keeps the parameter across processes (batch workers)
        return _rebuild, (type(self), self.detail, self.parameter)


def _rebuild(cls: type[DeconvError], detail: str, parameter: str | None) -> DeconvError:
    return cls(detail, parameter=parameter)


class InputError(DeconvError):
    """An input file is missing, unreadable or holds unusable data."""


class OutputError(DeconvError):
    """An output cannot be written (exists, is an input, unwritable)."""


class KernelError(DeconvError):
    """A kernel spec or kernel file is invalid."""


class GeometryError(DeconvError):
    """Geometry flags are invalid or inconsistent with the image or kernel."""


class NotInvertibleError(DeconvError):
    """The operator has a null space, so an exact inverse does not exist."""


def signal_exit_code(signum: int) -> int:
    """The exit code of a command ended by signal ``signum``: ``128 + signum``, as shells
    report it (:data:`EXIT_INTERRUPTED` for SIGINT, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + int(signum)


class CommandFailed(Exception):
    """The command ran and reported what it did, and its outcome is a failure: a
    ``compare`` threshold or a batch item failed (:data:`EXIT_CHECK_FAILED`), or a batch
    was stopped by a signal (:func:`signal_exit_code`). Nothing more is printed; the
    command line exits with :attr:`exit_code`."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(exit_code)
        self.exit_code = exit_code


def choice_error(cls: type[DeconvError], name: str, value: object, allowed) -> DeconvError:
    """Build the standard "bad choice" error: names the parameter, value and allowed set."""
    allowed = ", ".join(f"`{a}`" for a in allowed)
    return cls(f"`{value}` is not one of {allowed}", parameter=name)
