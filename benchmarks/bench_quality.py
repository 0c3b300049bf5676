"""Quality: our iterative methods against best-tuned scikit-image.

Issue 3, items 3 and 5, on ``skimage.data.camera`` (512x512, [0, 1]), noise sigma 0.01
(seeded). The peers are tuned on the truth: ``skimage.restoration.richardson_lucy`` at
its best iteration count, ``skimage.restoration.wiener`` at its best ``balance``; the
better of the two is the bar. Our methods run with default parameters (no reference).

- *boundary reflect* (item 3): the full image blurred with the reflect boundary
  (``deconv convolve``'s default), inverted with the same flags.
- *boundary unknown* (item 5): a 512x512 image blurred, its central 448x448 kept, then
  inverted with ``--boundary unknown`` (the method solves for the scene extended by the
  kernel and returns the observed frame).

Prints PSNR (dB) per case and the gain of each of our methods over the bar. Methods are
registry names (default: richardson-lucy, richardson-lucy with ``--tv 0.002``, tv), e.g.
``python benchmarks/bench_quality.py tv tikhonov richardson-lucy+tv=0.002``.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from deconv_cli.inversion import build_problem
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions

NOISE = 0.01
CROP = 448
RL_COUNTS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
BALANCES = np.logspace(-4, 1, 26)
BLURS = {
    "reflect": ("gaussian:sigma=2", "motion:length=15,angle=0", "motion:length=15,angle=30"),
    "unknown": ("gaussian:sigma=2", "motion:length=15,angle=30", "disk:radius=3"),
}


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def make_case(spec: str, boundary: str, seed: int = 0):
    """(truth, blurred observation, kernel) for one blur and boundary."""
    from skimage import data

    image = data.camera().astype(np.float64) / 255
    kernel = load_kernel(spec).array
    blurred = ConvOperator(kernel, image.shape, Geometry.create(boundary="reflect")).forward(image)
    if boundary == "unknown":
        top = (image.shape[0] - CROP) // 2
        left = (image.shape[1] - CROP) // 2
        frame = (slice(top, top + CROP), slice(left, left + CROP))
        image, blurred = image[frame], blurred[frame]
    rng = np.random.default_rng(seed)
    return image, blurred + NOISE * rng.standard_normal(blurred.shape), kernel


def skimage_best(truth: np.ndarray, y: np.ndarray, kernel: np.ndarray) -> dict[str, tuple]:
    """Best PSNR of skimage RL over its iteration count and Wiener over its balance."""
    from skimage.restoration import richardson_lucy, wiener

    rl = max((psnr(truth, richardson_lucy(y, kernel, num_iter=n)), n) for n in RL_COUNTS)
    wi = max((psnr(truth, wiener(y, kernel, balance=b, clip=False)), float(b)) for b in BALANCES)
    return {"skimage RL": rl, "skimage Wiener": wi}


def method_function(name: str):
    """The registered function (importing the method modules that exist)."""
    import importlib

    from deconv_cli import restore

    for module in restore._MODULES:
        try:
            importlib.import_module(f"deconv_cli.restore.{module}")
        except ModuleNotFoundError:
            pass
    return restore.REGISTRY[name].function


def ours(truth, y, kernel, boundary: str, methods: list[str]) -> dict[str, tuple]:
    problem = build_problem(
        kernel, y.shape, Geometry.create(boundary="reflect"), unknown_boundary=boundary == "unknown"
    )
    out = {}
    for label in methods:
        name, _, tv = label.partition("+tv=")  # e.g. richardson-lucy+tv=0.002
        options = RestoreOptions(tv=float(tv)) if tv else RestoreOptions()
        start = time.perf_counter()
        result = method_function(name)(y, problem.op, options)
        seconds = time.perf_counter() - start
        out[label] = (psnr(truth, problem.crop(result.image)), result.iterations, seconds)
    return out


def main(methods: list[str]) -> None:
    print(f"quality, camera, noise sigma {NOISE}; PSNR dB (gain over the better skimage peer)")
    for boundary, specs in BLURS.items():
        gains = {m: [] for m in methods}
        print(f"\n--boundary {boundary}")
        for spec in specs:
            truth, y, kernel = make_case(spec, boundary)
            peers = skimage_best(truth, y, kernel)
            bar = max(v[0] for v in peers.values())
            line = [f"{spec:28}", f"blurred {psnr(truth, y):6.2f}"]
            line += [f"{name} {v[0]:6.2f} ({v[1]:g})" for name, v in peers.items()]
            print("  " + " | ".join(line))
            for name, (value, iterations, seconds) in ours(
                truth, y, kernel, boundary, methods
            ).items():
                gains[name].append(value - bar)
                print(
                    f"      {name:24} {value:6.2f}  {value - bar:+5.2f} dB"
                    f"  ({iterations} iterations, {seconds:.1f} s)"
                )
        for name, values in gains.items():
            print(f"  mean gain {name:16} {np.mean(values):+5.2f} dB  (worst {min(values):+5.2f})")


if __name__ == "__main__":
    main(sys.argv[1:] or ["richardson-lucy", "richardson-lucy+tv=0.002", "tv"])
