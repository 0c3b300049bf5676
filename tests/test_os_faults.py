"""Operating-system faults: the machine says no, deconv says so in one line.

Every refused case exits 2 with one line ``deconv: error: ...`` naming the path as
given (or "standard input"/"standard output") and the errno in words, no traceback,
nothing half-written, no temporary file left, inputs unchanged; a closed pipe on
standard output exits 141 silently. Real limits are used where the machine allows
them (``/dev/full``, ``ulimit -f``, a 1 MB tmpfs, a read-only bind mount, closed
pipes); otherwise the operating system's answer is simulated by monkeypatching the
``os`` function that would give it. The last property injects random errnos at
random points of a write.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, note, settings
from hypothesis import strategies as st

from deconv_cli import fs
from deconv_cli.cli import main

LONG = "a" * 300  # a name component over NAME_MAX (255 bytes)
FUZZING = os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci"


def deconv(*args) -> list[str]:
    return [sys.executable, "-m", "deconv_cli", *map(str, args)]


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(deconv(*args), timeout=120, **kwargs)


def invoke(*args, env=None):
    """In-process, without DECONV_DEBUG: the errors as a user sees them."""
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_line_error(stderr: str | bytes, needle: str) -> str:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert text.startswith("deconv: error: ") and text.count("\n") == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    assert needle in text, text
    return text


def refused(result, needle: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == "", result.stdout
    return one_line_error(result.stderr, needle)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def ws(tmp_path) -> Path:
    """A small image, a 512×512 one (4 MB of float64), a plain file and a CSV kernel."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((24, 24)))
    np.save(tmp_path / "big.npy", np.random.default_rng(1).random((512, 512)))
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "k.csv").write_text("0,1,0\n1,1,1\n0,1,0\n")
    return tmp_path


@pytest.fixture
def inside(ws, monkeypatch):
    """Run in the workspace, so that paths are given relative, as a user types them."""
    monkeypatch.chdir(ws)
    return ws


# --------------------------------------------------------------------------- names too long

LONG_CASES = {
    "output": ["convolve", "x.npy", "-k", "box", "-o", f"{LONG}.npy"],
    "input": ["convolve", f"{LONG}.npy", "-k", "box", "-o", "y.npy"],
    "kernel": ["convolve", "x.npy", "-k", f"{LONG}.csv", "-o", "y.npy"],
    "output directory": ["convolve", "x.npy", "big.npy", "-k", "box", "-o", f"{LONG}/"],
    "--diff": ["compare", "x.npy", "x.npy", "--diff", f"{LONG}.png"],
    "--diff directory": ["compare", "x.npy", "x.npy", "--diff", f"{LONG}/"],
    "--save": ["kernels", "show", "box", "--save", f"{LONG}.npy"],
    "--out-dir": ["roundtrip", "x.npy", "-k", "box", "--out-dir", LONG],
    "--history": ["invert", "x.npy", "-k", "box", "-o", "y.npy", "--history", f"{LONG}.csv"],
}


@pytest.mark.parametrize("case", list(LONG_CASES))
def test_a_name_too_long_is_one_line_before_the_work(inside, case):
    before = listing(inside)
    message = refused(invoke(*LONG_CASES[case]), "file name too long")
    assert "a" * 40 + "…" in message  # the path as given, its middle elided
    assert listing(inside) == before


# --------------------------------------------------------------------------- full devices


def test_standard_output_on_a_full_device(inside):
    with open("/dev/full", "wb") as full:
        done = run(
            "convolve", "x.npy", "-k", "box", "-o", "-", "--format", "npy", "-q", stdout=full
        )
    assert done.returncode == 2
    one_line_error(done.stderr, "standard output: no space left on device")


def test_compare_json_on_a_full_device(inside):
    with open("/dev/full", "wb") as full:
        done = run("compare", "x.npy", "x.npy", "--format", "json", stdout=full)
    assert done.returncode == 2
    one_line_error(done.stderr, "standard output: no space left on device")


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_standard_input_spool_under_a_file_size_limit(inside):
    with open("big.npy", "rb") as stdin:
        done = run(
            "convolve", "-", "-k", "box", "-o", "y.npy", stdin=stdin,
            preexec_fn=_file_size_limit(64 * 1024),
        )  # fmt: skip
    assert done.returncode == 2
    one_line_error(done.stderr, "standard input: cannot keep a copy in the temporary directory")
    assert "file too large" in done.stderr.decode()
    assert not (inside / "y.npy").exists()


