"""Operating-system faults as one-line messages, and the checks made before the work.

An :class:`OSError` is the machine's answer, not a bug in deconv: a name too long,
a full disk, a read-only directory, a closed pipe. This module owns how such an
answer is told to the user: :func:`message` names the path as the user gave it
(or "standard input"/"standard output" for the streams and the temporary files
that carry them) and says the ``errno`` in words; the command line turns any
``OSError`` that reaches it into that one line and exit 2 (a closed pipe is
exit 141, see :mod:`deconv_cli.errors`).

The checks (:func:`probe`, :func:`check_directory`, :func:`check_writable_file`) are
made before any computation, so that a place that cannot take the output is
refused before the work, not after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from deconv_cli.errors import DeconvError, OutputError


class Stream(str):
    """The name of a standard stream, shown as words rather than as a quoted path."""


STDIN = Stream("standard input")
STDOUT = Stream("standard output")

# errno -> words, where the C library's text says less than the user needs.
_WORDS = {
    errno.ENAMETOOLONG: "file name too long (a name is over 255 bytes, or the path too long)",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a parent is not a directory",
    errno.ELOOP: "too many levels of symbolic links (a symbolic link loop)",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.EIO: "input/output error",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.EPIPE: "broken pipe (the reader has gone)",
    errno.EXDEV: "on another file system",
    errno.EBUSY: "device or resource busy",
    errno.ETXTBSY: "text file busy",
}
SHOWN_MAX = 120  # longer paths are shown with their middle elided


def reason(err: OSError) -> str:
    """``err``'s errno in words (the C library's text for the rare ones)."""
    words = _WORDS.get(err.errno)
    if words is None:
        words = (err.strerror or str(err) or type(err).__name__).lower()
    return words


def shown(path: str | os.PathLike) -> str:
    """``path`` as the user gave it, in backquotes; a very long one with its middle elided.

    A :class:`Stream` name is shown as words.
    """
    if isinstance(path, Stream):
        return str(path)
    text = os.fsdecode(path)
    if len(text) > SHOWN_MAX:
        return f"`{text[:40]}…{text[-40:]}` ({len(os.fsencode(path))} bytes)"
    return f"`{text}`"


def message(err: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for ``err``: the path (``path``, else the error's own) and the reason."""
    path = path if path is not None else err.filename
    if path is None:
        return reason(err)
    return f"{shown(path)}: {reason(err)}"


def error(
    err: OSError, path: str | os.PathLike | None = None, cls: type[DeconvError] = OutputError
) -> DeconvError:
    """``err`` as a :class:`~deconv_cli.errors.DeconvError` of class ``cls``: :func:`message`."""
    return cls(message(err, path))


