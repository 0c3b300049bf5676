"""Fault safety: a killed process or a full disk leaves no partial output, and no litter.

Outputs are written to ``.deconv-PID-HOST-XXXXXXXX.EXT`` beside the output, then
renamed. SIGKILL leaves that temporary file behind (nothing can run on SIGKILL); the
next write into the directory removes it, because its process is gone. SIGTERM and
Ctrl-C remove it at once. A full disk (here: a file size limit, EFBIG) is one error
line and no file at all.
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deconv_cli import atomic, fs, io
from deconv_cli.errors import OutputError

TEMP = re.compile(r"\.deconv-(\d+)-(.+)-[a-z0-9_]{8}(\.\w+)?")


def deconv(*args) -> list[str]:
    return [sys.executable, "-m", "deconv_cli", *map(str, args)]


def temp_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(".deconv"))


def wait_for_temp_file(process: subprocess.Popen, directory: Path, min_size: int) -> Path:
    """Poll until ``process`` has a temporary file of at least ``min_size`` bytes."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()}")
        for path in temp_files(directory):
            try:
                if path.stat().st_size >= min_size:
                    return path
            except FileNotFoundError:
                pass
        time.sleep(0.002)
    process.kill()
    raise AssertionError("no temporary file appeared")


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    """A 2048×2048 float64 image: its 16-bit PNG takes most of a second to write."""
    path = tmp_path_factory.mktemp("large") / "large.npy"
    np.save(path, np.random.default_rng(0).random((2048, 2048)))
    return path


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "in" / "small.npy"
    path.parent.mkdir()
    np.save(path, np.random.default_rng(1).random((32, 32)))
    return path


