"""Richardson-Lucy against skimage.restoration.richardson_lucy, one run, as ratios.

Run: .venv/bin/python benchmarks/bench_rl.py [speed] [quality] [large] [stop]
(default: speed and quality).

1. speed: 30 iterations on a 2048x2048 float32 image, 15x15 and 63x63 gaussian PSFs,
   the whole process (load ``.npy``, deconvolve, save ``.npy``). In process: the same
   load and save around ``richardson_lucy`` (ours: ``--tol 0``, the reflect boundary
   the image was blurred with; skimage: ``num_iter=30, clip=False``). As commands:
   ``deconv invert`` against ``python -c`` running skimage, interpreter start included.
   Target: ours >= 2x faster.
2. quality (time to quality): float32 camera, gaussian sigma=2 and motion length 15,
   noise sigma 0.01 and 0.001 (seeded). skimage's best PSNR over 1..300 iterations
   (tuned on the truth) and its time to it, against our time to the same PSNR (within
   0.01 dB) and our default run (stopping rule, no reference). Target: <= 1/4 of
   skimage's time. Cases: reflect and constant boundaries on camera 512x512, where
   skimage's best comes after 1-2 iterations, below the blurred input; and camera in
   a 16-px black frame with the data clipped at 0, where skimage's model is exact
   (zero padding; its missing division by A^T 1 only touches the black frame) and the
   comparison measures convergence speed; there also a 30-degree motion blur, which
   skimage convolves by FFT (a 1x15 kernel it convolves directly, cheaply). The
   'engine' column: how our iteration computes A and A^T (fft: the FFT grid operator;
   spatial: box sums / correlations in space, chosen for thin and small kernels).
   ``large``: the framed case at 2048x2048 too (skimage swept over 1..100).
3. stop: the default stopping rule's PSNR against the best iteration, 4 images x 3 blurs
   x 3 noise levels, reflect and framed-constant (about 10 minutes).

Ours and skimage's are timed alternately; ratios are the median of the per-pair ratios,
times the best. The machine may be shared, so only the ratios in one run mean anything.

Reading the results. Where skimage's model is exact (the framed cases) its RL converges
and the comparison measures speed to quality: Biggs-Andrews acceleration reaches
skimage's best in several times fewer iterations, and one of our iterations (four real
FFTs) costs about one of skimage's when skimage convolves by FFT. For a one-row kernel
skimage convolves directly, cheaply; ours then runs in space too (``A`` and ``Aᵀ`` of a
1x15 motion blur are box sums). At 30° the kernel is not separable and both run by FFT;
our fixed set-up (kernel spectrum, ``Aᵀ1``, buffers) weighs most at noise 0.01, where
few iterations are needed. On camera without a frame skimage's RL is not the model of
the data (it does not divide by ``Aᵀ1``, so the border darkens): its best comes after
1-2 iterations, below the blurred input, and the ratio then compares set-up costs. The
speed target depends on ``scipy.fft`` getting a second core, which a loaded machine
does not give.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore.richardson_lucy import richardson_lucy

KERNELS = ("gaussian:sigma=2.333333,size=15", "gaussian:sigma=10.333333,size=63")
SIZE = 2048
ITERATIONS = 30
KERNELS_0 = ("gaussian:sigma=2", "motion:length=15")
KERNELS_30 = ("motion:length=15,angle=30",)  # not separable: skimage's convolve goes by FFT
NOISES = (0.01, 0.001)
SWEEP = 300
LARGE_SWEEP = 100
REACH_DB = 0.01
FRAME = 16
REPEAT = 5

SKIMAGE_SCRIPT = """
import sys, numpy as np
from skimage.restoration import richardson_lucy
image = np.load(sys.argv[1]); psf = np.load(sys.argv[2]).astype(np.float32)
np.save(sys.argv[3], richardson_lucy(image, psf, num_iter={n}, clip=False))
"""


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def test_image(size: int) -> np.ndarray:
    from skimage import data, transform

    return transform.resize(data.camera() / 255.0, (size, size)).astype(np.float32)


def speed(workdir: Path) -> None:
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    image = test_image(SIZE)
    print(f"\nspeed: {ITERATIONS} iterations, {SIZE}x{SIZE} float32, load + deconvolve + save")
    print(f"{'psf':>7} {'how':>9} {'skimage s':>10} {'deconv s':>9} {'ratio':>6}")
    geometry = Geometry.create()
    out = workdir / "out.npy"
    for spec in KERNELS:
        kernel = load_kernel(spec).array
        size = f"{kernel.shape[0]}x{kernel.shape[1]}"
        blurred = ConvOperator(kernel, image.shape, geometry, dtype=np.float32).forward(image)
        source, psf = workdir / f"blurred{size}.npy", workdir / f"psf{size}.npy"
        np.save(source, np.clip(blurred, 0, None))
        np.save(psf, kernel)

        def ours(kernel=kernel, source=source):
            y = np.load(source)
            op = ConvOperator(kernel, y.shape, geometry, dtype=np.float32)
            np.save(out, richardson_lucy(y, op, iterations=ITERATIONS, tol=0).image)

        def theirs(kernel=kernel, source=source):
            y = np.load(source)
            np.save(out, sk_richardson_lucy(y, kernel.astype(np.float32), ITERATIONS, clip=False))

        t_sk, t_ours = best_time(theirs, 2), best_time(ours, 2)
        print(f"{size:>7} {'library':>9} {t_sk:10.2f} {t_ours:9.2f} {t_sk / t_ours:5.2f}x")

        deconv = [
            str(Path(sys.executable).with_name("deconv")),
            "invert", str(source), "-k", spec, "-m", "richardson-lucy",
            "--iterations", str(ITERATIONS), "--tol", "0", "-o", str(out),
            "--overwrite", "--quiet",
        ]  # fmt: skip
        skimage = [
            sys.executable, "-c", SKIMAGE_SCRIPT.format(n=ITERATIONS),
            str(source), str(psf), str(out),
        ]  # fmt: skip
        try:
            t_sk = best_time(lambda cmd=skimage: subprocess.run(cmd, check=True), 2)
            t_ours = best_time(lambda cmd=deconv: subprocess.run(cmd, check=True), 2)
        except (subprocess.CalledProcessError, OSError) as err:
            print(f"{size:>7} {'commands':>9} (not run: {err})")
            continue
        print(f"{size:>7} {'commands':>9} {t_sk:10.2f} {t_ours:9.2f} {t_sk / t_ours:5.2f}x")


def skimage_trace(y: np.ndarray, psf: np.ndarray, iterations: int, score) -> list[float]:
    """``score`` of skimage's RL iterate after each of ``iterations`` iterations: its loop
    (``restoration.richardson_lucy``, scikit-image 0.26, ``clip=False``) with a score
    per iteration; the caller checks it against the library at the best count."""
    from scipy.signal import convolve

    x = np.full(y.shape, 0.5, dtype=y.dtype)
    mirror = np.flip(psf)
    scores = []
    for _ in range(iterations):
        x *= convolve(y / (convolve(x, psf, mode="same") + 1e-12), mirror, mode="same")
        scores.append(score(x))
    return scores


def paired_times(first, second, repeat: int) -> tuple[float, float, float]:
    """Best times of two functions run alternately, and the median ratio of each ``first``
    time to the ``second`` time just after it (the load changes from moment to moment)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for function, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            function()
            out.append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), float(np.median(np.divide(times[0], times[1])))


