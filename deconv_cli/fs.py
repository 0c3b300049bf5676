"""Operating-system faults as one-line messages, and the checks made before the work.

An :class:`OSError` is the machine's answer, not a bug in deconv: a name too long,
a full disk, a read-only directory, a closed pipe. This module owns how such an
answer is told to the user: :func:`message` names the path as the user gave it
(or "standard input"/"standard output" for the streams and the temporary files
that carry them) and says the ``errno`` in words; the command line turns any
``OSError`` that reaches it into that one line and exit 2 (a closed pipe is
exit 141, see :mod:`deconv_cli.errors`).

The checks (:func:`probe`, :func:`check_directory`, :func:`check_writable_file`,
:func:`check_target`) are made before any computation, so that a place that cannot
take the output is refused before the work, not after it. Inside
:func:`protect_inputs` (every command runs in one) no file the command has read
(:func:`read_head` records it) is written over, and no file is written twice.

A library's own exception (a decoder's, an encoder's) is told in one line too:
:func:`describe` finds the useful cause among :func:`causes`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from deconv_cli.errors import DeconvError, InputError, OutputError, mention


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
        Of class ``cls``, naming the parameter ``what`` (the argument the path came from):
        a name too long, a parent that is a file, a symbolic link loop among the
        parents (or, with ``follow``, at ``path``), a parent that cannot be searched.
    """
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError as err:
        blocking = _blocking_file(Path(path))
        if blocking is not None:
            raise cls(
                f"{shown(path)}: {shown(blocking)} is a file, not a directory",
                parameter=what or None,
            ) from err
        raise cls(message(err, path), parameter=what or None) from err
    except OSError as err:
        raise cls(message(err, path), parameter=what or None) from err


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
        The parameter it came from (``history``), which the message names.

    Raises
    ------
    OutputError
        The directory is missing (without ``create``), a file, behind a name too long
        or a symbolic link loop, not writable (permissions, a read-only file
        system) or on a full file system.
    """
    directory = Path(directory)
    existing = directory
    while True:
        try:
            info = os.stat(existing)
            break
        except FileNotFoundError:
            if not create and existing == directory:
                raise _error(what, f"directory {shown(directory)} does not exist") from None
            if existing.parent == existing:
                raise
            existing = existing.parent
        except OSError as err:
            blocked = err.errno == errno.ENOTDIR and _blocking_file(existing)
            if blocked:
                raise _error(what, f"{shown(blocked)} is a file, not a directory") from err
            raise _error(what, message(err, directory)) from err
    if not stat.S_ISDIR(info.st_mode):
        raise _error(what, f"{shown(existing)} is a file, not a directory")
    if create and existing != directory:
        _check_name_lengths(directory, existing, what)
    if not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only(existing) else errno.EACCES
        raise _error(what, message(OSError(code, os.strerror(code)), existing))
    if _full(existing):
        code = errno.ENOSPC
        raise _error(what, message(OSError(code, os.strerror(code)), existing))


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
        raise _error(what, message(err, directory)) from err


def _check_name_lengths(directory: Path, existing: Path, what: str) -> None:
    """The names of the directories to create must each fit the file system's limit."""
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return
    for part in directory.relative_to(existing).parts:
        if len(os.fsencode(part)) > limit:
            code = errno.ENAMETOOLONG
            raise _error(what, message(OSError(code, os.strerror(code)), directory))


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
    path = Path(path)
    info = probe(path, what=what)
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            info = _follow(path, what)
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise _error(what, f"{shown(path)} is a directory; give a file name")
        if info is not None and not stat.S_ISREG(info.st_mode):
            raise _error(
                what,
                f"{shown(path)} is not a regular file (a pipe, device or socket); "
                "deconv writes files only (choose another output)",
            )
        if not overwrite:
            raise _error(what, f"{shown(path)} exists; use {mention('overwrite', True)}")
    check_directory(path.parent, create=create, what=what)


