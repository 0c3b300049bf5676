"""Tiles: exactness and speed of tiled A/Aᵀ, the error of a tiled invert, peak memory.

Sections (run all, or name some):

``exact``     4096x4096 float64: tiled convolve/transpose against untiled (max relative
              gap, time ratio), gaussian sigma=3 and disk radius 5, reflect and wrap.
``quality``   Tiled invert against untiled: camera (skimage) upscaled to 1024x1024
              (order 3), blurred, seeded gaussian noise; tiles of 256, margins of 1, 2, 3
              and 5 kernel extents; wiener, tikhonov, tv, richardson-lucy. At 1024x1024 the
              parameter crop (1024) is the whole image, so this is the tiling error alone.
``parameters`` 2048x2048, tiles of 512, default margin: automatic parameters chosen on
              the central 1024x1024 crop against the untiled run's (the whole image's).
``calibrate`` Peak memory of untiled jobs (process_file, .npy in and out) per command and
              method: a fixed part plus copies of the image, fitted on two sizes, to
              calibrate ``memory.estimate_bytes``.
``memory``    Peak memory and time of a wiener invert, 4096x4096 and 8192x8192 float32:
              the ``deconv`` command untiled, with ``--tile 1024`` to .npy (input and
              output memory-mapped) and with ``--tile 1024`` to a float32 .tif (in memory).

Each job runs in a child process: ``ru_maxrss`` (every resident page, memory-mapped
files included) from ``os.wait4``, and the peak of its ``RssAnon`` (allocated memory
only: arrays, FFT buffers; file pages excluded) sampled every 5 ms. A child's
``ru_maxrss`` is at least its parent's RSS when it was started (Linux keeps the high-water
mark across exec): the "imports only" row shows that floor.

Run: .venv/bin/python benchmarks/bench_tiles.py [exact] [quality] [parameters] [calibrate]
     [memory]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deconv_cli.inversion import build_problem, invert
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions
from deconv_cli.tiled_invert import tiled_invert
from deconv_cli.tiles import tiled_adjoint, tiled_forward

# -- exact ---------------------------------------------------------------------------


def exact() -> None:
    n = 4096
    x = np.random.default_rng(0).random((n, n))
    print(f"tiled vs untiled A and Aᵀ, {n}x{n} float64 (time ratio = tiled / untiled)")
    print(
        f"{'kernel':>17} {'boundary':>8} {'engine':>9} {'tile':>5} {'gap A':>8} "
        f"{'gap Aᵀ':>8} {'ratio A':>8} {'ratio Aᵀ':>8}"
    )
    for spec in ("gaussian:sigma=3", "disk:radius=5"):
        kernel = load_kernel(spec).array
        for boundary in ("reflect", "wrap"):
            op = ConvOperator(kernel, x.shape, Geometry.create(boundary=boundary))
            start = time.perf_counter()
            forward = op.forward(x)
            t_forward = time.perf_counter() - start
            start = time.perf_counter()
            adjoint = op.adjoint(x)
            t_adjoint = time.perf_counter() - start
            for tile in (512, 1000):
                start = time.perf_counter()
                tiled = tiled_forward(op, x, tile)
                r_forward = (time.perf_counter() - start) / t_forward
                gap_forward = np.abs(tiled - forward).max() / np.abs(forward).max()
                start = time.perf_counter()
                tiled = tiled_adjoint(op, x, tile)
                r_adjoint = (time.perf_counter() - start) / t_adjoint
                gap_adjoint = np.abs(tiled - adjoint).max() / np.abs(adjoint).max()
                print(
                    f"{spec:>17} {boundary:>8} {op.engine:>9} {tile:>5} {gap_forward:8.1e} "
                    f"{gap_adjoint:8.1e} {r_forward:8.2f} {r_adjoint:8.2f}"
                )


# -- quality ---------------------------------------------------------------------------

QUALITY_CASES = [
    # (kernel, boundary, noise sigma)
    ("gaussian:sigma=2", "reflect", 0.01),
    ("gaussian:sigma=2", "reflect", 0.001),
    ("disk:radius=4", "reflect", 0.01),
    ("motion:length=15,angle=30", "reflect", 0.01),
    ("gaussian:sigma=2", "wrap", 0.01),
    ("gaussian:sigma=2", "constant", 0.01),
    ("gaussian:sigma=2", "unknown", 0.01),
]
QUALITY_METHODS = ("wiener", "tikhonov", "tv", "richardson-lucy")


def scene(n: int) -> np.ndarray:
    from skimage import data, transform

    return transform.resize(data.camera() / 255.0, (n, n), order=3)


def blurred(n: int, spec: str, boundary: str, sigma: float):
    """``(y, kernel, geometry, unknown)``: the blurred, noisy scene and its model."""
    kernel = load_kernel(spec).array
    unknown = boundary == "unknown"
    geometry = Geometry.create(boundary="reflect" if unknown else boundary)
    x = scene(n)
    if unknown:  # the central n x n of the blur of a larger scene
        pad = 64
        big = np.pad(x, pad, mode="reflect")
        y = ConvOperator(kernel, big.shape, geometry).forward(big)[pad:-pad, pad:-pad]
    else:
        y = ConvOperator(kernel, x.shape, geometry).forward(x)
    y = y + sigma * np.random.default_rng(0).standard_normal(y.shape)
    return y, kernel, geometry, unknown


def compare(tiled: np.ndarray, untiled: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, peak 1) and max abs difference of the tiled result against the untiled."""
    diff = tiled - untiled
    rmse = float(np.sqrt(np.mean(diff**2)))
    return (20 * np.log10(1 / rmse) if rmse > 0 else float("inf")), float(np.abs(diff).max())


