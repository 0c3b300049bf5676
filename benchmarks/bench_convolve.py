"""`convolve` against scipy.ndimage.convolve and scipy.signal.fftconvolve, one run, as ratios.

2048x2048 float32 image, 15x15 and 63x63 gaussian kernels. Each peer is compared on the
boundary it computes: ndimage with `reflect`, fftconvolve with zeros (`constant`); the
outputs are checked to agree before a time is reported. Times are the best of a few runs.

The engine column says how deconv computed it: the separable path (a gaussian is two 1-D
passes) or the FFT (lengths ``2^a·3^b·5``, against fftconvolve's own choice of lengths;
both are a few real FFTs of the padded size, deconv's kernel spectrum costing about half
an image transform more).
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
from scipy import ndimage, signal

from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry


def best_time(func, repeat: int) -> tuple[float, np.ndarray]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    image = np.random.default_rng(0).random((2048, 2048)).astype(np.float32)
    print("convolve, 2048x2048 float32 (best of runs; ratio = peer time / deconv time)")
    print(f"{'kernel':>8} {'peer':>22} {'peer s':>8} {'deconv s':>9} {'engine':>10} {'ratio':>6}")
    for sigma, size in ((7 / 3, 15), (31 / 3, 63)):
        kernel = load_kernel(f"gaussian:sigma={sigma:.6f},size={size}").array
        k32 = kernel.astype(np.float32)
        peers = [
            ("ndimage.convolve", "reflect", partial(ndimage.convolve, image, k32, mode="reflect")),
            ("signal.fftconvolve", "constant", partial(signal.fftconvolve, image, k32, "same")),
        ]
        for name, boundary, peer in peers:
            repeat = 1 if (name.startswith("ndimage") and size > 20) else 3
            peer_s, expected = best_time(peer, repeat)
            geometry = Geometry.create(boundary=boundary)

            def ours(geometry=geometry, kernel=kernel):
                op = ConvOperator(kernel, image.shape, geometry, dtype=np.float32)
                return op.forward(image), op.engine

            ours_s, (out, engine) = best_time(ours, 3)
            err = float(np.max(np.abs(out - expected)))
            if err > 1e-4:
                raise SystemExit(f"outputs differ by {err:.2e} for {name}")
            print(
                f"{size:>5}x{size:<2} {name:>22} {peer_s:8.3f} {ours_s:9.3f} {engine:>10} "
                f"{peer_s / ours_s:5.1f}x"
            )


if __name__ == "__main__":
    main()