@pytest.fixture
def tmpfs(tmp_path) -> Path:
    """A 1 MB tmpfs, where the machine lets us mount one (root, in a container that allows it)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_standard_input_spool_on_a_full_tmpfs(inside, tmpfs):
    env = {**os.environ, "TMPDIR": str(tmpfs)}
    with open("big.npy", "rb") as stdin:
        done = run("convolve", "-", "-k", "box", "-o", "y.npy", stdin=stdin, env=env)
    assert done.returncode == 2
    one_line_error(done.stderr, "no space left on device")
    assert listing(tmpfs) == []


def test_standard_output_spool_on_a_full_tmpfs(inside, tmpfs):
    env = {**os.environ, "TMPDIR": str(tmpfs)}
    argv = ["convolve", "big.npy", "-k", "box", "-o", "-", "--format", "npy", "-q"]
    done = run(*argv, env=env)
    assert done.returncode == 2 and done.stdout == b""
    message = one_line_error(done.stderr, "standard output cannot be written")
    assert f"temporary directory `{tmpfs}`; set TMPDIR" in message
    assert listing(tmpfs) == []


@pytest.mark.parametrize("command", ["convolve", "invert"])
def test_tiled_mapped_write_on_a_full_tmpfs_is_an_error_not_sigbus(inside, tmpfs, command):
    out = tmpfs / "y.npy"  # 2 MB of float64 into 1 MB
    done = run(command, "big.npy", "-k", "box", "--tile", "128", "-o", out, "-q")
    assert done.returncode == 2, (done.returncode, done.stderr)  # SIGBUS was -7 (135)
    one_line_error(done.stderr, "no space left on device")
    assert listing(tmpfs) == []


def test_mapped_write_reserves_its_space_first(ws, monkeypatch):
    """posix_fallocate's ENOSPC (simulated) stops the write before any tile is computed."""
    from deconv_cli import stackfile
    from deconv_cli.errors import OutputError

    tiles = []

    def fill(allocate):
        allocate((64, 64), np.dtype(np.float64))
        tiles.append("computed")

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(OutputError, match="no space left on device"):
        stackfile.write_stack(ws / "y.npy", fill, axes="YX")
    assert tiles == []
    assert not (ws / "y.npy").exists() and not list(ws.glob(".deconv-*"))


def test_a_full_directory_is_refused_before_the_work(inside, monkeypatch):
    """statvfs says no block is free (simulated): refused before reading the input."""
    real = os.statvfs

    def full(path):
        info = real(path)
        return os.statvfs_result(info[:3] + (0, 0) + info[5:])

    monkeypatch.setattr(fs.os, "statvfs", full)
    refused(invoke("convolve", "x.npy", "-k", "box", "-o", "y.npy"), "no space left on device")
    assert not (inside / "y.npy").exists()


# --------------------------------------------------------------------------- streams