def quality_cases(large: bool):
    """(label, truth, boundary, clip, kernels, sweep): the blur's boundary, data clipped at 0."""
    from skimage import data, transform

    camera = (data.camera() / 255.0).astype(np.float32)
    yield "camera 512, reflect", camera, "reflect", False, KERNELS_0, SWEEP
    yield "camera 512, constant", camera, "constant", False, KERNELS_0, SWEEP
    framed = np.pad(camera, FRAME)
    yield "framed 544, constant", framed, "constant", True, KERNELS_0 + KERNELS_30, SWEEP
    if large:
        inner = transform.resize(camera, (2048 - 2 * FRAME,) * 2).astype(np.float32)
        framed = np.pad(inner, FRAME)
        yield "framed 2048, constant", framed, "constant", True, KERNELS_0, LARGE_SWEEP


def time_to_quality(large: bool) -> None:
    print(
        "\ntime to quality, float32. skimage: swept over 1..N iterations, its best PSNR against "
        "the truth\nand its time to it. ours: the first iteration within "
        f"{REACH_DB} dB of that PSNR ('reach', timed by a rerun with --tol 0\nand that "
        "count), the best over the same counts, and the default run (stopping rule, no "
        "reference;\ngap = best - default). ratio = our time to reach / skimage's time, "
        f"median of {REPEAT} alternate runs (target <= 0.25); ms: best times.\nframed: "
        f"camera inside a {FRAME}-px black frame, data clipped "
        "at 0: skimage's model (zero padding, no division by A^T 1, data >= 0)\nis exact."
    )
    print(
        f"{'case':>21} {'kernel':>26} {'noise':>5} {'engine':>7} {'input':>5} | {'skimage':>11} "
        f"{'ms':>6} | {'reach':>5} {'ms':>6} {'ratio':>5} | {'best':>11} | {'default':>11} "
        f"{'ms':>6} {'gap':>5}"
    )
    for label, truth, boundary, clip, kernels, sweep in quality_cases(large):
        for spec in kernels:
            for sigma in NOISES:
                row = quality_row(truth, boundary, clip, spec, sigma, sweep)
                engine = grid_engine(truth, boundary, spec)
                print(f"{label:>21} {spec:>26} {sigma:5g} {engine:>7} {row}", flush=True)


