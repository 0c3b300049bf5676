"""Volumes (z-stacks) against scikit-image, side by side in one run, as ratios.

Run: .venv/bin/python benchmarks/bench_volumes.py [speed] [quality] [levels] [large]
[--full] (default: all four, ``large`` scaled down; ``--full`` runs ``large`` at the
issue's 512x1024x1024 in 4 GiB).

1. speed: Richardson-Lucy, 10 iterations, a 64x256x256 float32 stack, an anisotropic
   15x15x15 gaussian PSF (sigma 1.5 across, 2.33 planes along z). The whole command,
   interpreter start included: ``deconv invert stack.npy --axes ZYX -m
   richardson-lucy --iterations 10 --tol 0 -o out.npy`` against ``python -c`` loading
   the same ``.npy``, running ``skimage.restoration.richardson_lucy(num_iter=10,
   clip=False)`` and saving. Alternated A/B; the median of the paired ratios.
   Target: ours <= 0.33x skimage's time.
2. quality: a phantom (``binary_blobs(n_dim=3)``, smoothed) 96x128x128 blurred by the
   PSF above (reflect boundary), the central 48 planes cut out (a stack from a thicker
   sample), Poisson noise at 10^4 photons for the brightest voxel (seeded). PSNR
   against the truth's same planes of: the blurred data; skimage's RL at its best
   iteration count on the truth (swept 1..60); our ``invert --boundary unknown``
   (the default method) and ``-m richardson-lucy --iterations 60 --tol 0 --boundary
   unknown`` (a plain boundary-aware RL). Targets: the default >= skimage's best +
   1 dB, and >= the 60-iteration RL + 0.5 dB.
   levels: the same at 10², 10³ and 10⁴ photons: the default, Richardson-Lucy with
   its stopping rule (the Poisson discrepancy principle), and its best iteration on
   the truth and its 60th (a sweep in process).
3. large: a uint16 ImageJ TIFF stack (smooth random structure) convolved and inverted
   (Wiener with a given NSR; Richardson-Lucy, 10 iterations) with ``--tile``, uint16
   TIFF out, under an address-space limit (``prlimit --as``), streamed box by box
   between the files: scaled down by default (64x256x256, tiles 32x128x128, in 4 GiB,
   each result against the untiled run's: the largest gap in uint16 steps), the
   issue's 512x1024x1024 (1 GiB) in 4 GiB with ``--full`` (tiles 64x256x256;
   convolve and Wiener: Richardson-Lucy would take hours here). Peak resident memory
   from ``/usr/bin/time -v``. The stack is written to a temporary directory
   (``--full``: 1 GiB in, 1 GiB out) and removed.

Commands are found beside this interpreter (``.venv/bin/deconv``).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PSF_SPEC = "gaussian:sigma=1.5,size=15,sigma_z=2.333333"
SPEED_SHAPE = (64, 256, 256)
ITERATIONS = 10
PAIRS = 3
THICK = (96, 128, 128)
CUT = 48
PHOTONS = 10000.0
SWEEP = (1, 2, 3, 4, 6, 8, 10, 15, 20, 30, 45, 60)
LEVELS = (100.0, 1000.0, 10000.0)
LARGE = ((64, 256, 256), "32x128x128", 4.0)  # shape, tile, GiB
FULL = ((512, 1024, 1024), "64x256x256", 4.0)
DECONV = str(Path(sys.executable).with_name("deconv"))

SKIMAGE_RL = """
import sys, numpy as np
from skimage.restoration import richardson_lucy
stack, psf = np.load(sys.argv[1]), np.load(sys.argv[2])
np.save(sys.argv[3], richardson_lucy(stack, psf, num_iter=int(sys.argv[4]), clip=False))
"""


def psf() -> np.ndarray:
    from deconv_cli.kernels import load_kernel

    return load_kernel(PSF_SPEC, volume=True).array


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def phantom(shape, seed=0) -> np.ndarray:
    """Smoothed 3-D blobs on [0.1, 1]: sharp-edged objects, a dim background."""
    from scipy import ndimage
    from skimage.data import binary_blobs

    side = max(shape)
    blobs = binary_blobs(side, blob_size_fraction=0.12, n_dim=3, volume_fraction=0.3, rng=seed)
    blobs = blobs[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    return 0.1 + 0.9 * ndimage.gaussian_filter(blobs, 0.7)


def speed(folder: Path) -> None:
    from scipy import ndimage

    kernel = psf()
    stack = ndimage.convolve(phantom(SPEED_SHAPE), kernel, mode="reflect").astype(np.float32)
    paths = {name: folder / f"{name}.npy" for name in ("stack", "psf", "ours", "skimage")}
    np.save(paths["stack"], stack)
    np.save(paths["psf"], kernel.astype(np.float32))
    ours = [DECONV, "invert", str(paths["stack"]), "--axes", "ZYX", "-k", str(paths["psf"])]
    ours += ["-m", "richardson-lucy", "--iterations", str(ITERATIONS), "--tol", "0"]
    ours += ["-o", str(paths["ours"]), "--overwrite", "-q"]
    theirs = [sys.executable, "-c", SKIMAGE_RL, str(paths["stack"]), str(paths["psf"])]
    theirs += [str(paths["skimage"]), str(ITERATIONS)]
    pairs = []
    for _ in range(PAIRS):
        a, b = timed(theirs), timed(ours)
        pairs.append((a, b))
    ratio = statistics.median(b / a for a, b in pairs)
    best_a, best_b = min(a for a, _ in pairs), min(b for _, b in pairs)
    print(
        f"speed: RL {ITERATIONS} iterations, {'x'.join(map(str, SPEED_SHAPE))} float32, "
        f"PSF {'x'.join(map(str, kernel.shape))} ({PSF_SPEC}), whole command"
    )
    print(f"  skimage richardson_lucy: {best_a:.2f} s (best of {PAIRS})")
    print(f"  deconv invert -m richardson-lucy: {best_b:.2f} s (best of {PAIRS})")
    print(f"  ratio ours/skimage: {ratio:.2f}x (median of {PAIRS} paired runs; target <= 0.33x)")


def psnr(truth: np.ndarray, estimate: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return peak_signal_noise_ratio(truth, estimate, data_range=float(np.ptp(truth)))


def cut_phantom(photons: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, data, PSF): the phantom blurred by the PSF (reflect), its central planes
    cut out, Poisson noise at ``photons`` for the brightest voxel (seeded)."""
    from scipy import ndimage

    kernel = psf()
    truth_thick = phantom(THICK, seed=1)
    blurred_thick = ndimage.convolve(truth_thick, kernel, mode="reflect")
    z0 = (THICK[0] - CUT) // 2
    truth, clean = truth_thick[z0 : z0 + CUT], blurred_thick[z0 : z0 + CUT]
    rng = np.random.default_rng(2)
    scale = photons / clean.max()
    return truth, (rng.poisson(clean * scale) / scale).astype(np.float32), kernel


