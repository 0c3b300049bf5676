"""Richardson-Lucy against skimage.restoration.richardson_lucy, one run, as ratios.

1. Speed: 30 iterations on a 2048x2048 float32 image, 15x15 and 63x63 gaussian PSFs,
   the whole process (load ``.npy``, deconvolve, save ``.npy``). In process: the same
   load and save around ``richardson_lucy`` (ours: ``--tol 0``, the reflect boundary
   the image was blurred with; skimage: ``num_iter=30, clip=False``). As commands:
   ``deconv invert`` against ``python -c`` running skimage, interpreter start included.
   Target: ours >= 2x faster.
2. Time to quality: camera 512x512, gaussian sigma=2, noise sigma 0.01, reflect boundary.
   skimage's best PSNR over its iteration count (tuned on the truth) and its time to
   it, against our time to the same PSNR and our default run (stopping rule, no
   reference). Target: <= 1/4 of skimage's time.

Times are the best of a few runs; the machine may be shared, so only the ratios in
one run mean anything.
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


def time_to_quality() -> None:
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio
    from skimage.restoration import richardson_lucy as sk_richardson_lucy

    def psnr(x):
        return peak_signal_noise_ratio(truth, x, data_range=1.0)

    truth = data.camera() / 255.0
    kernel = load_kernel("gaussian:sigma=2").array
    op = ConvOperator(kernel, truth.shape, Geometry.create())
    y = op.forward(truth) + 0.01 * np.random.default_rng(0).standard_normal(truth.shape)
    print("\ntime to quality: camera 512x512, gaussian sigma=2, noise 0.01, reflect boundary")
    print(f"  blurred input: {psnr(y):.2f} dB")
    counts = range(1, 31)
    scores = [psnr(sk_richardson_lucy(y, kernel, num_iter=n)) for n in counts]
    best = int(np.argmax(scores))
    target, n_sk = scores[best], counts[best]
    t_sk = best_time(lambda: sk_richardson_lucy(y, kernel, num_iter=n_sk), 7)
    print(f"  skimage: best {target:.2f} dB at {n_sk} iterations, {t_sk * 1e3:.1f} ms")

    reached = []
    richardson_lucy(y, op, iterations=100, tol=0, callback=lambda k, x, r: reached.append(psnr(x)))
    k = next((i + 1 for i, value in enumerate(reached) if value >= target), None)
    if k is None:
        print("  ours: never reached it in 100 iterations")
    else:
        t_k = best_time(lambda: richardson_lucy(y, op, iterations=k, tol=0), 7)
        print(
            f"  ours: reaches it at iteration {k} ({reached[k - 1]:.2f} dB) in "
            f"{t_k * 1e3:.1f} ms: {t_k / t_sk:.2f} of skimage's time (target <= 0.25)"
        )
    result = richardson_lucy(y, op)
    t_default = best_time(lambda: richardson_lucy(y, op), 3)
    print(
        f"  ours, default stopping rule: {psnr(result.image):.2f} dB after "
        f"{result.iterations} iterations, {t_default * 1e3:.1f} ms "
        f"(best iterate {max(reached):.2f} dB at {int(np.argmax(reached)) + 1})"
    )


def main() -> None:
    print(
        f"Richardson-Lucy vs skimage (fft workers: {os.environ.get('DECONV_FFT_WORKERS', 'all')})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        speed(Path(tmp))
    time_to_quality()


if __name__ == "__main__":
    main()
