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
library callers can catch them generically); only the CLI turns them into exit
codes, through :data:`EXIT_USAGE`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3  # an unexpected exception: a bug, reported on one line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool killed by SIGPIPE


class DeconvError(ValueError):
    """Bad usage or bad input; the message is one line naming the problem."""

    exit_code = EXIT_USAGE


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


def choice_error(cls: type[DeconvError], name: str, value: object, allowed) -> DeconvError:
    """Build the standard "bad choice" error: names the argument, value and allowed set."""
    allowed = ", ".join(f"`{a}`" for a in allowed)
    return cls(f"{name}: `{value}` is not one of {allowed}")