def grid_engine(truth, boundary: str, spec: str) -> str:
    """Which grid operator our Richardson-Lucy runs on."""
    from deconv_cli.operators.grid import grid_operator
    from deconv_cli.operators.spatial import SpatialGridOperator

    kernel = load_kernel(spec).array
    op = ConvOperator(kernel, truth.shape, Geometry.create(boundary=boundary), dtype=np.float32)
    return "spatial" if isinstance(grid_operator(op), SpatialGridOperator) else "fft"


def blurred(truth, boundary: str, clip: bool, spec: str, sigma: float, seed: int = 0):
    """``(op, y)``: float32 data blurred by ``spec`` with ``boundary``, seeded noise."""
    kernel = load_kernel(spec).array
    op = ConvOperator(kernel, truth.shape, Geometry.create(boundary=boundary), dtype=np.float32)
    noise = np.random.default_rng(seed).standard_normal(truth.shape, dtype=np.float32)
    y = op.forward(truth) + np.float32(sigma) * noise
    return op, np.maximum(y, 0) if clip else y


def quality_row(truth, boundary: str, clip: bool, spec: str, sigma: float, sweep: int) -> str:
    from skimage.metrics import peak_signal_noise_ratio
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    def psnr(x):
        return peak_signal_noise_ratio(truth, x, data_range=1.0)

    op, y = blurred(truth, boundary, clip, spec, sigma)
    psf = load_kernel(spec).array.astype(np.float32)
    scores = skimage_trace(y, psf, sweep, psnr)
    n_sk = int(np.argmax(scores)) + 1
    target = scores[n_sk - 1]
    note = ""
    check = psnr(sk_richardson_lucy(y, psf, num_iter=n_sk, clip=False))
    if abs(check - target) > 1e-3:
        note = f"  (skimage's library: {check:.3f} dB, the trace: {target:.3f})"

    def skimage():
        sk_richardson_lucy(y, psf, num_iter=n_sk, clip=False)

    ours: list[float] = []
    richardson_lucy(y, op, iterations=sweep, tol=0, callback=lambda k, x, r: ours.append(psnr(x)))
    best = int(np.argmax(ours)) + 1
    default = richardson_lucy(y, op)
    t_default, t_sk, _ = paired_times(lambda: richardson_lucy(y, op), skimage, REPEAT)
    k = next((i + 1 for i, v in enumerate(ours) if v >= target - REACH_DB), None)
    if k is None:
        reach = f"{'never':>5} {'':>6} {'':>5}"
    else:
        t_k, t_sk2, ratio = paired_times(
            lambda: richardson_lucy(y, op, iterations=k, tol=0), skimage, REPEAT
        )
        t_sk = min(t_sk, t_sk2)
        reach = f"{k:5d} {t_k * 1e3:6.0f} {ratio:5.2f}"
    final = psnr(default.image)
    return (
        f"{psnr(y):5.2f} | {target:5.2f} @{n_sk:4d} {t_sk * 1e3:6.0f} | {reach} | "
        f"{ours[best - 1]:5.2f} @{best:4d} | {final:5.2f} @{default.iterations:4d} "
        f"{t_default * 1e3:6.0f} {ours[best - 1] - final:5.2f}{note}"
    )


