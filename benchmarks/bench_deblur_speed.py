"""Speed and memory of the default ``deconv invert``, whole commands, against skimage RL.

Run: ``.venv/bin/python benchmarks/bench_deblur_speed.py [--pairs N]`` (default 3).

Each pair runs the two commands one after the other, alternating which goes first;
a ratio is ``deconv time / skimage time`` within a pair, and the table gives the
median of the pair ratios (the machine may be shared: only ratios in one run mean
anything). Interpreter start, imports, reading and writing are counted for both.

(a) ``deconv invert big.npy -k motion:length=15,angle=30 -o out.npy`` (the default
    method, reflect boundary) on a 2048×2048 float32 image (``skimage.data.camera``
    resized, blurred with the reflect boundary, gaussian noise σ 0.01, seed 0) against
    ``python -c`` loading the ``.npy``, running ``skimage.restoration.richardson_lucy``
    30 iterations (float32 PSF) and saving ``.npy``. Target ≤ 1.0 (stretch ≤ 0.5).
(b) a 300×451 RGB JPEG (a crop of ``skimage.data.coffee`` blurred by ``disk:radius=4``,
    saved by Pillow at quality 90): ``deconv invert photo.jpg -k disk:radius=4
    --boundary unknown -o out.png`` against a script reading the JPEG (imageio), running
    skimage's RL 30 iterations on each of its three channels and writing a PNG.
    Target ≤ 2.0.
(c) Peak memory of (a)'s command: its maximum resident set size (``/usr/bin/time -v``)
    minus that of the same command on a 64×64 float32 image (the interpreter, the
    imports and the method's fixed costs), as a multiple of the 2048² image's float32
    bytes (16 MiB). Target ≤ 12.

The inputs are generated into ``bench-out/speed/`` (gitignored) on first use.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "bench-out" / "speed"
MOTION = "motion:length=15,angle=30"
DISK = "disk:radius=4"
SIDE = 2048
JPEG_SHAPE = (300, 451)

RL_NPY = """
import sys, numpy as np
from skimage.restoration import richardson_lucy
y = np.load(sys.argv[1]); psf = np.load(sys.argv[2]).astype(np.float32)
np.save(sys.argv[3], richardson_lucy(y, psf, num_iter=30))
"""
RL_JPEG = """
import sys, numpy as np, imageio.v3 as iio
from skimage.restoration import richardson_lucy
y = iio.imread(sys.argv[1]) / 255.0; psf = np.load(sys.argv[2])
x = np.stack([richardson_lucy(y[..., c], psf, num_iter=30) for c in range(3)], axis=-1)
iio.imwrite(sys.argv[3], (np.clip(x, 0, 1) * 255).round().astype(np.uint8))
"""


def make_inputs() -> dict[str, Path]:
    """The test files (made once): the 2048² and 64² float32 data, the JPEG, the PSFs."""
    import imageio.v3 as iio
    from skimage import data, transform

    from deconv_cli.kernels import load_kernel
    from deconv_cli.operators import ConvOperator, Geometry

    OUT.mkdir(parents=True, exist_ok=True)
    paths = {
        "big": OUT / "motion2048.npy",
        "small": OUT / "motion64.npy",
        "jpeg": OUT / "coffee-disk4-q90.jpg",
        "motion_psf": OUT / "motion-psf.npy",
        "disk_psf": OUT / "disk-psf.npy",
    }
    if all(p.exists() for p in paths.values()):
        return paths
    reflect = Geometry.create(boundary="reflect")
    motion, disk = load_kernel(MOTION).array, load_kernel(DISK).array
    np.save(paths["motion_psf"], motion)
    np.save(paths["disk_psf"], disk)
    rng = np.random.default_rng(0)
    for key, side in (("big", SIDE), ("small", 64)):
        x = transform.resize(data.camera() / 255.0, (side, side)).astype(np.float32)
        y = ConvOperator(motion, x.shape, reflect, dtype=np.float32).forward(x)
        np.save(paths[key], (y + 0.01 * rng.standard_normal(y.shape)).astype(np.float32))
    coffee = data.coffee() / 255.0
    top, left = (coffee.shape[0] - JPEG_SHAPE[0]) // 2, (coffee.shape[1] - JPEG_SHAPE[1]) // 2
    blurred = ConvOperator(disk, coffee.shape, reflect).forward(coffee)
    crop = blurred[top : top + JPEG_SHAPE[0], left : left + JPEG_SHAPE[1]]
    pixels = np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8)
    iio.imwrite(paths["jpeg"], pixels, extension=".jpg", quality=90)
    return paths


def timed(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and maximum resident set size (kB) of one command."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *argv], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    return seconds, rss


def pairs(a: list[str], b: list[str], count: int) -> tuple[list[float], list[float], list[int]]:
    """``count`` alternated runs of ``a`` and ``b``: a's times, b's times, a's peak RSS."""
    ta, tb, rss = [], [], []
    for k in range(count):
        order = ((a, ta), (b, tb)) if k % 2 == 0 else ((b, tb), (a, ta))
        for argv, times in order:
            seconds, peak = timed(argv)
            times.append(seconds)
            if argv is a:
                rss.append(peak)
        print(f"  pair {k + 1}/{count}: deconv {ta[-1]:.2f} s, skimage {tb[-1]:.2f} s", flush=True)
    return ta, tb, rss


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="alternated pairs per test")
    args, _ = parser.parse_known_args(argv)  # under run_all.py the argv is its own
    paths = make_inputs()
    deconv = [sys.executable, "-m", "deconv_cli", "invert"]
    out_npy, out_png, out_sk = OUT / "out.npy", OUT / "out.png", OUT / "out-sk"
    common = ["--overwrite", "--quiet"]
    rows = []

    print(f"(a) {SIDE}² float32, {MOTION}, noise 0.01: default invert vs skimage RL 30 it")
    a = [*deconv, str(paths["big"]), "-k", MOTION, "-o", str(out_npy), *common]
    b = [sys.executable, "-c", RL_NPY, str(paths["big"]), str(paths["motion_psf"]), f"{out_sk}.npy"]
    ta, tb, rss = pairs(a, b, args.pairs)
    ratio = statistics.median(x / y for x, y in zip(ta, tb, strict=True))
    rows.append(
        (
            f"(a) {SIDE}² float32 motion, default vs RL 30 it",
            f"{statistics.median(ta):.2f} s / {statistics.median(tb):.2f} s",
            f"{ratio:.2f}×",
            "≤ 1.0 (stretch ≤ 0.5)",
            "PASS" + (" (stretch too)" if ratio <= 0.5 else "") if ratio <= 1.0 else "FAIL",
        )
    )

    print("(b) 300×451 RGB JPEG q90, disk r=4, --boundary unknown vs skimage RL 30 it ×3")
    a = [*deconv, str(paths["jpeg"]), "-k", DISK, "--boundary", "unknown", "-o", str(out_png)]
    b = [sys.executable, "-c", RL_JPEG, str(paths["jpeg"]), str(paths["disk_psf"])]
    ta, tb, _ = pairs([*a, *common], [*b, f"{out_sk}.png"], args.pairs)
    ratio = statistics.median(x / y for x, y in zip(ta, tb, strict=True))
    rows.append(
        (
            "(b) 300×451 RGB JPEG, unknown boundary, vs RL 30 it ×3",
            f"{statistics.median(ta):.2f} s / {statistics.median(tb):.2f} s",
            f"{ratio:.2f}×",
            "≤ 2.0",
            "PASS" if ratio <= 2.0 else "FAIL",
        )
    )

    print("(c) peak memory of (a)'s command above the same command on 64²")
    small = [*deconv, str(paths["small"]), "-k", MOTION, "-o", str(OUT / "out64.npy"), *common]
    baseline = statistics.median(timed(small)[1] for _ in range(3))
    image_bytes = SIDE * SIDE * 4
    above = (statistics.median(rss) - baseline) * 1024
    multiple = above / image_bytes
    rows.append(
        (
            "(c) peak RSS of (a) above the 64² run",
            f"{statistics.median(rss) / 1024:.0f} MiB − {baseline / 1024:.0f} MiB",
            f"{multiple:.1f}× the image",
            "≤ 12×",
            "PASS" if multiple <= 12 else "FAIL",
        )
    )

    print("\n| test | deconv / skimage | median ratio | target | |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
