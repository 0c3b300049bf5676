"""A batch on one machine: 64 images of 512x512 through `invert -m wiener`, --jobs 2 vs 1.

Whole commands (interpreter start, worker start, reading, parameter choice, writing),
run alternately a few times in one run; the ratio of the best times is reported.
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

COUNT, SIZE, REPEATS = 64, 512, 3
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


def timed(folder: Path, out: Path, jobs: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "deconv_cli", "invert", str(folder), *FLAGS]
    start = time.perf_counter()
    subprocess.run([*command, "-o", str(out), "--jobs", str(jobs), "-q"], check=True)
    seconds = time.perf_counter() - start
    if len(list(out.iterdir())) != COUNT:
        raise SystemExit("not every image was written")
    return seconds


def main() -> None:
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_images(folder)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(REPEATS):
            for jobs in (1, 2):
                times[jobs].append(timed(folder, Path(tmp) / f"out{jobs}", jobs))
    best = {jobs: min(t) for jobs, t in times.items()}
    print(f"batch: {COUNT} images {SIZE}x{SIZE}, invert -m wiener, {cores} cores available")
    for jobs in (1, 2):
        runs = ", ".join(f"{t:.2f}" for t in times[jobs])
        print(f"  --jobs {jobs}: best {best[jobs]:.2f} s  (runs: {runs})")
    ratio = best[1] / best[2]
    verdict = "met" if ratio >= 1.7 else "NOT met"
    print(f"  speed-up --jobs 2 vs --jobs 1: {ratio:.2f}x (target >= 1.7x: {verdict})")


if __name__ == "__main__":
    main()