def quality() -> None:
    n, tile = 1024, 256
    print(
        f"tiled invert vs untiled: {n}x{n} camera, tiles of {tile}; PSNR (dB, peak 1) and "
        "max |difference| against the untiled result"
    )
    print("| kernel | boundary | noise σ | method | margin | PSNR vs untiled | max abs |")
    print("|---|---|---|---|---|---|---|")
    for spec, boundary, sigma in QUALITY_CASES:
        y, kernel, geometry, unknown = blurred(n, spec, boundary, sigma)
        extent = max(ConvOperator(kernel, y.shape, geometry).effective.shape[2:])
        problem = build_problem(kernel, y.shape, geometry, unknown_boundary=unknown)
        for method in QUALITY_METHODS:
            untiled = invert(y, problem, method, RestoreOptions()).image
            for factor in (1, 2, 3, 5):
                margin = factor * extent
                result = tiled_invert(
                    y,
                    kernel,
                    geometry,
                    method,
                    RestoreOptions(),
                    tile,
                    margin=margin,
                    unknown_boundary=unknown,
                )
                psnr, worst = compare(result.image, untiled)
                print(
                    f"| {spec} | {boundary} | {sigma:g} | {method} | {factor}× ({margin}) "
                    f"| {psnr:.1f} | {worst:.1e} |",
                    flush=True,
                )