def test_a_closed_pipe_exits_141_silently(inside):
    process = subprocess.Popen(
        deconv("convolve", "big.npy", "-k", "box", "-o", "-", "--format", "npy", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert len(process.stdout.read(10)) == 10  # head -c 10
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, as for `yes | head`
    assert stderr == b""


@pytest.mark.parametrize("where", ["/dev/full", "closed pipe"])
def test_a_successful_run_keeps_exit_0_when_stderr_fails(inside, where):
    if where == "/dev/full":
        with open("/dev/full", "wb") as full:
            done = run("convolve", "x.npy", "-k", "box", "-o", "y.npy", stderr=full)
        code = done.returncode
    else:
        read, write = os.pipe()
        os.close(read)
        process = subprocess.Popen(
            deconv("convolve", "x.npy", "-k", "box", "-o", "y.npy"), stderr=write
        )
        os.close(write)
        code = process.wait(timeout=120)
    assert code == 0
    np.testing.assert_allclose(np.load("y.npy").shape, (24, 24))


@pytest.mark.parametrize(
    "fd, argv, code",
    [
        (1, ["kernels", "show", "box"], 0),  # `>&-`: Python's sys.stdout is None
        (2, ["convolve", "x.npy", "-k", "box", "-o", "y.npy"], 0),  # `2>&-`
        (2, ["convolve", "missing.npy", "-k", "box", "-o", "y.npy"], 2),
    ],
)
def test_a_stream_closed_before_the_start(inside, fd, argv, code):
    done = run(*argv, preexec_fn=lambda: os.close(fd))
    assert done.returncode == code, done


def test_a_failing_run_keeps_exit_2_when_stderr_fails(inside):
    with open("/dev/full", "wb") as full:
        done = run("convolve", "missing.npy", "-k", "box", "-o", "y.npy", stderr=full)
    assert done.returncode == 2


@pytest.mark.parametrize(
    "argv, fallback",
    [
        (["compare", "x.npy", "x.npy"], "*"),  # "·" between the summary's parts
        (["analyze", "-k", "gaussian:sigma=1", "--shape", "8x8"], "^T"),  # AᵀA
    ],
)
def test_an_ascii_terminal_gets_ascii_not_a_crash(inside, argv, fallback):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = run(*argv, env=env)
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode("ascii")  # raises if anything else came out
    assert fallback in text
    done.stderr.decode("ascii")


def test_a_kernel_file_that_cannot_be_read(inside, monkeypatch):
    def fail(self, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(self))

    monkeypatch.setattr(Path, "read_text", fail)
    refused(invoke("convolve", "x.npy", "-k", "k.csv", "-o", "y.npy"), "input/output error")


def test_fft_workers_not_a_number(inside):
    argv = ["convolve", "x.npy", "-k", "gaussian:sigma=3", "--boundary", "wrap", "-o", "y.npy"]
    message = refused(invoke(*argv, env={"DECONV_FFT_WORKERS": "abc"}), "DECONV_FFT_WORKERS")
    assert "`abc` is not a whole number" in message
    assert not (inside / "y.npy").exists()


# --------------------------------------------------------------------------- messages


def test_standard_input_errors_name_standard_input(inside):
    bad = np.zeros((8, 8))
    bad[0, 0] = np.nan
    np.save("nan.npy", bad)
    for output in (["-o", "y.npy"], ["-o", "-", "--format", "npy"]):
        with open("nan.npy", "rb") as stdin:
            done = run("convolve", "-", "-k", "box", *output, stdin=stdin)
        assert done.returncode == 2
        message = one_line_error(done.stderr, "standard input has 1 NaN/Inf pixels")
        assert "deconv-stdio" not in message and "/tmp" not in message


@pytest.mark.parametrize(
    "argv",
    [
        ["convolve", "x.npy", "-k", "box", "-o", "afile/y.npy"],
        ["compare", "x.npy", "x.npy", "--diff", "afile/d.png"],
        ["roundtrip", "x.npy", "-k", "box", "--out-dir", "afile/sub"],
        ["kernels", "show", "box", "--save", "afile/k.npy"],
        ["invert", "x.npy", "-k", "box", "-o", "y.npy", "--history", "afile/h.csv"],
    ],
)
def test_a_parent_that_is_a_file_is_called_a_file(inside, argv):
    before = listing(inside)
    refused(invoke(*argv), "`afile` is a file, not a directory")
    assert listing(inside) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["convolve", "loop.npy", "-k", "box", "-o", "y.npy"],
        ["convolve", "x.npy", "-k", "loop.npy", "-o", "y.npy"],
        ["convolve", "x.npy", "-k", "box", "-o", "loop.npy", "--overwrite"],
        ["compare", "loop.npy", "x.npy"],
    ],
)
def test_a_symbolic_link_loop_is_called_a_loop(inside, argv):
    os.symlink("loop2.npy", "loop.npy")
    os.symlink("loop.npy", "loop2.npy")
    refused(invoke(*argv), "`loop.npy`: too many levels of symbolic links")


# --------------------------------------------------------------------------- before the work