def invert_unknown(folder: Path, truth: np.ndarray, extra: list[str]) -> tuple[float, str]:
    """PSNR of ``deconv invert cut.npy --boundary unknown [extra]`` and a note (seconds,
    the method, the iterations), or NaN and the error."""
    out = folder / "restored.npy"
    command = [DECONV, "invert", str(folder / "cut.npy"), "--axes", "ZYX"]
    command += ["-k", str(folder / "psf.npy"), "--boundary", "unknown", *extra]
    command += ["-o", str(out), "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return float("nan"), done.stderr.strip().splitlines()[-1]
    method = re.search(r"method: (\S+)", done.stderr)
    count = re.search(r"iterations: (\d+)", done.stderr)
    note = f"{seconds:.1f} s" + (f", {method.group(1)}" if method else "")
    note += f", {count.group(1)} it" if count else ""
    return psnr(truth, np.load(out)), note


DEFAULT = ("deconv invert --boundary unknown (default)", [])
RL60 = (
    "deconv invert -m richardson-lucy, 60 it, --boundary unknown",
    ["-m", "richardson-lucy", "--iterations", "60", "--tol", "0"],
)
RL_RULE = ("deconv invert -m richardson-lucy (its stopping rule)", ["-m", "richardson-lucy"])


def quality(folder: Path) -> None:
    from skimage.restoration import richardson_lucy

    truth, data, kernel = cut_phantom(PHOTONS)
    np.save(folder / "cut.npy", data)
    np.save(folder / "psf.npy", kernel)
    rows = [("blurred data (no restoration)", psnr(truth, data), "")]
    scores = {
        n: psnr(truth, richardson_lucy(data, kernel.astype(np.float32), num_iter=n, clip=False))
        for n in SWEEP
    }
    best = max(scores, key=scores.get)
    rows.append(("skimage richardson_lucy, best on the truth", scores[best], f"{best} it"))
    for label, extra in (DEFAULT, RL60):
        rows.append((label, *invert_unknown(folder, truth, extra)))
    print(
        f"\nquality: phantom {'x'.join(map(str, THICK))} blurred by {PSF_SPEC}, the central "
        f"{CUT} planes cut out, Poisson {PHOTONS:g} photons at the peak (seeded)"
    )
    for label, value, note in rows:
        print(f"  {label:<62} {value:6.2f} dB  {note}")
    default, rl60 = rows[2][1], rows[3][1]
    print(
        f"  default - skimage best: {default - scores[best]:+.2f} dB (target >= +1); "
        f"default - RL 60: {default - rl60:+.2f} dB (target >= +0.5)"
    )


def rl_sweep(truth: np.ndarray, data: np.ndarray, kernel: np.ndarray, n: int) -> list[float]:
    """PSNR after each of ``n`` Richardson-Lucy iterations, the unknown boundary."""
    from deconv_cli.inversion import build_problem
    from deconv_cli.operators import Geometry
    from deconv_cli.restore.richardson_lucy import richardson_lucy

    problem = build_problem(
        kernel, data.shape, Geometry.create(), unknown_boundary=True, spatial=3, dtype=np.float32
    )
    scores: list[float] = []

    def score(k, x, residual):
        scores.append(psnr(truth, problem.crop(x)))

    richardson_lucy(data, problem.op, iterations=n, tol=0, callback=score)
    return scores


def levels(folder: Path) -> None:
    """The quality case at 10², 10³ and 10⁴ photons: the default, Richardson-Lucy with
    its stopping rule, its best iteration on the truth (a sweep of 1..60, in process)
    and 60 iterations."""
    print(f"\nlevels: the quality case at {', '.join(f'{p:g}' for p in LEVELS)} photons")
    for photons in LEVELS:
        truth, data, kernel = cut_phantom(photons)
        np.save(folder / "cut.npy", data)
        np.save(folder / "psf.npy", kernel)
        sweep = rl_sweep(truth, data, kernel, 60)
        best = int(np.argmax(sweep))
        rows = [("blurred data", psnr(truth, data), "")]
        for label, extra in (DEFAULT, RL_RULE):
            rows.append((label, *invert_unknown(folder, truth, extra)))
        rows.append(("richardson-lucy, best iteration on the truth", sweep[best], f"{best + 1} it"))
        rows.append(("richardson-lucy, 60 it", sweep[-1], ""))
        print(f"  {photons:g} photons at the peak")
        for label, value, note in rows:
            print(f"    {label:<60} {value:6.2f} dB  {note}")
        print(
            f"    default - RL best: {rows[1][1] - sweep[best]:+.2f} dB; default - RL 60: "
            f"{rows[1][1] - sweep[-1]:+.2f} dB; RL's rule - RL best: "
            f"{rows[2][1] - sweep[best]:+.2f} dB"
        )


def peak_rss_under_limit(command: list[str], gib: float) -> tuple[int, float, int, str]:
    """Run under ``prlimit --as`` and ``/usr/bin/time -v``: (exit code, seconds, peak RSS
    bytes, last stderr line)."""
    limit = int(gib * 2**30)
    wrapped = ["prlimit", f"--as={limit}", "/usr/bin/time", "-v", *command]
    start = time.perf_counter()
    done = subprocess.run(wrapped, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    lines = [
        line for line in done.stderr.splitlines() if line.strip() and not line.startswith("\t")
    ]
    errors = [line for line in lines if line.startswith("deconv:")]
    return done.returncode, seconds, int(rss.group(1)) * 1024 if rss else 0, errors[-1:]


def write_stack(path: Path, shape: tuple[int, ...]) -> None:
    """A uint16 ImageJ TIFF of smooth random structure, written 16 planes at a time
    (never the whole stack in memory)."""
    import tifffile
    from scipy import ndimage

    tifffile.imwrite(path, shape=shape, dtype=np.uint16, imagej=True, metadata={"axes": "ZYX"})
    stack = tifffile.memmap(path, mode="r+")
    rng = np.random.default_rng(3)
    for z in range(0, shape[0], 16):
        slab = ndimage.gaussian_filter(rng.random((min(16, shape[0] - z),) + shape[1:]), 2)
        slab = (slab - slab.min()) / np.ptp(slab)
        stack[z : z + slab.shape[0]] = np.rint(2000 + 30000 * slab).astype(np.uint16)
    stack.flush()
    del stack


LARGE_JOBS = {
    "convolve": ["convolve"],
    "invert -m wiener --nsr 1e-3": ["invert", "-m", "wiener", "--nsr", "1e-3"],
    "invert -m richardson-lucy, 10 it": [
        "invert",
        *("-m", "richardson-lucy", "--iterations", "10", "--tol", "0"),
    ],
}


def large(folder: Path, full: bool) -> None:
    import tifffile

    shape, tile, gib = FULL if full else LARGE
    stack = folder / "big.tif"
    write_stack(stack, shape)
    np.save(folder / "psf.npy", psf())
    size = f"{'x'.join(map(str, shape))} uint16 TIFF ({np.prod(shape) * 2 / 2**30:.2f} GiB)"
    print(f"\nlarge: {size}, --tile {tile}, address space limited to {gib:g} GiB")
    voxels = ["--max-pixels", str(int(np.prod(shape)))]
    for label, job in LARGE_JOBS.items():
        if full and "richardson" in label:
            continue  # hours at this size here: the scaled-down run compares it
        out = folder / "tiled.tif"
        command = [DECONV, *voxels, *job[:1], str(stack), "-k", str(folder / "psf.npy")]
        command += [*job[1:], "--tile", tile, "-o", str(out), "--overwrite", "-q"]
        code, seconds, rss, last = peak_rss_under_limit(command, gib)
        state = "ok" if code == 0 else f"exit {code}: {' '.join(last)}"
        print(f"  {label:<34} {seconds:7.1f} s, peak RSS {rss / 2**30:.2f} GiB, {state}")
        if code != 0 or full:
            out.unlink(missing_ok=True)
            continue
        untiled = folder / "untiled.tif"
        whole = [arg for arg in command if arg not in ("--tile", tile)]
        whole[whole.index(str(out))] = str(untiled)
        subprocess.run(whole, check=True)
        a = tifffile.imread(out).astype(np.int64)
        b = tifffile.imread(untiled).astype(np.int64)
        gap = np.abs(a - b)
        print(
            f"    tiled vs untiled (uint16): max gap {gap.max()} (of 65535), "
            f"{np.count_nonzero(gap) / gap.size:.2e} of the voxels differ"
        )
        out.unlink()
        untiled.unlink()


def main(argv: list[str]) -> int:
    full = "--full" in argv
    parts = [a for a in argv if a != "--full"] or ["speed", "quality", "levels", "large"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for part in parts:
            if part == "large":
                large(folder, full)
            else:
                {"speed": speed, "quality": quality, "levels": levels}[part](folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
