"""`analyze` of a conv layer: a 3x3, 64->64-channel bank on a 32x32 input with `wrap`.

The operator has 65,536 unknowns; its singular values come exactly from 32x17 SVDs of
64x64 complex matrices (one per frequency of the real FFT's half spectrum). The
target is a few seconds. Also times the stride-2 layer (polyphase: 16x9 SVDs of
64x256 matrices) and checks both against the per-frequency SVD done here with numpy.
"""

from __future__ import annotations

import time

import numpy as np

from deconv_cli.analysis import analyze
from deconv_cli.operators import ConvOperator, Geometry


def best_time(func, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return min(times), out


def reference_sigma(bank: np.ndarray, size: int) -> tuple[float, float]:
    """Extreme singular values from numpy's per-frequency SVD (stride 1 only)."""
    spectrum = np.fft.fft2(bank, s=(size, size), axes=(2, 3)).transpose(2, 3, 0, 1)
    values = np.linalg.svd(spectrum.reshape(-1, *bank.shape[:2]), compute_uv=False)
    return float(values.max()), float(values.min())


def main() -> None:
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((64, 64, 3, 3)) / 24
    print("analyze, 3x3 64->64-channel bank, 32x32x64 input, wrap (best of 3 runs)")
    print(f"{'stride':>6} {'seconds':>8} {'rank':>6} {'condition':>10}  verdict")
    for stride in (1, 2):
        geometry = Geometry.create(boundary="wrap", correlate=True, stride=stride)
        op = ConvOperator(bank, (32, 32, 64), geometry)
        seconds, result = best_time(lambda op=op: analyze(op), 3)
        if stride == 1:
            smax, smin = reference_sigma(bank, 32)
            if not np.allclose([result.sigma_max, result.sigma_min], [smax, smin], rtol=1e-9):
                raise SystemExit("singular values differ from numpy's per-frequency SVD")
        print(
            f"{stride:>6} {seconds:8.3f} {result.rank:>6} {result.condition_number:10.4g}  "
            f"{result.verdict}"
        )


if __name__ == "__main__":
    main()