def test_overwrite_never_replaces_a_pipe_or_a_device(inside):
    os.mkfifo("fifo.npy")
    os.symlink(os.devnull, "null.npy")
    for target in ("fifo.npy", "null.npy"):
        refused(
            invoke("convolve", "x.npy", "-k", "box", "-o", target, "--overwrite"),
            f"`{target}` is not a regular file (a pipe, device or socket)",
        )
    assert stat.S_ISFIFO(os.lstat("fifo.npy").st_mode)
    assert os.path.realpath("null.npy") == os.devnull and stat.S_ISCHR(os.stat(os.devnull).st_mode)


HISTORY = ["invert", "x.npy", "-k", "box", "--method", "cgls", "-o", "y.npy", "--history"]


@pytest.mark.parametrize(
    "where, needle",
    [
        ("missing/h.csv", "directory `missing` does not exist"),
        ("afile/h.csv", "`afile` is a file, not a directory"),
        ("x.npy", "is an input"),
    ],
)
def test_history_that_cannot_be_written_is_refused_before_the_work(inside, where, needle):
    refused(invoke(*HISTORY, where), needle)
    assert not (inside / "y.npy").exists()  # the inversion did not run, nothing was written


def _denied(monkeypatch, *, read_only: bool = False) -> None:
    """As root, permission bits do not stop a write: the refusal is simulated."""
    real = os.access
    monkeypatch.setattr(fs.os, "access", lambda path, mode: not mode & os.W_OK and real(path, mode))
    if read_only:
        real_statvfs = os.statvfs

        def statvfs(path):
            info = real_statvfs(path)
            return os.statvfs_result(info[:8] + (info.f_flag | os.ST_RDONLY,) + info[9:])

        monkeypatch.setattr(fs.os, "statvfs", statvfs)


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize(
    "argv",
    [
        HISTORY + ["h.csv"],
        ["roundtrip", "x.npy", "-k", "box", "--out-dir", "rt"],
        ["kernels", "show", "box", "--save", "k.npy"],
        ["compare", "x.npy", "x.npy", "--diff", "d.png"],
        ["convolve", "x.npy", "-k", "box", "-o", "y.npy"],
    ],
)
def test_an_unwritable_place_is_refused_before_any_output(inside, monkeypatch, argv, read_only):
    _denied(monkeypatch, read_only=read_only)
    before = listing(inside)
    needle = "read-only file system" if read_only else "permission denied"
    refused(invoke(*argv), needle)  # stdout empty: the kernel matrix was not printed either
    assert listing(inside) == before


@pytest.mark.parametrize("case", ["pipe", "denied", "full", "parent is a file"])
def test_output_refusals_come_before_the_work(inside, monkeypatch, case):
    import deconv_cli.process

    def work(*args, **kwargs):
        raise AssertionError("the work started before the refusal")

    monkeypatch.setattr(deconv_cli.process, "process_file", work)
    target, needle = "y.npy", {"pipe": "not a regular file", "parent is a file": "is a file"}
    if case == "pipe":
        os.mkfifo(target)
    elif case == "denied":
        _denied(monkeypatch)
    elif case == "full":
        real = os.statvfs
        monkeypatch.setattr(
            fs.os, "statvfs", lambda p: os.statvfs_result(real(p)[:3] + (0, 0) + real(p)[5:])
        )
    else:
        target = "afile/y.npy"
    words = needle.get(case, {"denied": "permission denied", "full": "no space left"}.get(case))
    refused(invoke("convolve", "x.npy", "-k", "box", "-o", target, "--overwrite"), words)
    if case != "pipe":  # a batch's directory; a pipe among its outputs fails that item
        batch = str(Path(target).parent / "out") + "/"
        refused(invoke("convolve", "x.npy", "big.npy", "-k", "box", "-o", batch), words)


