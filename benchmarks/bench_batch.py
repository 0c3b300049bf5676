"""A batch on one machine: 64 images of 512x512 through `invert -m wiener`, --jobs 2 vs 1.

Whole commands (interpreter start, worker start, reading, parameter choice, writing),
run alternately a few times in one run; the ratio of the best times is reported. The
same images twice over (128) split each time into a fixed part (interpreter, imports,
workers) and a part per item; the host's own ceiling (independent pure-Python work in
2 processes vs 1) is printed beside them.
Target: --jobs 2 at least 1.7x faster than --jobs 1 on 2 cores. The host does not
always give both cores: the cores this process may use are printed with the result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

COUNT, SIZE, REPEATS = 64, 512, 5
FLAGS = ["-k", "gaussian:sigma=2", "-m", "wiener", "--format", "tif", "--dtype", "float32"]


def make_images(folder: Path) -> None:
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    for i in range(COUNT):
        scene = ndimage.gaussian_filter(rng.random((SIZE, SIZE)), 3)
        scene = (scene - scene.min()) / np.ptp(scene)
        blurred = ndimage.gaussian_filter(scene, 2, mode="reflect", truncate=3.0)
        noisy = np.clip(blurred + rng.normal(0, 0.01, blurred.shape), 0, 1)
        iio.imwrite(folder / f"img{i:02d}.png", np.rint(noisy * 65535).astype(np.uint16))


def timed(folder: Path, out: Path, jobs: int, count: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "deconv_cli", "invert", str(folder), *FLAGS]
    start = time.perf_counter()
    subprocess.run([*command, "-o", str(out), "--jobs", str(jobs), "-q"], check=True)
    seconds = time.perf_counter() - start
    if len(list(out.iterdir())) != count:
        raise SystemExit("not every image was written")
    return seconds


def spin(_: int) -> int:
    """A fixed amount of pure-Python work (no memory traffic, no threads)."""
    total = 0
    for k in range(2_000_000):
        total += k
    return total


def machine_ceiling(tasks: int = 16) -> float:
    """How much faster 2 processes run independent CPU work than 1, on this host now."""
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    for i in range(tasks):
        spin(i)
    serial = time.perf_counter() - start
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(spin, range(2)))  # workers started
        start = time.perf_counter()
        list(pool.map(spin, range(tasks)))
        parallel = time.perf_counter() - start
    return serial / parallel


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folders = {COUNT: Path(tmp) / "in", 2 * COUNT: Path(tmp) / "in2"}
        for folder in folders.values():
            folder.mkdir()
        make_images(folders[COUNT])
        for image in folders[COUNT].iterdir():  # the same images twice, for the slope
            for copy in ("a", "b"):
                shutil.copy(image, folders[2 * COUNT] / f"{image.stem}{copy}{image.suffix}")
        times = {(n, jobs): [] for n in folders for jobs in (1, 2)}
        for _ in range(REPEATS):
            for (n, jobs), runs in times.items():
                runs.append(timed(folders[n], Path(tmp) / "out", jobs, n))
    best = {key: min(t) for key, t in times.items()}
    print(f"batch: {COUNT} images {SIZE}x{SIZE}, invert -m wiener, {cores} cores available")
    for jobs in (1, 2):
        runs = ", ".join(f"{t:.2f}" for t in times[COUNT, jobs])
        print(f"  --jobs {jobs}: best {best[COUNT, jobs]:.2f} s  (runs: {runs})")
    ratio = best[COUNT, 1] / best[COUNT, 2]
    verdict = "met" if ratio >= 1.7 else "NOT met"
    print(f"  speed-up --jobs 2 vs --jobs 1: {ratio:.2f}x (target >= 1.7x: {verdict})")
    # t(n) = fixed + n * per_item, from the 64- and 128-image runs
    per_item = {j: (best[2 * COUNT, j] - best[COUNT, j]) / COUNT for j in (1, 2)}
    fixed = {j: best[COUNT, j] - COUNT * per_item[j] for j in (1, 2)}
    print(f"  from {COUNT} and {2 * COUNT} images, t(n) = fixed + n x per item:")
    for jobs in (1, 2):
        print(
            f"    --jobs {jobs}: fixed {fixed[jobs]:.2f} s, per item {1e3 * per_item[jobs]:.1f} ms"
        )
    print(f"    per-item speed-up {per_item[1] / per_item[2]:.2f}x")
    print(f"  this host's ceiling (pure-Python work, 2 processes vs 1): {machine_ceiling():.2f}x")


if __name__ == "__main__":
    main()
