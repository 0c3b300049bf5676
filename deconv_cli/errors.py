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
``SystemExit(signal_exit_code(signum))`` in the main process (a signal must unwind
every handler), ``os._exit(signal_exit_code(signum))`` in a batch's workers once the
file being written is removed (:func:`deconv_cli.batch_run._end_worker`), and the
closed-pipe exit at the last flush of standard output (:mod:`deconv_cli.cli.streams`),
all with the codes defined here.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3  # an unexpected exception: a bug, reported on one line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool killed by SIGPIPE


_MENTION = "\x1f"  # brackets a parameter named inside a message (a unit separator)


def mention(parameter: str, value: object = None) -> str:
    """Name ``parameter`` (set to ``value``) inside a message, as its reader knows it.

    The library says `` `parameter` `` or `` `parameter=value` ``; the command line says
    the flag that sets it, ``--flag`` or ``--flag value`` (``value=True``: the bare
    flag). :func:`spoken` says the message one way or the other.
    """
    text = parameter if value is None else f"{parameter}={value}"
    return f"{_MENTION}{text}{_MENTION}"


def spoken(text: str, say=None) -> str:
    """``text`` with each :func:`mention` said by ``say(parameter, value)``.

    ``value`` is ``None`` when the mention has none (a string otherwise). By default
    a mention is said as the library says it: `` `parameter` `` or `` `parameter=value` ``.
    """
    parts = text.split(_MENTION)
    for i in range(1, len(parts), 2):
        name, eq, value = parts[i].partition("=")
        if say is None:
            parts[i] = f"`{parts[i]}`"
        else:
            parts[i] = say(name, value if eq else None)
    return "".join(parts)


class DeconvError(ValueError):
    """Bad usage or bad input; the message is one line naming the problem.

    ``parameter`` names the argument at fault (a keyword of the library: ``iterations``,
    ``padding``); the message then reads ``parameter: detail``, and the command line
    shows the parameter as its flag (``--iterations: detail``). Other parameters named
    in ``detail`` (a hint: "use `overwrite`") are written with :func:`mention`: the
    command line says them as flags too (``use --overwrite``). ``detail`` keeps the
    mentions marked; ``str(err)`` says them as the library does.
    """

    exit_code = EXIT_USAGE

    def __init__(self, detail: str, *, parameter: str | None = None) -> None:
        super().__init__(spoken(f"{parameter}: {detail}" if parameter else detail))
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