def stopping_rule() -> None:
    """The default rule's PSNR against the best over 1..SWEEP iterations, on 72 cases."""
    from skimage import color, data, transform

    images = {
        "camera": data.camera() / 255.0,
        "astronaut": color.rgb2gray(data.astronaut()),
        "coins": transform.resize(data.coins() / 255.0, (512, 512)),
        "moon": data.moon() / 255.0,
    }
    print(
        f"\ndefault stopping rule vs the best iteration (1..{SWEEP}), float32; framed: "
        f"a {FRAME}-px black frame, constant boundary, data clipped at 0"
    )
    print(f"{'image':>9} {'kernel':>17} {'noise':>5} {'case':>7} | {'best':>11} | {'stop':>11} gap")
    gaps: dict[str, list[float]] = {"reflect": [], "framed": []}
    for name, image in images.items():
        for spec in ("gaussian:sigma=2", "motion:length=15", "disk:radius=3"):
            for sigma in (0.01, 0.003, 0.001):
                for case, values in gaps.items():
                    truth = np.pad(image, FRAME) if case == "framed" else image
                    row, gap = stop_row(truth.astype(np.float32), case, spec, sigma)
                    values.append(gap)
                    print(f"{name:>9} {spec:>17} {sigma:5g} {case:>7} | {row}", flush=True)
    for case, values in gaps.items():
        print(f"{case}: gap mean {np.mean(values):.2f} dB, worst {np.max(values):.2f} dB")


def stop_row(truth: np.ndarray, case: str, spec: str, sigma: float) -> tuple[str, float]:
    from skimage.metrics import peak_signal_noise_ratio

    def psnr(x):
        return peak_signal_noise_ratio(truth, x, data_range=1.0)

    framed = case == "framed"
    op, y = blurred(truth, "constant" if framed else "reflect", framed, spec, sigma)
    scores: list[float] = []
    richardson_lucy(y, op, iterations=SWEEP, tol=0, callback=lambda k, x, r: scores.append(psnr(x)))
    result = richardson_lucy(y, op)
    best = int(np.argmax(scores)) + 1
    final = psnr(result.image)
    gap = scores[best - 1] - final
    return (
        f"{scores[best - 1]:5.2f} @{best:4d} | {final:5.2f} @{result.iterations:4d} {gap:5.2f}",
        gap,
    )


def main() -> None:
    print(
        f"Richardson-Lucy vs skimage (fft workers: {os.environ.get('DECONV_FFT_WORKERS', 'all')}; "
        f"load average {os.getloadavg()[0]:.2f})"
    )
    parts = set(sys.argv[1:]) or {"speed", "quality"}
    if "speed" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            speed(Path(tmp))
    if parts & {"quality", "large"}:
        time_to_quality(large="large" in parts)
    if "stop" in parts:
        stopping_rule()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
