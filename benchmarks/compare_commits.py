"""Time the same library calls in two source trees of deconv, alternated, in one run.

Two worker processes, one per tree (``PYTHONPATH=TREE``, the same interpreter and
libraries), build each case once, run it once to warm up, then time it on request. The
driver asks OLD, NEW, OLD, NEW, ... (``--pairs`` pairs per case, the order of each pair
alternating too) and prints, per case, the best times and the median of the paired
ratios new/old: on a shared machine the load changes from moment to moment, and a ratio
of two runs next to each other carries less of that change than a ratio of two separate
runs.

The cases use calls both trees have: ``ConvOperator`` forward (``convolve``) and
``tikhonov``/``wiener`` (given and automatic parameter) on float32 images, boundaries
``wrap`` and ``reflect``, gaussian sigma 2 and disk radius 3.

Run: python benchmarks/compare_commits.py OLD_TREE NEW_TREE [--pairs 7] [--size 2048]
[--only TEXT] [--cpu]  (``--only``: the cases whose name contains TEXT, repeatable;
``--cpu``: the process's CPU time, which another process's load disturbs less than the
wall time, with ``DECONV_FFT_WORKERS=1`` so that it counts the same work)
e.g. ``git worktree add ../old 41061be`` then ``python benchmarks/compare_commits.py ../old .``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import sys, time
import numpy as np
from deconv_cli.kernels import load_kernel
from deconv_cli.operators import ConvOperator, Geometry
from deconv_cli.restore import RestoreOptions
from deconv_cli.restore.linear import tikhonov, wiener

built = {}

def build(name):
    size, spec, boundary, method, parameter = name.split()
    n = int(size)
    rng = np.random.default_rng(0)
    image = rng.random((n, n)).astype(np.float32)
    op = ConvOperator(load_kernel(spec).array, image.shape, Geometry.create(boundary=boundary),
                      dtype=np.float32)
    if method == "convolve":
        return lambda: op.forward(image)
    blurred = op.forward(image) + np.float32(0.01) * rng.standard_normal(image.shape,
                                                                        dtype=np.float32)
    key = "reg" if method == "tikhonov" else "nsr"
    value = {"reg": 1e-3, "nsr": 1e-2}[key] if parameter == "given" else None
    options = RestoreOptions(**{key: value})
    solve = tikhonov if method == "tikhonov" else wiener
    return lambda: solve(blurred, op, options)

clock = time.process_time if sys.argv[1] == "cpu" else time.perf_counter
for line in sys.stdin:
    name = line.strip()
    if name not in built:
        built[name] = build(name)
        built[name]()
    start = clock()
    built[name]()
    print(clock() - start, flush=True)
"""


def cases(size: int) -> list[str]:
    """The case names: ``SIZE KERNEL BOUNDARY METHOD PARAMETER``."""
    names = []
    for spec in ("gaussian:sigma=2", "disk:radius=3"):
        for boundary in ("wrap", "reflect"):
            names.append(f"{size} {spec} {boundary} convolve -")
            for method in ("wiener", "tikhonov"):
                for parameter in ("given", "auto"):
                    names.append(f"{size} {spec} {boundary} {method} {parameter}")
    return names


class Worker:
    """A Python process with ``tree`` first on its path, timing cases on request."""

    def __init__(self, tree: Path, clock: str):
        env = dict(os.environ, PYTHONPATH=str(tree))
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, clock],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tree,
            env=env,
        )

    def time(self, name: str) -> float:
        self.process.stdin.write(name + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit(f"the worker in {self.process.args} failed on {name!r}")
        return float(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--cpu", action="store_true", help="time the process's CPU time")
    args = parser.parse_args(argv)
    clock = "cpu" if args.cpu else "wall"
    old, new = Worker(args.old.resolve(), clock), Worker(args.new.resolve(), clock)
    print(f"old {args.old}, new {args.new}: {args.pairs} alternated pairs per case, {clock} time")
    print(f"{'case':>52} {'old ms':>8} {'new ms':>8} {'new/old':>8}  paired ratios")
    ratios = []
    try:
        for name in cases(args.size):
            if args.only and not any(text in name for text in args.only):
                continue
            times: tuple[list[float], list[float]] = ([], [])
            for i in range(args.pairs):
                order = ((old, times[0]), (new, times[1]))
                for worker, out in order if i % 2 == 0 else order[::-1]:
                    out.append(worker.time(name))
            paired = [b / a for a, b in zip(*times, strict=True)]
            ratio = statistics.median(paired)
            ratios.append(ratio)
            print(
                f"{name:>52} {min(times[0]) * 1e3:8.1f} {min(times[1]) * 1e3:8.1f} "
                f"{ratio:8.2f}  {' '.join(f'{r:.2f}' for r in paired)}",
                flush=True,
            )
    finally:
        old.close()
        new.close()
    if ratios:
        print(f"median of the cases' new/old: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
