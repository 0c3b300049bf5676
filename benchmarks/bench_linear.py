"""`wiener`/`tikhonov`: speed against one FFT pair, and the automatic parameter against a sweep.

1. Speed: 2048x2048 float32, gaussian sigma=2 (13x13, separable) and disk radius 3 (not
   separable), closed form on the FFT (`wrap`) and DCT (`reflect`) paths, parameter given
   and automatic (GCV / estimated MSE), against one `rfft2` + `irfft2` pair of the same
   size and FFT workers (the issue's target: <= 2x). The pair and the method are timed
   alternately, 9 times each after a warm-up run (imports, first-call costs), and the
   ratio is the median of each method time over the pair time just before it: on a
   shared machine the load changes from moment to moment, and timing the pair once (or
   taking the best of each) would put that change into the ratio.
2. Parameter choice: skimage `camera` (512x512), noise sigma 0.01 (seeded), gaussian sigma=2,
   disk radius 3 and motion length 15 angle 30, with `reflect` (the blur's default: closed
   form for the symmetric kernels, CG for the motion blur) and `unknown` (the central
   448x448 of a 512x512 blur). The automatic parameter against the best of a sweep over
   +-1 decade in 1/4-decade steps (PSNR against the truth): the gap in dB.

Run: .venv/bin/python benchmarks/bench_linear.py [--quick]  (--quick: speed table only)
"""

from __future__ import annotations

import sys
import time

import numpy as np

from deconv_cli.kernels import load_kernel
from deconv_cli.metrics import psnr
from deconv_cli.operators import ConvOperator, Geometry, fft_workers
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.linear import tikhonov, wiener


def paired_times(func, baseline, repeat: int = 9) -> tuple[float, float, float]:
    """Best times of ``func`` and ``baseline``, run alternately after a warm-up run of each,
    and the median ratio of each ``func`` time to the ``baseline`` time just before it."""
    func()
    baseline()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for f, out in ((baseline, times[1]), (func, times[0])):
            start = time.perf_counter()
            f()
            out.append(time.perf_counter() - start)
    ratio = float(np.median(np.divide(times[0], times[1])))
    return min(times[0]), min(times[1]), ratio


def speed() -> None:
    import scipy.fft

    n = 2048
    rng = np.random.default_rng(0)
    image = rng.random((n, n)).astype(np.float32)
    workers = fft_workers()

    def fft_pair():
        spectrum = scipy.fft.rfft2(image, workers=workers)
        return scipy.fft.irfft2(spectrum, s=image.shape, workers=workers)

    print(f"linear methods, {n}x{n} float32, {workers} FFT worker(s)")
    print(
        "ratio = median over 9 alternate runs of the method's time / the time of one "
        "rfft2+irfft2 pair just before it; ms: best times"
    )
    print(
        f"{'kernel':>17} {'boundary':>9} {'method':>9} {'parameter':>10} {'ms':>8} "
        f"{'pair ms':>8} {'ratio':>6}"
    )
    ratios = []
    for spec in ("gaussian:sigma=2", "disk:radius=3"):
        kernel = load_kernel(spec).array
        for boundary in ("wrap", "reflect"):
            geometry = Geometry.create(boundary=boundary)
            op = ConvOperator(kernel, image.shape, geometry, dtype=np.float32)
            noise = rng.standard_normal(image.shape, dtype=np.float32)
            blurred = op.forward(image) + np.float32(0.01) * noise
            for name, method, given in (
                ("wiener", wiener, RestoreOptions(nsr=1e-2)),
                ("wiener", wiener, RestoreOptions()),
                ("tikhonov", tikhonov, RestoreOptions(reg=1e-3)),
                ("tikhonov", tikhonov, RestoreOptions()),
            ):
                seconds, base, ratio = paired_times(
                    lambda m=method, o=given, y=blurred, a=op: m(y, a, o), fft_pair
                )
                label = "given" if (given.nsr or given.reg) else "auto"
                ratios.append((spec, ratio))
                print(
                    f"{spec:>17} {boundary:>9} {name:>9} {label:>10} {seconds * 1e3:8.1f} "
                    f"{base * 1e3:8.1f} {ratio:6.2f}",
                    flush=True,
                )
    for spec in dict(ratios):
        values = [r for s, r in ratios if s == spec]
        print(f"{spec}: ratio {min(values):.2f}-{max(values):.2f} (target <= 2)")


def camera_cases():
    from skimage import data

    truth = data.camera().astype(np.float64) / 255
    for spec in ("gaussian:sigma=2", "disk:radius=3", "motion:length=15,angle=30"):
        kernel = load_kernel(spec).array
        kh, kw = kernel.shape
        rng = np.random.default_rng(1)
        for boundary in ("reflect", "unknown"):
            if boundary == "unknown":
                blur = ConvOperator(kernel, truth.shape, Geometry.create(boundary="reflect"))
                margin = 32
                clean = blur.forward(truth)[margin:-margin, margin:-margin]
                reference = truth[margin:-margin, margin:-margin]
                shape = (clean.shape[0] + kh - 1, clean.shape[1] + kw - 1)
                op = ConvOperator(kernel, shape, Geometry.create(mode="valid"))
                top, left = (kh - 1) // 2, (kw - 1) // 2

                def crop(x, top=top, left=left, h=clean.shape[0], w=clean.shape[1]):
                    return x[top : top + h, left : left + w]
            else:
                op = ConvOperator(kernel, truth.shape, Geometry.create(boundary=boundary))
                clean, reference = op.forward(truth), truth

                def crop(x):
                    return x

            noisy = clean + 0.01 * rng.standard_normal(clean.shape)
            yield spec, boundary, op, noisy, reference, crop


def parameter_choice() -> None:
    print()
    print("automatic parameter vs the best of a sweep (camera 512x512, noise sigma 0.01)")
    print(
        f"{'kernel':>26} {'boundary':>8} {'method':>8} {'auto':>9} {'PSNR':>6} "
        f"{'best':>9} {'PSNR':>6} {'gap dB':>6} {'solver':>24}"
    )
    gaps = []
    for spec, boundary, op, noisy, reference, crop in camera_cases():
        for name, method, key in (("tikhonov", tikhonov, "reg"), ("wiener", wiener, "nsr")):
            result = method(noisy, op, RestoreOptions())
            auto = float(result.params[key])
            auto_psnr = psnr(reference, crop(result.image))
            sweep = auto * 10.0 ** np.arange(-1.0, 1.0001, 0.25)
            values = [
                psnr(reference, crop(method(noisy, op, RestoreOptions(**{key: v})).image))
                for v in sweep
            ]
            i = int(np.argmax(values))
            gap = max(0.0, values[i] - auto_psnr)
            gaps.append((name, gap))
            print(
                f"{spec:>26} {boundary:>8} {name:>8} {auto:9.2e} {auto_psnr:6.2f} "
                f"{sweep[i]:9.2e} {values[i]:6.2f} {gap:6.2f} {result.params['solver']:>24}",
                flush=True,
            )
    for name in ("tikhonov", "wiener"):
        values = [g for n, g in gaps if n == name]
        print(f"{name}: mean gap {np.mean(values):.2f} dB, worst {np.max(values):.2f} dB")


if __name__ == "__main__":
    speed()
    if "--quick" not in sys.argv:
        parameter_choice()