@contextlib.contextmanager
def naming(path: str | os.PathLike):
    """An ``OSError`` raised inside without a file name is about ``path`` (a stream, a file
    opened earlier): it is given that name and raised on."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = path
        raise


def probe(
    path: str | os.PathLike,
    cls: type[DeconvError] = OutputError,
    what: str = "",
    *,
    follow: bool = False,
) -> os.stat_result | None:
    """``lstat(path)`` (``stat`` with ``follow``), or None when nothing is there; any other
    answer is an error.

    Raises
    ------
    DeconvError
        Of class ``cls``, its message starting with ``what`` (an option's name):
        a name too long, a parent that is a file, a symbolic link loop among the
        parents (or, with ``follow``, at ``path``), a parent that cannot be searched.
    """
    prefix = f"{what}: " if what else ""
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError as err:
        blocking = _blocking_file(Path(path))
        if blocking is not None:
            raise cls(
                f"{prefix}{shown(path)}: {shown(blocking)} is a file, not a directory"
            ) from err
        raise cls(prefix + message(err, path)) from err
    except OSError as err:
        raise cls(prefix + message(err, path)) from err


def _blocking_file(path: Path) -> Path | None:
    """The first of ``path``'s parents that exists and is not a directory."""
    for parent in reversed(path.parents):
        with contextlib.suppress(OSError):
            if not stat.S_ISDIR(os.stat(parent).st_mode):
                return parent
    return None


def check_directory(directory: str | os.PathLike, *, create: bool = False, what: str = "") -> None:
    """Refuse, before the work, a directory that cannot receive new files.

    Parameters
    ----------
    directory : str or PathLike
        The directory the output goes into.
    create : bool, optional
        The directory (and its missing parents) will be created: it may be missing,
        then its nearest existing parent is checked instead.
    what : str, optional
        The option it came from (``--history``), to start the message with.

    Raises
    ------
    OutputError
        The directory is missing (without ``create``), a file, behind a name too long
        or a symbolic link loop, not writable (permissions, a read-only file
        system) or on a full file system.
    """
    prefix = f"{what}: " if what else ""
    directory = Path(directory)
    existing = directory
    while True:
        try:
            info = os.stat(existing)
            break
        except FileNotFoundError:
            if not create and existing == directory:
                raise OutputError(f"{prefix}directory {shown(directory)} does not exist") from None
            if existing.parent == existing:
                raise
            existing = existing.parent
        except OSError as err:
            blocked = err.errno == errno.ENOTDIR and _blocking_file(existing)
            if blocked:
                raise OutputError(f"{prefix}{shown(blocked)} is a file, not a directory") from err
            raise OutputError(prefix + message(err, directory)) from err
    if not stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{prefix}{shown(existing)} is a file, not a directory")
    if create and existing != directory:
        _check_name_lengths(directory, existing, prefix)
    if not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(existing) else errno.EACCES
        raise OutputError(prefix + message(OSError(code, os.strerror(code)), existing))
    if _full(existing):
        code = errno.ENOSPC
        raise OutputError(prefix + message(OSError(code, os.strerror(code)), existing))


def make_directory(directory: str | os.PathLike, *, what: str = "") -> None:
    """Create ``directory`` and its missing parents; a failure is one line saying why.

    Raises
    ------
    OutputError
        As :func:`check_directory`, or the reason ``mkdir`` gave.
    """
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        check_directory(directory, create=True, what=what)  # says why in the user's terms
        raise OutputError((f"{what}: " if what else "") + message(err, directory)) from err


def _check_name_lengths(directory: Path, existing: Path, prefix: str) -> None:
    """The names of the directories to create must each fit the file system's limit."""
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return
    for part in directory.relative_to(existing).parts:
        if len(os.fsencode(part)) > limit:
            code = errno.ENAMETOOLONG
            raise OutputError(prefix + message(OSError(code, os.strerror(code)), directory))


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _full(directory: Path) -> bool:
    """No block left for this user (root may use the blocks reserved for it)."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return False
    free = info.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else info.f_bavail
    return info.f_blocks > 0 and free == 0


def check_writable_file(
    path: str | os.PathLike, *, overwrite: bool, what: str = "", create: bool = False
) -> None:
    """Refuse, before the work, an output file that cannot be created or replaced.

    ``create``: its directory will be created if missing (see :func:`check_directory`).

    Raises
    ------
    OutputError
        As :func:`check_directory` for its directory; also when ``path`` is a directory,
        exists without ``overwrite``, or is not a regular file (a pipe, a device, a
        socket: replacing one with a regular file would break what uses it).
    """
    prefix = f"{what}: " if what else ""
    path = Path(path)
    info = probe(path, what=what)
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            info = _follow(path, prefix)
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise OutputError(f"{prefix}{shown(path)} is a directory; give a file name")
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise OutputError(
                f"{prefix}{shown(path)} is not a regular file (a pipe, device or socket); "
                "deconv writes files only (choose another output)"
            )
        if not overwrite:
            raise OutputError(f"{prefix}{shown(path)} exists; use --overwrite")
    check_directory(path.parent, create=create, what=what)


def _follow(path: Path, prefix: str) -> os.stat_result | None:
    """``stat`` through a symbolic link; None for a dangling one (it is replaced)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OutputError(prefix + message(err, path)) from err