def test_sigkill_mid_write_leaves_no_output_and_the_next_run_cleans_up(large, small, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    writer = subprocess.Popen(
        deconv("convolve", large, "-k", "box", "-o", out / "blurred.png", "-q"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    temp = wait_for_temp_file(writer, out, min_size=1)  # the PNG is being written
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    assert not (out / "blurred.png").exists()  # never a partial output under the final name
    assert temp_files(out) == [temp]  # SIGKILL cannot clean up...
    assert int(TEMP.fullmatch(temp.name).group(1)) == writer.pid  # ...but names the process
    assert temp.suffix == ".png"

    later = subprocess.run(
        deconv("convolve", small, "-k", "box", "-o", out / "other.npy", "-q"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert later.returncode == 0, later.stderr
    assert temp_files(out) == []  # the dead process's temporary file is gone
    assert sorted(p.name for p in out.iterdir()) == ["other.npy"]
    assert np.load(out / "other.npy").shape == (32, 32)


def test_sigterm_mid_write_removes_the_temporary_file(large, tmp_path):
    writer = subprocess.Popen(
        deconv("convolve", large, "-k", "box", "-o", tmp_path / "blurred.png", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_temp_file(writer, tmp_path, min_size=1)
    writer.send_signal(signal.SIGTERM)
    stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 143, stderr
    assert stderr == "deconv: terminated\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("ext", [".npy", ".tif", ".png"])
def test_full_disk_is_one_line_and_no_file(small, tmp_path, ext):
    large = tmp_path / "large.npy"
    np.save(large, np.random.default_rng(2).random((256, 256)))  # written before the limit
    done = subprocess.run(
        deconv("convolve", large, "-k", "box", "--dtype", "float64" if ext != ".png" else "uint16")
        + ["-o", str(tmp_path / f"y{ext}"), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(64 * 1024),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("deconv: error: ")
    assert "disk is full or a file size limit was reached" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "large.npy"]


def test_full_disk_keeps_the_old_output(tmp_path):
    source = tmp_path / "x.npy"
    np.save(source, np.random.default_rng(3).random((256, 256)))
    np.save(tmp_path / "y.npy", np.arange(5.0))
    before = (tmp_path / "y.npy").read_bytes()
    done = subprocess.run(
        deconv("convolve", source, "-k", "box", "-o", tmp_path / "y.npy", "--overwrite", "-q"),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_file_size_limit(64 * 1024),
    )
    assert done.returncode == 2 and "disk is full" in done.stderr
    assert (tmp_path / "y.npy").read_bytes() == before
    assert temp_files(tmp_path) == []


# --------------------------------------------------------------------------- stale temp files


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    for _ in range(20):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        try:
            os.kill(child.pid, 0)
        except ProcessLookupError:
            return child.pid
    raise RuntimeError("every pid was reused at once")


def our_temp_name(directory: Path, ext: str = ".npy") -> str:
    """The name atomic_write gives a temporary file in this process."""
    names = []
    atomic.atomic_write(
        directory / f"probe{ext}", lambda tmp: names.append(tmp.name), overwrite=True
    )
    (directory / f"probe{ext}").unlink()
    return names[0]


def renamed(name: str, pid: int | None = None, host: str | None = None) -> str:
    match = TEMP.fullmatch(name)
    pid_text = str(pid) if pid is not None else match.group(1)
    return f".deconv-{pid_text}-{host or match.group(2)}-{name[-12:]}"


def test_temp_name_carries_pid_and_host(tmp_path):
    name = our_temp_name(tmp_path, ".tif")
    match = TEMP.fullmatch(name)
    assert match and int(match.group(1)) == os.getpid() and name.endswith(".tif")


def test_only_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    own = our_temp_name(tmp_path)
    dead = dead_pid()
    files = {
        "stale": renamed(own, pid=dead),
        "stale-no-suffix": renamed(own, pid=dead)[:-4],
        "alive-init": renamed(own, pid=1),
        "alive-self": own,
        "other-host": renamed(own, pid=dead, host="elsewhere.example"),
        "old-style": ".deconv-a1b2c3d4.npy",
        "not-ours": f"deconv-{dead}-host-abcdefgh.npy",
        "user-file": f".deconv-{dead}-notes.txt",
    }
    for name in files.values():
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "as-dir").mkdir()
    directory = tmp_path / renamed(own, pid=dead).replace(".npy", ".tif")
    directory.mkdir()
    link = tmp_path / renamed(own, pid=dead).replace(".npy", ".png")
    link.symlink_to(tmp_path / files["user-file"])

    expected = sorted([tmp_path / files["stale"], tmp_path / files["stale-no-suffix"]])
    assert atomic.stale_temp_files(tmp_path) == expected
    assert atomic.remove_stale_temp_files(tmp_path) == expected
    left = {p.name for p in tmp_path.iterdir()}
    assert left == (set(files.values()) - {files["stale"], files["stale-no-suffix"]}) | {
        "as-dir",
        directory.name,
        link.name,
    }


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_stale_temp_files_of_other_users_are_left(tmp_path):
    stale = tmp_path / renamed(our_temp_name(tmp_path), pid=dead_pid())
    stale.write_bytes(b"x")
    os.chown(stale, 65534, 65534)
    assert atomic.stale_temp_files(tmp_path) == []


def test_first_write_in_a_directory_removes_stale_files(tmp_path):
    sub = tmp_path / "fresh"
    sub.mkdir()
    stale = sub / renamed(our_temp_name(tmp_path), pid=dead_pid())
    stale.write_bytes(b"half an image")
    io.write_image(sub / "y.npy", np.zeros((2, 2)))
    assert sorted(p.name for p in sub.iterdir()) == ["y.npy"]


# --------------------------------------------------------------------------- protected inputs


def test_inside_protect_inputs_a_read_file_is_never_replaced(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 3)))
    os.link(tmp_path / "x.npy", tmp_path / "hard.npy")
    with fs.protect_inputs():
        io.read_image(tmp_path / "x.npy")
        for target in ("x.npy", "hard.npy"):
            with pytest.raises(OutputError, match="is an input of this command"):
                io.write_image(tmp_path / target, np.zeros((3, 3)), overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.ones((3, 3)))
    io.write_image(tmp_path / "x.npy", np.zeros((3, 3)), overwrite=True)  # outside: allowed


def test_inside_protect_inputs_no_file_is_written_twice(tmp_path):
    with fs.protect_inputs():
        io.write_image(tmp_path / "y.npy", np.ones((2, 2)))
        with pytest.raises(OutputError, match="already written by this command"):
            io.write_image(tmp_path / "y.npy", np.zeros((2, 2)), overwrite=True)
        with fs.protect_inputs():  # nested: the outer record holds
            with pytest.raises(OutputError, match="already written"):
                io.write_image(tmp_path / "y.npy", np.zeros((2, 2)), overwrite=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.ones((2, 2)))
    io.write_image(tmp_path / "y.npy", np.zeros((2, 2)), overwrite=True)


def test_kernel_files_are_protected_inputs(tmp_path):
    from deconv_cli.kernels import load_kernel

    (tmp_path / "k.csv").write_text("0,1,0\n1,1,1\n0,1,0\n")
    with fs.protect_inputs():
        load_kernel(str(tmp_path / "k.csv"))
        with pytest.raises(OutputError, match="is an input of this command"):
            atomic.atomic_write(tmp_path / "k.csv", lambda tmp: tmp.write_text("1"), overwrite=True)
    assert (tmp_path / "k.csv").read_text() == "0,1,0\n1,1,1\n0,1,0\n"


def test_dilation_1000_answers_in_seconds_and_equals_the_dilated_correlation(tmp_path):
    """A 3×3 box at dilation 1000 on 64×64 ran 15 minutes on ndimage and ignored SIGTERM."""
    from scipy.signal import fftconvolve

    x = np.random.default_rng(3).random((64, 64))
    np.save(tmp_path / "x.npy", x)
    start = time.monotonic()
    done = subprocess.run(
        deconv("convolve", tmp_path / "x.npy", "-k", "box:size=3", "--dilation", "1000")
        + ["-o", str(tmp_path / "y.npy"), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 30  # seconds (the machine is shared), not minutes
    taps = np.zeros(2001)  # the dilated 3×3 box is the outer product of this with itself
    taps[::1000] = 1 / 3
    padded = np.pad(x, 1000, mode="symmetric")  # --boundary reflect
    columns = fftconvolve(padded, taps[:, None], mode="valid")
    expected = fftconvolve(columns, taps[None, :], mode="valid")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-9)


def test_sigterm_mid_computation_exits_143_promptly_with_nothing_written(tmp_path):
    """An iterative inversion answers SIGTERM between iterations: no output, no litter."""
    np.save(tmp_path / "x.npy", np.random.default_rng(4).random((384, 384)))
    out = tmp_path / "out"
    out.mkdir()
    command = ["invert", tmp_path / "x.npy", "-k", "gaussian:sigma=2", "-m", "tv"]
    command += ["--iterations", "100000", "--tol", "0", "-o", out / "y.png"]
    proc = subprocess.Popen(deconv(*command), stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stderr], [], [], 120)  # a progress line: iterating
    assert ready and "iteration" in proc.stderr.readline(), proc.kill()
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=60)[1]
    assert time.monotonic() - sent < 10
    assert proc.returncode == 143, stderr
    assert stderr.endswith("deconv: terminated\n") and "Traceback" not in stderr
    assert list(out.iterdir()) == []


def _address_space_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def test_a_huge_unknown_boundary_is_refused_with_its_estimate_before_the_work(tmp_path):
    """gaussian:sigma=682 on 64×64 with --boundary unknown solves on a 4156² grid (about
    5 GB): under a 2 GB address space it is one line with the estimate, not a slow
    climb to an allocation failure."""
    np.save(tmp_path / "x.npy", np.random.default_rng(5).random((64, 64)))
    done = subprocess.run(
        deconv("invert", tmp_path / "x.npy", "-k", "gaussian:sigma=682", "--boundary", "unknown")
        + ["-o", str(tmp_path / "y.npy")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_address_space_limit(2 << 30),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("deconv: error: invert ")
    assert re.search(
        r"needs about \d+\.\d GB of memory, \d+(\.\d)? [GM]B is available", done.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