def parameters() -> None:
    n, tile = 2048, 512
    print(
        f"automatic parameters, {n}x{n}, tiles of {tile}, default margin "
        "(chosen on the central 1024x1024 crop vs the whole image); time ratio tiled/untiled"
    )
    print(
        "| kernel | boundary | noise σ | method | parameter untiled → tiled | PSNR vs untiled "
        "| max abs | time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for spec, boundary, sigma in QUALITY_CASES[:2]:
        y, kernel, geometry, unknown = blurred(n, spec, boundary, sigma)
        problem = build_problem(kernel, y.shape, geometry, unknown_boundary=unknown)
        for method in QUALITY_METHODS:
            small = y[:256, :256]  # warm-up: imports and first-call costs outside the timing
            invert(small, build_problem(kernel, small.shape, geometry), method, RestoreOptions())
            start = time.perf_counter()
            untiled = invert(y, problem, method, RestoreOptions())
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            result = tiled_invert(y, kernel, geometry, method, RestoreOptions(), tile)
            ratio = (time.perf_counter() - start) / seconds
            psnr, worst = compare(result.image, untiled.image)
            print(
                f"| {spec} | {boundary} | {sigma:g} | {method} | {_parameter(untiled)} → "
                f"{_parameter(result)} | {psnr:.1f} | {worst:.1e} | {ratio:.1f}× |",
                flush=True,
            )


def _parameter(result) -> str:
    for name in ("nsr", "reg", "lam"):
        if name in result.params:
            return f"{name} {result.params[name]:.3g}"
    return f"{result.iterations} iterations"


# -- memory ------------------------------------------------------------------------------

CHILD = r"""
import json, sys

args = json.loads(sys.argv[1])
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import Geometry
from deconv_cli.process import Convolve, Invert, Transpose, process_file
from deconv_cli.restore import RestoreOptions, methods
import scipy.fft, scipy.ndimage, skimage.restoration  # noqa: F401

methods()
kernel = load_kernel(args["kernel"])
geometry = Geometry.create(boundary=args["boundary"])
if args["run"] == "untiled":
    if args["command"] == "convolve":
        transform = Convolve(kernel, geometry)
    elif args["command"] == "transpose":
        transform = Transpose(kernel, geometry)
    else:
        transform = Invert(kernel, geometry, args["method"], RestoreOptions())
    process_file(args["input"], args["output"], transform, overwrite=True)
"""


def measure(command: list[str]) -> dict:
    """Run ``command``; its wall time, ``ru_maxrss`` and the peak ``RssAnon`` (every 5 ms)."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        anon = 0
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{child.pid}/status") as fh:
                    for line in fh:
                        if line.startswith("RssAnon:"):
                            anon = max(anon, int(line.split()[1]) * 1024)
            except OSError:
                pass
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            errors.seek(0)
            raise RuntimeError(errors.read().decode().strip().splitlines()[-1])
    return {"seconds": seconds, "maxrss": usage.ru_maxrss * 1024, "anon": anon}


def run_child(**args) -> dict:
    """A job of :data:`CHILD` in a fresh Python process (``run="none"``: imports only)."""
    return measure([sys.executable, "-c", CHILD, json.dumps(args)])


def write_input(path: Path, n: int, dtype) -> None:
    """Camera upscaled to ``n x n``, blurred (gaussian sigma=2, reflect), seeded noise 0.01.

    Made in a child process: Linux carries a parent's peak RSS into the ``ru_maxrss`` of
    the children it starts, so the benchmark itself must stay small.
    """
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import bench_tiles as b; "
        "from deconv_cli.kernels import load_kernel; "
        "n, dtype = int(sys.argv[3]), np.dtype(sys.argv[4]); "
        "op = b.ConvOperator(load_kernel('gaussian:sigma=2').array, (n, n), b.Geometry()); "
        "y = op.forward(b.scene(n)) + 0.01 * np.random.default_rng(0).standard_normal((n, n)); "
        "np.save(sys.argv[2], y.astype(dtype))"
    )
    folder = str(Path(__file__).parent)
    subprocess.run(
        [sys.executable, "-c", script, folder, str(path), str(n), np.dtype(dtype).name], check=True
    )


CALIBRATION_JOBS = [
    ("convolve", None, "gaussian:sigma=2", "reflect"),
    ("convolve", None, "disk:radius=5", "reflect"),
    ("transpose", None, "gaussian:sigma=2", "reflect"),
    ("transpose", None, "disk:radius=5", "wrap"),
    ("invert", "wiener", "gaussian:sigma=2", "reflect"),
    ("invert", "wiener", "gaussian:sigma=2", "wrap"),
    ("invert", "wiener", "motion:length=15,angle=30", "reflect"),
    ("invert", "tikhonov", "gaussian:sigma=2", "reflect"),
    ("invert", "tikhonov", "motion:length=15,angle=30", "reflect"),
    ("invert", "inverse", "gaussian:sigma=1", "wrap"),
    ("invert", "tv", "gaussian:sigma=2", "reflect"),
    ("invert", "tv", "motion:length=15,angle=30", "reflect"),
    ("invert", "richardson-lucy", "gaussian:sigma=2", "reflect"),
    ("invert", "richardson-lucy", "motion:length=15,angle=30", "reflect"),
    ("invert", "cgls", "gaussian:sigma=2", "reflect"),
    ("invert", "lsqr", "gaussian:sigma=2", "reflect"),
    ("invert", "auto", "gaussian:sigma=2", "reflect"),
]


def calibrate() -> None:
    sizes = (1024, 2048)
    with tempfile.TemporaryDirectory() as folder:
        base = run_child(run="none", kernel="gaussian:sigma=2", boundary="reflect")
        print(
            f"untiled jobs: peak RssAnon above the imports' ({base['anon'] / 2**20:.0f} MiB) "
            f"= fixed + copies x image bytes, fitted on {sizes[0]}x{sizes[0]} and "
            f"{sizes[1]}x{sizes[1]}"
        )
        print(
            "| command | method | kernel | boundary | float64 copies (+ MiB) "
            "| float32 copies (+ MiB) |"
        )
        print("|---|---|---|---|---|---|")
        sources = {}
        for dtype in (np.float64, np.float32):
            for n in sizes:
                sources[dtype, n] = Path(folder) / f"in-{np.dtype(dtype).name}-{n}.npy"
                write_input(sources[dtype, n], n, dtype)
        for command, method, kernel, boundary in CALIBRATION_JOBS:
            fits = []
            for dtype in (np.float64, np.float32):
                points = []
                for n in sizes:
                    got = run_child(
                        run="untiled",
                        command=command,
                        method=method,
                        kernel=kernel,
                        boundary=boundary,
                        input=str(sources[dtype, n]),
                        output=str(Path(folder) / "out.npy"),
                    )
                    points.append((n * n * np.dtype(dtype).itemsize, got["anon"] - base["anon"]))
                (b0, m0), (b1, m1) = points
                copies = (m1 - m0) / (b1 - b0)
                fits.append(f"{copies:.1f} (+{(m0 - copies * b0) / 2**20:.0f})")
            print(
                f"| {command} | {method or ''} | {kernel} | {boundary} | {' | '.join(fits)} |",
                flush=True,
            )


def memory() -> None:
    deconv = str(Path(sys.executable).parent / "deconv")
    spec, tile = "gaussian:sigma=2", 1024
    with tempfile.TemporaryDirectory() as folder:
        print(
            f"peak memory, deconv invert --method wiener -k {spec} (reflect), float32 .npy "
            f"in: untiled, with --tile {tile} to .npy (memory-mapped input and output) and "
            "with --tile to a float32 .tif (input and output in memory)"
        )
        print(
            "| image | run | time (s) | time ratio | peak RSS (MiB) | peak allocated "
            "(RssAnon, MiB) |"
        )
        print("|---|---|---|---|---|---|")
        base = run_child(run="none", kernel=spec, boundary="reflect")
        print(
            f"| — | imports only | | | {base['maxrss'] / 2**20:.0f} | {base['anon'] / 2**20:.0f} |"
        )
        for n in (4096, 8192):
            source, target = Path(folder) / f"in{n}.npy", Path(folder) / "out.npy"
            write_input(source, n, np.float32)
            cli = [deconv, "invert", str(source), "-k", spec, "--method", "wiener"]
            cli += ["--overwrite", "--quiet", "-o"]
            tiled = ["--tile", str(tile)]
            tif = str(Path(folder) / "out.tif")
            runs = {
                "untiled": measure(cli + [str(target)]),
                f"--tile {tile}, .npy out (mapped)": measure(cli + [str(target)] + tiled),
                f"--tile {tile}, .tif out": measure(cli + [tif] + tiled),
            }
            for name, got in runs.items():
                ratio = got["seconds"] / runs["untiled"]["seconds"]
                print(
                    f"| {n}x{n} ({n * n * 4 / 2**20:.0f} MiB) | {name} | {got['seconds']:.1f} "
                    f"| {ratio:.2f} | {got['maxrss'] / 2**20:.0f} | {got['anon'] / 2**20:.0f} |",
                    flush=True,
                )
            source.unlink()


SECTIONS = {
    "exact": exact,
    "quality": quality,
    "parameters": parameters,
    "calibrate": calibrate,
    "memory": memory,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or SECTIONS:
        SECTIONS[name]()
