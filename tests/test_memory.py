"""The memory estimate against traced peaks, the memory available, the refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from deconv_cli.errors import DeconvError
from deconv_cli.operators import ConvOperator, Geometry


def rng(seed=0):
    return np.random.default_rng(seed)


def relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


# -- memory -------------------------------------------------------------------------------


def test_available_bytes_reads_meminfo_and_the_cgroup_limit(tmp_path, monkeypatch):
    from deconv_cli import memory

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4000 kB\nMemAvailable: 1000 kB\n")
    limit, usage, stat = (tmp_path / name for name in ("max", "current", "stat"))
    limit.write_text("500000\n")
    usage.write_text("100000\n")
    stat.write_text("anon 7\ninactive_file 50000\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    monkeypatch.setattr(memory, "CGROUP_FILES", ((limit, usage, stat, "inactive_file"),))
    assert memory.available_bytes() == 500000 - 100000 + 50000  # below 1000 kB
    limit.write_text("max\n")  # no limit: MemAvailable
    assert memory.available_bytes() == 1000 * 1024


def test_estimate_grows_with_the_image_and_tiles_bound_it():
    from deconv_cli.memory import FIXED_BYTES, estimate_bytes

    kernel, geometry = np.ones((13, 13)) / 169, Geometry()

    def estimate(n, **kwargs):
        return estimate_bytes("invert", (n, n), kernel, geometry, method="wiener", **kwargs)

    assert estimate(4096) - FIXED_BYTES == pytest.approx(4 * (estimate(2048) - FIXED_BYTES))
    tiled = [estimate(n, tile=512, mapped=True) for n in (4096, 8192)]
    assert tiled[0] == tiled[1] < estimate(2048)
    # unmapped, the tiled job holds the data, the result and the result's written copy
    assert estimate(8192, tile=512) - tiled[1] == 3 * 8192**2 * 8
    slow = estimate_bytes("invert", (1024, 1024), np.triu(kernel), geometry, method="wiener")
    assert slow > estimate(1024)  # CG (a kernel the DCT does not diagonalize)


@pytest.mark.parametrize(
    "command,method",
    [("convolve", None), ("transpose", None), ("invert", "wiener"), ("invert", "tv")],
    ids=["convolve", "transpose", "wiener", "tv"],
)
def test_estimate_bounds_the_traced_peak(command, method):
    # tracemalloc sees numpy's allocations: an independent measure of the peak
    import tracemalloc

    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.kernels import load_kernel
    from deconv_cli.memory import FIXED_BYTES, estimate_bytes
    from deconv_cli.restore import RestoreOptions

    kernel, geometry = load_kernel("gaussian:sigma=2").array, Geometry()
    y = rng(10).random((512, 512))
    op = ConvOperator(kernel, y.shape, geometry)
    problem = build_problem(kernel, y.shape, geometry)
    run = {
        "convolve": lambda: op.forward(y),
        "transpose": lambda: op.adjoint(y),
        "invert": lambda: invert(y, problem, method, RestoreOptions(iterations=3)),
    }[command]
    run()  # imports and caches outside the trace
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    scaled = estimate_bytes(command, y.shape, kernel, geometry, method=method) - FIXED_BYTES
    assert peak <= scaled <= 3 * peak


def test_check_memory_suggests_a_tile_that_fits(monkeypatch):
    from deconv_cli import memory

    kernel, geometry = np.ones((13, 13)) / 169, Geometry()
    args = ("invert", (8192, 8192), kernel, geometry)
    need = memory.estimate_bytes(*args, method="wiener")
    room = need * 4 // 5  # the data, the result and its copy (3 of 4.5 arrays) fit
    monkeypatch.setattr(memory, "available_bytes", lambda: room)
    with pytest.raises(DeconvError) as caught:
        memory.check_memory(*args, method="wiener")
    message = str(caught.value)
    assert message.startswith(
        f"invert `method=wiener` on a 8192x8192 float64 image needs about {need / 1e9:.1f} GB "
        f"of memory, {room / 1e9:.1f} GB is available; use `tile="
    )
    size = int(message.split("`tile=")[1].split("`")[0])
    assert memory.estimate_bytes(*args, method="wiener", tile=size) <= room
    assert "\n" not in message
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    assert memory.check_memory(*args, method="wiener") == need
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: no check
    assert memory.check_memory(*args, method="wiener") == need


def test_check_memory_suggests_memory_maps_when_holding_the_image_cannot_fit():
    from deconv_cli.memory import check_memory, estimate_bytes

    args = ("invert", (8192, 8192), np.ones((13, 13)) / 169, Geometry())
    image = 8192 * 8192 * 8
    mapped = estimate_bytes(*args, method="wiener", tile=1024, mapped=True)
    assert mapped < image  # the tiles' work is far below one image
    for tile in (None, 1024):
        with pytest.raises(
            DeconvError, match="with .npy input and output, which are then streamed"
        ) as caught:
            check_memory(*args, method="wiener", tile=tile, available=image)
        size = int(str(caught.value).split("use `tile=")[1].split("`")[0])
        assert estimate_bytes(*args, method="wiener", tile=size, mapped=True) <= image
    assert check_memory(*args, method="wiener", tile=1024, mapped=True, available=image) == mapped


def test_check_memory_without_a_way_out():
    from deconv_cli.memory import check_memory

    kernel = np.ones((3, 3))
    strided = Geometry.create(stride=2)
    with pytest.raises(DeconvError, match="`tile` works for invert only with `mode=same`"):
        check_memory("invert", (4096, 4096), kernel, strided, method="cgls", available=10**6)
    with pytest.raises(
        DeconvError, match=r"; even `tile=256` needs about .*: free memory or process a smaller"
    ):
        check_memory("convolve", (4096, 4096), kernel, Geometry(), available=10**6)


def test_the_memory_estimate_counts_the_address_space_limit(tmp_path):
    """Under `ulimit -v` the job is refused before the work with the estimate, not by a
    MemoryError part-way ("not enough memory", as before this limit was counted)."""
    import resource

    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((12, 12)))

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "-m", "deconv_cli", "convolve", str(tmp_path / "tiny.npy")]
        + ["-k", "box:size=3", "--padding", "6000", "-o", str(tmp_path / "out.npy"), "-q"],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "needs about" in result.stderr and "GB is available" in result.stderr, result.stderr
    available = float(result.stderr.split("GB of memory, ")[1].split(" GB")[0])
    assert available <= 3.3  # the address-space room (3 GiB), not the free memory
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("tile", [None, 64], ids=["whole", "tiled"])
@pytest.mark.parametrize("command", ["convolve", "transpose"])
def test_estimate_bounds_the_traced_peak_of_a_grouped_bank(command, tile):
    # The FFT engine keeps the bank's spectra (C_out · C_in/groups of them, and their
    # conjugates): 1.4-1.8x the estimate without them here. The tiles keep one window
    # operator per window shape. A fresh operator is traced, as a job builds one.
    import tracemalloc

    from deconv_cli.memory import FIXED_BYTES, estimate_bytes
    from deconv_cli.tiles import tiled_adjoint, tiled_forward

    bank, groups = rng(11).random((8, 4, 15, 15)), 2
    x = rng(12).random((160, 160, 8))
    geometry = Geometry()

    def run():
        op = ConvOperator(bank, x.shape, geometry, groups=groups)
        if tile is None:
            return op.forward(x) if command == "convolve" else op.adjoint(x)
        tiled = tiled_forward if command == "convolve" else tiled_adjoint
        return tiled(op, x, tile, out=out)

    out = np.empty_like(x)
    run()  # imports outside the trace
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = estimate_bytes(
        command, x.shape, bank, geometry, groups=groups, tile=tile, mapped=True
    )
    assert peak <= estimate - FIXED_BYTES <= 3 * peak
