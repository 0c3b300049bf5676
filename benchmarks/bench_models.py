"""`analyze MODEL.onnx`: every conv layer of a ResNet-18-shaped network at 224x224x3.

The model (the 20 convolutions of ResNet-18 with random He-initialized weights, built
by `samples/make_model.py` with onnx.helper) is written to a temporary folder; the
command runs in its own process, as a user runs it. Target: the whole per-layer
analysis in at most 120 s on 2 cores. Also checks that one large layer's σ_max bound
is at least a power-iteration estimate on the layer itself (the bound must hold).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 120


def power_sigma_max(path: Path, name: str, shape: tuple, iterations: int = 20) -> float:
    """A lower bound on σ_max of one layer: the power iteration's ‖A v‖ with ‖v‖ = 1."""
    from deconv_cli.models import load_layer
    from deconv_cli.operators import ConvOperator

    layer = load_layer(path, name)
    op = ConvOperator(layer.weight, shape, layer.geometry())
    v = np.random.default_rng(0).standard_normal(shape)
    sigma = 0.0
    for _ in range(iterations):
        v /= np.linalg.norm(v)
        y = op.forward(v)
        sigma = float(np.linalg.norm(y))
        v = op.adjoint(y)
    return sigma


def main() -> None:
    sys.path.insert(0, str(ROOT / "samples"))
    import onnx
    from make_model import resnet18

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "resnet18.onnx"
        onnx.save(resnet18(), path)
        command = [sys.executable, "-m", "deconv_cli", "analyze", str(path)]
        command += ["--shape", "224x224x3", "--format", "json", "--quiet"]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        layers = json.loads(done.stdout)["layers"]
        row = next(r for r in layers if r["input_shape"] == [28, 28, 128])
        lower = power_sigma_max(path, row["layer"], tuple(row["input_shape"]))
    exact = sum(r["exact"]["sigma_max"] for r in layers)
    print("analyze resnet18.onnx --shape 224x224x3 (20 conv layers, random weights)")
    print(
        f"  wall {seconds:.1f} s (target <= {TARGET_SECONDS} s), CPU {usage.ru_utime:.1f} s user"
        f" + {usage.ru_stime:.1f} s system, peak {usage.ru_maxrss / 1024:.0f} MB;"
        f" load average {load:.1f} before the run (a loaded machine stretches the wall time)"
    )
    print(f"  {exact} of {len(layers)} σ_max exact")
    print(f"  {row['layer']}: σ_max bound {row['sigma_max']:.4f} >= power iteration {lower:.4f}")
    if row["sigma_max"] < lower * (1 - 1e-9):
        raise SystemExit("the σ_max bound is below a power-iteration estimate: not a bound")
    if seconds > TARGET_SECONDS:
        raise SystemExit(f"slower than the {TARGET_SECONDS} s target")


if __name__ == "__main__":
    main()