def test_a_pipe_among_a_batchs_outputs_fails_that_item_before_its_work(inside):
    os.mkdir("out")
    os.mkfifo("out/x.npy")
    result = invoke("convolve", "x.npy", "big.npy", "-k", "box", "-o", "out/", "--overwrite")
    assert result.exit_code == 1, result.output
    assert "FAILED x.npy: `out/x.npy` is not a regular file (a pipe, device" in result.stderr
    assert stat.S_ISFIFO(os.lstat("out/x.npy").st_mode)
    assert np.load("out/big.npy").shape == (512, 512)


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A read-only bind mount, where the machine allows one: root cannot write there either."""
    target = tmp_path / "ro"
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    remount = ["mount", "-o", "remount,ro,bind", str(target)]
    if subprocess.run(remount, capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(target)], check=False)
        pytest.skip("cannot remount read-only here")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.parametrize(
    "argv",
    [
        HISTORY + ["{ro}/h.csv"],
        ["convolve", "x.npy", "-k", "box", "-o", "{ro}/y.npy"],
        ["compare", "x.npy", "x.npy", "--diff", "{ro}/sub/d.png"],
    ],
)
def test_a_read_only_mount_is_refused_before_the_work(inside, read_only_dir, argv):
    refused(invoke(*(a.format(ro=read_only_dir) for a in argv)), "read-only file system")
    assert not (inside / "y.npy").exists()


def test_reference_of_the_wrong_shape_is_refused_before_the_inversion(inside):
    np.save("r.npy", np.zeros((7, 7)))
    argv = ["invert", "x.npy", "-k", "box", "--method", "cgls", "-o", "y.npy"]
    refused(invoke(*argv, "--reference", "r.npy"), "--reference: has shape 7x7")
    assert not (inside / "y.npy").exists()


# --------------------------------------------------------------------------- signals


def test_sighup_during_a_tiled_run_removes_the_temporary_file(ws, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    np.save(ws / "large.npy", np.random.default_rng(2).random((1024, 1024)))
    argv = ["invert", ws / "large.npy", "-k", "gaussian:sigma=2", "--tile", "256"]
    argv += ["--method", "richardson-lucy", "--iterations", "200", "-o", out / "y.npy", "-q"]
    # SIGHUP at its default in the child: a runner started under nohup passes it on ignored,
    # and deconv leaves a signal someone else owns alone
    process = subprocess.Popen(
        deconv(*argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list(out.glob(".deconv-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 129, stderr  # 128 + SIGHUP
    assert stderr.decode() == "deconv: hung up (the terminal closed)\n"
    assert listing(out) == []


# --------------------------------------------------------------------------- injected faults

ERRNOS = [
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EIO,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENAMETOOLONG,
    errno.ELOOP,
    errno.ENOTDIR,
    errno.EMFILE,
]


class _Faulty:
    """A file whose writes count towards a :class:`_Fault` (which may raise)."""

    def __init__(self, handle, fault) -> None:
        self._handle, self._fault = handle, fault

    def write(self, data):
        self._fault.tick(len(data))
        return self._handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __getattr__(self, name):
        return getattr(self._handle, name)


class _Fault:
    """Raise OSError(code) at the ``at``-th operation (or byte) of the write."""

    def __init__(self, code: int, at: int) -> None:
        self.code, self.at, self.count, self.fired = code, at, 0, False

    def tick(self, amount: int = 1) -> None:
        self.count += amount
        if not self.fired and self.count > self.at:
            self.fired = True
            raise OSError(self.code, os.strerror(self.code))


@contextlib.contextmanager
def _injected(fault: _Fault, directory: Path, monkeypatch):
    """Every file operation inside ``directory`` counts towards the fault."""
    real_open, real_os_open = builtins.open, os.open

    def inside(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(path).parent == directory

    def faulty_open(file, mode="r", *args, **kwargs):
        if inside(file) and any(c in mode for c in "wax+"):
            fault.tick()
            return _Faulty(real_open(file, mode, *args, **kwargs), fault)
        return real_open(file, mode, *args, **kwargs)

    def faulty_os_open(path, flags, *args, **kwargs):
        if inside(path):
            fault.tick()
        return real_os_open(path, flags, *args, **kwargs)

    def counted(function):
        def call(path, *args, **kwargs):
            if inside(path):
                fault.tick()
            return function(path, *args, **kwargs)

        return call

    monkeypatch.setattr(builtins, "open", faulty_open)
    monkeypatch.setattr(os, "open", faulty_os_open)
    for name in ("chmod", "replace"):
        monkeypatch.setattr(os, name, counted(getattr(os, name)))
    yield


@pytest.mark.fuzz
@settings() if FUZZING else settings(max_examples=25)
@given(
    code=st.sampled_from(ERRNOS),
    at=st.integers(0, 40_000),
    ext=st.sampled_from([".npy", ".png", ".tif"]),
    tiled=st.booleans(),
    existing=st.booleans(),
)
def test_injected_faults_are_one_line_and_leave_nothing(
    tmp_path_factory, code, at, ext, tiled, existing
):
    work = tmp_path_factory.mktemp("inject")
    source = work / "x.npy"
    np.save(source, np.random.default_rng(3).random((64, 64)))
    out_dir = work / "out"
    out_dir.mkdir()
    target = out_dir / f"y{ext}"
    if existing:
        target.write_bytes(b"the old output")
    before = digest(source)
    argv = ["convolve", source, "-k", "box", "-o", target, "--overwrite", "-q"]
    argv += ["--tile", "32"] if tiled else []
    fault = _Fault(code, at)
    with pytest.MonkeyPatch.context() as monkeypatch, _injected(fault, out_dir, monkeypatch):
        result = invoke(*argv)
    note(f"fired={fault.fired} count={fault.count} stderr={result.stderr!r}")
    assert digest(source) == before
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".deconv-")]
    if not fault.fired:  # the write needed fewer operations than `at`: it must be whole
        assert result.exit_code == 0, result.output
        assert listing(out_dir) == [target.name]
        return
    message = refused(result, fs.reason(OSError(code, "")))  # the errno in words
    assert ".deconv-" not in message
    if existing:
        assert target.read_bytes() == b"the old output"
    else:
        assert listing(out_dir) == []


class _FaultyStdout(io.TextIOBase):
    """A standard output (text, with a binary ``buffer``) whose writes count towards a fault."""

    encoding = "utf-8"

    def __init__(self, fault: _Fault) -> None:
        self.fault, self.written = fault, []
        self.buffer = _FaultyBinary(self)

    def writable(self) -> bool:
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str")
        self.fault.tick(len(text))
        self.written.append(text.encode())
        return len(text)


class _FaultyBinary(io.RawIOBase):
    def __init__(self, owner: _FaultyStdout) -> None:
        self.owner = owner

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.owner.fault.tick(len(data))
        self.owner.written.append(bytes(data))
        return len(data)


STREAM_COMMANDS = {
    "-o -": ["convolve", "x.npy", "-k", "box", "-o", "-", "--format", "npy", "-q"],
    "compare json": ["compare", "x.npy", "x.npy", "--format", "json"],
    "kernels show": ["kernels", "show", "gaussian:sigma=1"],
}


@pytest.mark.fuzz
@settings() if FUZZING else settings(max_examples=15)
@given(
    code=st.sampled_from([errno.EPIPE, *ERRNOS]),
    at=st.integers(0, 6_000),
    command=st.sampled_from(sorted(STREAM_COMMANDS)),
)
def test_injected_standard_output_faults(tmp_path_factory, code, at, command):
    """Standard output fails at a random byte with a random errno: one line naming standard
    output and exit 2, or silence and exit 141 for a closed pipe; never a traceback."""
    work = tmp_path_factory.mktemp("stdout")
    np.save(work / "x.npy", np.random.default_rng(4).random((24, 24)))
    fault = _Fault(code, at)
    stdout, stderr = _FaultyStdout(fault), io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(work)
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(sys, "stderr", stderr)
        with pytest.raises(SystemExit) as exit_:
            main.main(STREAM_COMMANDS[command], prog_name="deconv")
    code_out, text = exit_.value.code, stderr.getvalue()
    note(f"fired={fault.fired} count={fault.count} exit={code_out} stderr={text!r}")
    assert "Traceback" not in text and "internal error" not in text
    assert [p.name for p in work.iterdir()] == ["x.npy"]  # no temporary file, no spool left
    if not fault.fired:
        assert code_out in (0, None), text
    elif code == errno.EPIPE:
        assert code_out == 141
        assert "deconv: error" not in text
    else:
        assert code_out == 2
        errors = [line for line in text.splitlines() if line.startswith("deconv: error: ")]
        assert errors == [f"deconv: error: standard output: {fs.reason(OSError(code, ''))}"]
