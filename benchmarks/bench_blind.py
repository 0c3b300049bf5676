"""Blind deconvolution (`deconv blind`): the error ratio against the true kernel.

Cases: scikit-image's development images (those of ``deblur_matrix.py`` with room for a
256×256 crop and a 27 px margin: camera, astronaut, brick, grass, gravel, cell,
immunohistochemistry, rocket), blurred whole with a camera-shake kernel
(``shake:size=N,seed=S``, N in 13..27, Boracchi & Foi trajectories), a 256×256 crop kept
at least the kernel's size from the image's edge (a real boundary), white noise
σ = 0.01; each case seeded. Colour images stay colour (the kernel is estimated on
their grey level).

Score: the *error ratio* of Levin et al. (2009), RMSE of the image restored with the
estimated kernel over the RMSE with the true kernel, both restored by the same
non-blind method (``auto``, as ``deconv invert --boundary unknown`` runs it). A ratio
≤ 3 counts as a success.

Baseline: blind Richardson-Lucy (Fish et al. 1995, MATLAB's ``deconvblind``), here
only: 30 alternating multiplicative updates of the image and of a 31×31 kernel started
flat, zero boundary as ``scipy.signal.fftconvolve(mode="same")`` gives; its kernel is
scored the same way.

Parametric: ``--family gaussian|disk|motion`` on gaussian σ 1.5–3, disk r 2–5,
motion length 9–25 at seeded angles (held out), and with ``--full`` σ 1.2–4, r 2.5–6,
length 11–21 on the development images: the parameters found against the truth
(:data:`PARAMETER_TARGETS`), and the error ratio.

Halves: the estimates were tuned on the :data:`DEVELOPMENT` images; the summaries are
given for them and for the held-out ones apart.

Run: ``python benchmarks/bench_blind.py`` (the quick subset, for ``make bench``),
``--full`` (every case), ``--method M`` (another non-blind method for the ratio).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deblur_matrix  # noqa: E402

from deconv_cli import blind, blind_fit  # noqa: E402
from deconv_cli.restore import RestoreOptions  # noqa: E402

IMAGES = (
    "camera",
    "astronaut",
    "brick",
    "grass",
    "gravel",
    "cell",
    "immunohistochemistry",
    "rocket",
)
DEVELOPMENT = ("camera", "brick", "gravel", "cell")
"""The images the estimates were tuned on; the others are held out."""
HALVES = ("development", "held-out")
PARAMETER_TARGETS = {"sigma": 0.1, "radius": 0.5, "length": 1.0, "angle": 3.0}
"""The largest errors the parametric fits aim at: σ relative, the others absolute."""
SHAKE_SIZES = (13, 17, 21, 27)
BOUND = (31, 31)
QUICK = 4


def shake_cases(full: bool) -> list[deblur_matrix.Case]:
    rng = np.random.default_rng(18)
    cases = []
    for i, image in enumerate(IMAGES):
        for j in range(3 if full else 1):
            size = SHAKE_SIZES[(i + j) % len(SHAKE_SIZES)]
            seed = int(rng.integers(1000))
            cases.append(_case(image, f"shake:size={size},seed={seed}", 100 * i + j))
    return cases if full else cases[::2][:QUICK]


def parametric_cases(full: bool) -> list[tuple[str, str, deblur_matrix.Case, dict]]:
    """``(half, family, case, truth)``: the held-out cases (those the fits were first
    measured on) and, with ``full``, a development set of other parameters on the
    development images."""
    out = []
    sets = [("held-out", 19, (1.5, 2, 3), (2, 3.5, 5), (9, 17, 25), IMAGES, 500)]
    if full:
        sets.append(("development", 7, (1.2, 2.5, 4), (2.5, 4, 6), (11, 15, 21), DEVELOPMENT, 900))
    for half, seed, sigmas, radii, lengths, images, first in sets:
        rng = np.random.default_rng(seed)
        specs = [("gaussian", f"gaussian:sigma={s}", {"sigma": s}) for s in sigmas]
        specs += [("disk", f"disk:radius={r}", {"radius": r}) for r in radii]
        for length in lengths:
            angle = int(rng.integers(180))
            truth = {"length": length, "angle": angle}
            specs.append(("motion", f"motion:length={length},angle={angle}", truth))
        for n, (family, spec, truth) in enumerate(specs):
            case = _case(images[n % len(images)], spec, first + n)
            out.append((half, family, case, truth))
    return out if full else out[:9:3]


def _case(image: str, spec: str, seed: int) -> deblur_matrix.Case:
    return deblur_matrix.Case(
        name=f"{image}-{spec}",
        image=image,
        family=spec.split(":")[0],
        noise_type="gaussian",
        kernel_spec=spec,
        noise="gaussian:sigma=0.01",
        boundary="unknown",
        shape=(256, 256),
        seed=seed,
    )


def _gray(y: np.ndarray) -> np.ndarray:
    return y.mean(axis=2) if y.ndim == 3 else y


def restore_with(case, kernel: np.ndarray, method: str) -> np.ndarray:
    from deconv_cli.inversion import build_problem, invert
    from deconv_cli.operators import Geometry

    problem = build_problem(
        kernel, case.blurred.shape, Geometry.create(boundary="reflect"), unknown_boundary=True
    )
    return invert(case.blurred, problem, method, RestoreOptions()).image


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def blind_rl(y: np.ndarray, shape=BOUND, iterations: int = 30) -> np.ndarray:
    """Blind Richardson-Lucy (the baseline): alternating multiplicative updates."""
    from scipy.signal import fftconvolve

    y = np.clip(y, 1e-6, None)
    x = y.copy()
    k = np.full(shape, 1.0 / (shape[0] * shape[1]))
    kh, kw = shape
    for _ in range(iterations):
        ratio = y / np.maximum(fftconvolve(x, k, mode="same"), 1e-12)
        full = fftconvolve(ratio, x[::-1, ::-1], mode="same")  # correlation with x
        ch, cw = full.shape[0] // 2, full.shape[1] // 2
        k = k * full[ch - kh // 2 : ch + kh // 2 + 1, cw - kw // 2 : cw + kw // 2 + 1]
        k = np.maximum(k, 0) / k.sum()
        ratio = y / np.maximum(fftconvolve(x, k, mode="same"), 1e-12)
        x = x * fftconvolve(ratio, k[::-1, ::-1], mode="same")
    return k


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--method", default="auto")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-parametric", action="store_true")
    parser.add_argument("--no-free", action="store_true")
    args = parser.parse_args(argv)

    print(f"non-blind method: {args.method}; kernel bound {BOUND[0]}x{BOUND[1]}; noise σ=0.01")
    print(f"{'case':<42} {'ratio':>6} {'blind RL':>8} {'CPU s':>6} {'confidence':>10}")
    ratios, baseline, cpu, halves = [], [], [], []
    for case in [] if args.no_free else shake_cases(args.full):
        halves.append(HALVES[case.image not in DEVELOPMENT])
        gray = _gray(case.blurred)
        start = time.process_time()
        kernel = blind.estimate_kernel(gray, BOUND).kernel
        cpu.append(time.process_time() - start)
        truth_error = rmse(restore_with(case, case.kernel, args.method), case.truth)
        ratio = rmse(restore_with(case, kernel, args.method), case.truth) / truth_error
        ratios.append(ratio)
        rl = float("nan")
        if not args.no_baseline:
            rl_kernel = blind.trim_kernel(blind.center_kernel(blind_rl(gray)))
            rl = rmse(restore_with(case, rl_kernel, args.method), case.truth) / truth_error
            baseline.append(rl)
        score = blind_fit.confidence(gray, kernel)[0]
        print(f"{case.name:<42} {ratio:6.2f} {rl:8.2f} {cpu[-1]:6.1f} {score:10.2f}", flush=True)
    ratios, cpu, halves = np.array(ratios), np.array(cpu), np.array(halves)
    for half in ("all", *HALVES):
        picked = np.ones(len(ratios), bool) if half == "all" else halves == half
        if picked.any():
            r, t = ratios[picked], cpu[picked]
            print(
                f"free kernels, {half}: {len(r)} cases, ratio ≤ 3 on {np.mean(r <= 3):.0%}, "
                f"median {np.median(r):.2f}, worst {r.max():.2f}; estimate CPU time "
                f"median {np.median(t):.1f} s, worst {t.max():.1f} s"
            )
    if baseline:
        better = np.mean(ratios < np.array(baseline))
        print(
            f"blind RL: median {np.median(baseline):.2f}, worst {max(baseline):.2f}; "
            f"blind better on {better:.0%} of the cases"
        )
    if args.no_parametric:
        return 0
    print(f"\n{'parametric case':<42} {'found':<32} {'ratio':>6} {'CPU s':>6}  errors")
    rows = []
    for half, family, case, truth in parametric_cases(args.full):
        gray = _gray(case.blurred)
        start = time.process_time()
        fit = blind_fit.fit_family(family, gray, BOUND)
        seconds = time.process_time() - start
        truth_error = rmse(restore_with(case, case.kernel, args.method), case.truth)
        ratio = rmse(restore_with(case, fit.kernel, args.method), case.truth) / truth_error
        errors = {k: fit.params[k] - v for k, v in truth.items()}
        if "angle" in errors:
            errors["angle"] = (errors["angle"] + 90) % 180 - 90
        met = all(
            abs(e) <= PARAMETER_TARGETS[k] * (truth[k] if k == "sigma" else 1)
            for k, e in errors.items()
        )
        rows.append((half, ratio, met, seconds))
        text = ", ".join(f"Δ{k}={e:+.2f}" for k, e in errors.items())
        print(f"{case.name:<42} {fit.spec:<32} {ratio:6.2f} {seconds:6.1f}  {text}", flush=True)
    for half in HALVES:
        picked = [r for r in rows if r[0] == half]
        if picked:
            print(
                f"parametric, {half}: {len(picked)} cases, ratio ≤ 1.5 on "
                f"{sum(r[1] <= 1.5 for r in picked)}, parameters within the targets on "
                f"{sum(r[2] for r in picked)}; worst ratio {max(r[1] for r in picked):.2f}; "
                f"fit CPU time median {np.median([r[3] for r in picked]):.1f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
