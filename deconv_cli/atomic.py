"""Atomic writes: a temporary file beside the output, synced, then renamed over it.

A reader never sees a half-written output, and a failed or interrupted write leaves
the previous file (or none) in place. Temporary files are named
``.deconv-PID-HOST-XXXXXXXX.EXT`` beside the output. A process killed before its
rename (SIGKILL, power loss) leaves one behind; the next write into that directory
removes those of processes that no longer exist on this host (and only those: the
name must match, the file be a regular file owned by the same user, the host be this
one and the process gone).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from deconv_cli import fs
from deconv_cli.errors import DeconvError, OutputError

PathLike = str | os.PathLike


def _new_file_mode(path: Path) -> int:
    """Permissions for the output: the replaced file's, else the umask's default."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


# Temporary files: ".deconv-PID-HOST-XXXXXXXX.EXT" (XXXXXXXX random, as tempfile.mkstemp).
TEMP_PREFIX = ".deconv-"
_TEMP_NAME = re.compile(r"\.deconv-(?P<pid>[0-9]+)-(?P<host>[A-Za-z0-9._-]+)-[a-z0-9_]{8}(\.\w+)?")
_cleaned: set[str] = set()
_partial: set[Path] = set()  # the temporary files this process is writing now


def _host() -> str:
    """This host's name as it appears in temporary file names."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "localhost"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (it may be another user's)."""
    if pid <= 0:
        return True  # not a process id: never treat the file as stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def stale_temp_files(directory: PathLike) -> list[Path]:
    """Temporary files in ``directory`` left by ``deconv`` processes that no longer exist.

    Only regular files named ``.deconv-PID-HOST-XXXXXXXX[.EXT]``, owned by this
    user, whose HOST is this host and whose process PID is gone, other than this
    process's own.
    """
    directory = Path(directory)
    host, me, uid = _host(), os.getpid(), os.geteuid() if hasattr(os, "geteuid") else None
    stale = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid == me or _pid_alive(pid):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
            continue
        stale.append(directory / entry.name)
    return sorted(stale)


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Remove :func:`stale_temp_files` from ``directory``; return those removed."""
    removed = []
    for path in stale_temp_files(directory):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
    return removed


def _clean_once(directory: Path) -> None:
    """Remove stale temporary files the first time this process writes in ``directory``."""
    key = os.path.realpath(directory)
    if key in _cleaned:
        return
    _cleaned.add(key)
    remove_stale_temp_files(directory)


_FULL = (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC))


def _out_of_space(err: BaseException) -> bool:
    """ENOSPC, EFBIG, EDQUOT, or numpy's report of a short write (the same, seen late)."""
    if not isinstance(err, OSError):
        return False
    return err.errno in _FULL or bool(re.search(r"\d+ requested and \d+ written", str(err)))


_NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # as tempfile.mkstemp's


def _temporary_name(directory: Path, suffix: str) -> Path:
    """``.deconv-PID-HOST-XXXXXXXX.EXT`` in ``directory``: only this process uses its PID."""
    random = "".join(secrets.choice(_NAME_CHARACTERS) for _ in range(8))
    return directory / f"{TEMP_PREFIX}{os.getpid()}-{_host()}-{random}{suffix}"


def remove_partial_files() -> None:
    """Remove the temporary files this process is writing: the last act of a process
    ending at once (``os._exit``), which runs no ``except`` clause."""
    for tmp in list(_partial):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _create(tmp: Path) -> bool:
    """Create ``tmp`` (mode 0600), or return False when the name is taken."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def atomic_write(
    path: PathLike,
    write: Callable[[Path], None],
    *,
    overwrite: bool,
    inputs: Sequence[PathLike] = (),
) -> None:
    """Write a file atomically: to a temporary file beside it, fsync, then rename.

    Parameters
    ----------
    path : str or PathLike
        The final file.
    write : callable
        ``write(tmp_path)`` writes the whole file to ``tmp_path`` (same extension).
    overwrite : bool
        Replace ``path`` if it exists (never when it is one of ``inputs``).
    inputs : sequence of paths, optional
        Files that must never be replaced.

    Raises
    ------
    OutputError
        ``path`` is an input, exists without ``overwrite``, is a directory, its
        directory is missing or unwritable, or ``write`` failed (a full disk
        included). The temporary file is removed on every failure.

    Notes
    -----
    The temporary file is ``.deconv-PID-HOST-XXXXXXXX`` plus the output's extension.
    Before the first write into a directory, temporary files there of processes
    that no longer exist are removed (:func:`remove_stale_temp_files`).
    """
    path = Path(path)
    fs.check_target(path, overwrite=overwrite, inputs=inputs)
    directory = path.parent
    _clean_once(directory)
    # The name is known before the file exists, so that a signal landing at any moment
    # (just after the creation included) finds the cleanup below in place.
    tmp, created = _temporary_name(directory, path.suffix), False
    _partial.add(tmp)
    try:
        while not _create(tmp):
            _partial.discard(tmp)
            tmp = _temporary_name(directory, path.suffix)
            _partial.add(tmp)
        created = True
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _new_file_mode(path))
        fs.check_guard(path)
        os.replace(tmp, path)
        _partial.discard(tmp)
    except BaseException as err:
        _partial.discard(tmp)
        with contextlib.suppress(OSError):
            tmp.unlink()  # ours even if `created` was not set yet: the name holds our pid
        if isinstance(err, (DeconvError, MemoryError)) or not isinstance(err, Exception):
            raise
        if not created and isinstance(err, OSError):
            raise OutputError(f"`{path}`: cannot write in `{directory}`: {fs.reason(err)}") from err
        reason = fs.reason(err) if isinstance(err, OSError) and err.errno else fs.describe(err)
        if any(_out_of_space(e) for e in fs.causes(err)):
            if not (isinstance(err, OSError) and err.errno):  # numpy's short write
                reason = "a write was cut short"
            reason += " (the disk is full or a file size limit was reached; nothing was written)"
        raise OutputError(f"`{path}` cannot be written: {reason}") from err
    fs.note_written(path)
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