def _follow(path: Path, what: str) -> os.stat_result | None:
    """``stat`` through a symbolic link; None for a dangling one (it is replaced)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _error(what, message(err, path)) from err


def _error(what: str, detail: str) -> OutputError:
    """An :class:`OutputError` naming the parameter ``what`` (none when empty)."""
    return OutputError(detail, parameter=what or None)


# --------------------------------------------------------------------------- a command's files


class _Guard:
    """Files read and written while :func:`protect_inputs` is active."""

    def __init__(self) -> None:
        self.read: dict[tuple[int, int], Path] = {}
        self.written: dict[tuple[int, int], Path] = {}


_guard: _Guard | None = None


@contextlib.contextmanager
def protect_inputs():
    """While active, no file this process has read is replaced, and none is written twice.

    Every ``deconv`` command runs inside one, so an output path that happens to
    name an input (an image, a kernel file, ``--reference``), or two outputs that
    name one file, are refused whatever option they came from. Files are known by
    device and inode, so other spellings and links of one file are caught too.
    Nested use keeps the outer record.
    """
    global _guard
    if _guard is not None:
        yield
        return
    _guard = _Guard()
    try:
        yield
    finally:
        _guard = None


def note_input(path: str | os.PathLike) -> None:
    """Record ``path`` as an input of the running command (see :func:`protect_inputs`)."""
    if _guard is None:
        return
    with contextlib.suppress(OSError):
        info = os.stat(path)
        _guard.read.setdefault((info.st_dev, info.st_ino), Path(path))


def check_guard(path: Path) -> None:
    if _guard is None:
        return
    try:
        info = os.stat(path)
    except OSError:
        return
    key = (info.st_dev, info.st_ino)
    if key in _guard.read:
        raise OutputError(
            f"`{path}` is an input of this command{_alias(path, _guard.read[key])}; "
            "refusing to write over it (choose another output)"
        )
    if key in _guard.written:
        raise OutputError(
            f"`{path}` was already written by this command{_alias(path, _guard.written[key])}; "
            "two outputs name one file (choose distinct paths)"
        )


def _alias(path: Path, other: Path) -> str:
    return "" if str(path) == str(other) else f" (as `{other}`)"


def note_written(path: Path) -> None:
    if _guard is None:
        return
    with contextlib.suppress(OSError):
        info = os.stat(path)
        _guard.written[(info.st_dev, info.st_ino)] = path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (samefile when both exist, else resolved paths)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _check_not_input(path: Path, inputs: Sequence[str | os.PathLike]) -> None:
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(
                f"`{path}` is an input; refusing to write over it (choose another output)"
            )


def check_target(
    path: str | os.PathLike, *, overwrite: bool, inputs: Sequence[str | os.PathLike] = ()
) -> None:
    """Refuse an output path before any work (the rules of :func:`deconv_cli.atomic.atomic_write`).

    Raises
    ------
    OutputError
        ``path`` is an input (given, or read in :func:`protect_inputs`), a
        directory, a pipe or device, exists without ``overwrite``, or its
        directory is missing, unwritable or full (:func:`check_writable_file`).
    """
    _check_target(Path(path), overwrite, inputs)


def _check_target(path: Path, overwrite: bool, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse an input, a directory, an existing file (without overwrite), a pipe or device,
    a missing, unwritable or full directory."""
    probe(path)  # a name too long, a parent that is a file: said before the comparisons
    _check_not_input(path, inputs)
    check_guard(path)
    check_writable_file(path, overwrite=overwrite)


# --------------------------------------------------------------------------- reading


def read_head(path: Path) -> bytes:
    """The first 64 bytes of ``path``, turning every reason it cannot be read into one line.

    Pipes, devices and sockets are refused (readers open a file more than once); the
    file is recorded as an input of the running command (:func:`note_input`).

    Raises
    ------
    InputError
        Missing, a directory, not a regular file, unreadable, or empty.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # open() below says why
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise InputError(
            f"`{path}` is not a regular file (a pipe, device or socket); save it to a file first"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except FileNotFoundError as err:
        raise InputError(f"`{path}`: no such file") from err
    except IsADirectoryError as err:
        raise InputError(f"`{path}` is a directory, not an image file") from err
    except OSError as err:
        raise error(err, path, InputError) from err
    if path.is_dir():  # pragma: no cover - platforms where open() accepts directories
        raise InputError(f"`{path}` is a directory, not an image file")
    note_input(path)
    if not head:
        raise InputError(f"`{path}` is empty (0 bytes)")
    return head


# --------------------------------------------------------------------------- libraries' exceptions


def causes(err: BaseException) -> list[BaseException]:
    """``err`` and its causes, outermost first (imageio wraps the decoder's exception)."""
    chain = [err]
    while len(chain) < 20:
        last = chain[-1]
        nxt = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if nxt is None:
            break
        chain.append(nxt)
    return chain


_TRUNCATED = re.compile(
    r"truncated|failed to read \d+ bytes|ends? early|end of (file|stream)|stream too small",
    re.I,
)


def describe(err: BaseException) -> str:
    """A one-line reason from a library's exception (the innermost cause is the useful one)."""
    seen = causes(err)[-1]
    text = " ".join(str(seen).split()) or type(seen).__name__
    if type(seen).__name__ in ("UnidentifiedImageError", "TiffFileError", "InitializationError"):
        return "not a recognised image format, or corrupt"
    struct_error = type(seen).__name__ == "error" and type(seen).__module__ == "struct"
    if struct_error or isinstance(seen, EOFError):
        return "truncated (the file ends early)"
    if _TRUNCATED.search(text) and "truncated" not in text.lower():
        text = f"truncated ({text})"
    return text if len(text) <= 200 else text[:197] + "..."
