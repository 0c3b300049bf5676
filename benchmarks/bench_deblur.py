"""The default deblur on the development matrix, against tuned scikit-image (issue 14).

Run: ``.venv/bin/python benchmarks/bench_deblur.py [--quick] [--no-sweeps]
[--methods auto,tv,...]`` (``make bench`` runs ``--quick --no-sweeps``; without those
flags: the full matrix and the sweeps).

For every case of ``deblur_matrix.cases()`` it runs the default (``deconv invert``'s
``--method auto``, with ``--boundary unknown`` where the case needs it), and prints
one markdown row: PSNR of the blurred data, of the default (and the method ``auto``
ran, its time), of scikit-image's richardson_lucy and wiener each tuned on the truth
(their best parameter in brackets), and the gains. Then the targets of the issue:

- no harm: default − blurred ≥ 0 dB on every case; on JPEG q 90 cases ≥ +1 dB;
- tuned peers: default − max(RL, Wiener) ≥ −0.25 dB on every case, mean ≥ +2 dB, and
  mean ≥ +3 dB on the ``unknown``-boundary cases;
- automatic parameters (unless ``--no-sweeps``): every registered method whose
  options include a weight (``reg`` tikhonov, ``nsr`` wiener, ``lam`` tv, and any
  method registered later with one of these) is run with its automatic choice, which
  it reports in ``result.params[field]``, then swept over that value × 10^k,
  k = −2 … 2 by ½, and refined by ±¼ around the best. A method without a weight that
  stops by a rule and takes a callback (richardson-lucy) is run once more for 3× its
  automatic iteration count (at most 1500) with ``tol=0``, scoring every iteration.
  The gap is the best PSNR found (or the automatic run's) minus the automatic run's.
  Target: ≤ 1 dB on every case.

Each line ends PASS or FAIL. The rows and figures are also written to
``bench-out/deblur-<quick|full>.json`` after each case (compare two runs with it;
``--summary FILE`` prints the target lines of such a file, complete or not).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import deblur_matrix as matrix  # noqa: E402

from deconv_cli.restore import RestoreOptions, methods  # noqa: E402

WEIGHTS = ("reg", "nsr", "lam")
"""RestoreOptions fields that are a method's regularization weight."""
SWEEP = 10.0 ** np.arange(-2, 2.01, 0.5)
REFINE = (10**-0.25, 10**0.25)


def swept_methods() -> dict[str, str]:
    """``{method: parameter}``: every registered method with a weight option (the
    weight), and every method without one that stops by a rule and reports each
    iteration (``iterations``)."""
    found = {}
    for name, method in methods().items():
        fields = [f for f in WEIGHTS if f in method.options]
        if fields:
            found[name] = fields[0]
        elif name != "auto" and {"iterations", "callback"} <= set(method.options):
            found[name] = "iterations"
    return found


def sweep(case, name: str, field: str) -> dict:
    """The automatic choice of ``name`` against a sweep of its own parameter."""
    auto = matrix.restore(case, name)
    base = matrix.score(auto.image, case)["psnr"]
    if field == "iterations":
        return _sweep_iterations(case, name, auto.iterations, base)
    value = auto.params.get(field)
    if not isinstance(value, (int, float)) or not value > 0:
        return {"auto": base, "value": value, "best": None, "gap": None}
    tried = {}

    def run(v: float) -> float:
        if v not in tried:
            result = matrix.restore(case, name, RestoreOptions(**{field: float(v)}))
            tried[v] = matrix.score(result.image, case)["psnr"]
        return tried[v]

    for factor in SWEEP:
        run(value * factor)
    top = max(tried, key=tried.get)
    for factor in REFINE:
        run(top * factor)
    top = max(tried, key=tried.get)
    best = max(tried[top], base)
    return {"auto": base, "value": float(value), "best_value": float(top), "gap": best - base}


def _sweep_iterations(case, name: str, chosen: int, base: float) -> dict:
    """Every iteration count up to ``3 ×`` the automatic one (at most 1500), in one run
    with ``--tol 0``, scored through the method's callback."""
    from skimage.metrics import peak_signal_noise_ratio

    problem, truth, curve = matrix.problem(case), case.truth, {}

    def record(k: int, x: np.ndarray, residual: float) -> None:
        curve[k] = peak_signal_noise_ratio(truth, problem.crop(x), data_range=1.0)

    longest = int(min(max(3 * chosen, 10), 1500))
    options = RestoreOptions(iterations=longest, tol=0.0, callback=record)
    matrix.restore(case, name, options)
    top = max(curve, key=curve.get)
    return {
        "auto": base,
        "value": chosen,
        "best_value": top,
        "gap": max(curve[top], base) - base,
    }


def run_case(case, swept: dict[str, str]) -> dict:
    start = time.perf_counter()
    result = matrix.restore(case)
    seconds = time.perf_counter() - start
    peers = matrix.peers(case)
    row = {
        "name": case.name,
        "image": case.image,
        "family": case.family,
        "noise_type": case.noise_type,
        "boundary": case.boundary,
        "blurred": matrix.score(case.blurred, case)["psnr"],
        "default": matrix.score(result.image, case)["psnr"],
        "method": result.method,
        "seconds": seconds,
        "rl": peers["richardson_lucy"]["psnr"],
        "rl_iter": peers["richardson_lucy"]["num_iter"],
        "wiener": peers["wiener"]["psnr"],
        "wiener_balance": peers["wiener"]["balance"],
    }
    row["gain_blurred"] = row["default"] - row["blurred"]
    row["gain_peers"] = row["default"] - max(row["rl"], row["wiener"])
    if swept:
        row["sweeps"] = {name: sweep(case, name, f) for name, f in swept.items()}
    return row


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(rows: list[dict]) -> list[str]:
    """The target lines, each ending PASS or FAIL."""
    harm = [r["gain_blurred"] for r in rows]
    peer = [r["gain_peers"] for r in rows]
    jpeg = [r["gain_blurred"] for r in rows if r["noise_type"] == "jpeg90"]
    unknown = [r["gain_peers"] for r in rows if r["boundary"] == "unknown"]
    worst = min(rows, key=lambda r: r["gain_blurred"])
    worst_peer = min(rows, key=lambda r: r["gain_peers"])
    lines = [
        f"- no harm: default − blurred worst {min(harm):+.2f} dB ({worst['name']}), "
        f"mean {np.mean(harm):+.2f} dB; target ≥ 0 on every case: {verdict(min(harm) >= 0)}",
    ]
    if jpeg:
        lines.append(
            f"- JPEG q90: default − JPEG worst {min(jpeg):+.2f} dB, mean {np.mean(jpeg):+.2f} "
            f"dB over {len(jpeg)} cases; target ≥ +1: {verdict(min(jpeg) >= 1)}"
        )
    lines += [
        f"- tuned peers: default − max(RL, Wiener) worst {min(peer):+.2f} dB "
        f"({worst_peer['name']}); target ≥ −0.25 on every case: {verdict(min(peer) >= -0.25)}",
        f"- tuned peers: mean gain {np.mean(peer):+.2f} dB; target ≥ +2: "
        f"{verdict(np.mean(peer) >= 2)}",
    ]
    if unknown:
        lines.append(
            f"- unknown boundary: mean gain over the peers {np.mean(unknown):+.2f} dB over "
            f"{len(unknown)} cases; target ≥ +3: {verdict(np.mean(unknown) >= 3)}"
        )
    swept = [r for r in rows if "sweeps" in r]
    for name in swept[0]["sweeps"] if swept else ():
        gaps = [(r["sweeps"][name]["gap"], r["name"]) for r in swept if name in r["sweeps"]]
        missing = sum(g is None for g, _ in gaps)
        known = [g for g in gaps if g[0] is not None]
        if not known:
            lines.append(f"- {name}: reports no automatic value: FAIL")
            continue
        gap, where = max(known)
        note = f", {missing} cases without an automatic value" if missing else ""
        lines.append(
            f"- automatic {name}: worst gap to the best of its sweep {gap:.2f} dB ({where}), "
            f"mean {np.mean([g for g, _ in known]):.2f} dB{note}; target ≤ 1: "
            f"{verdict(gap <= 1 and not missing)}"
        )
    return lines


def table_row(r: dict) -> str:
    return (
        f"| {r['name']} | {r['blurred']:.2f} | {r['default']:.2f} ({r['method']}, "
        f"{r['seconds']:.1f} s) | {r['rl']:.2f} ({r['rl_iter']}) | {r['wiener']:.2f} "
        f"({r['wiener_balance']:.1e}) | {r['gain_blurred']:+.2f} | {r['gain_peers']:+.2f} |"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 24-case set (else 120)")
    parser.add_argument("--no-sweeps", action="store_true", help="skip the parameter sweeps")
    parser.add_argument("--sweep", default=None, metavar="M,...", help="sweep only these methods")
    parser.add_argument("--cases", default=None, metavar="REGEX", help="only the cases matching")
    parser.add_argument(
        "--summary", default=None, metavar="JSON", help="print the targets of saved rows"
    )
    args, _ = parser.parse_known_args(argv)  # under run_all.py the argv is its own
    if args.summary:
        rows = json.loads(Path(args.summary).read_text())
        print(f"{len(rows)} cases from {args.summary}:")
        print("\n".join(summary(rows)))
        return
    size = "quick" if args.quick else "full"
    cases = matrix.cases(size)
    if args.cases:
        cases = [c for c in cases if re.search(args.cases, c.name)]
    out = matrix.CACHE.parent / f"deblur-{size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"deblur matrix ({size}, {len(cases)} cases): PSNR dB; gains in dB")
    print("\n| case | blurred | default | RL tuned (it) | Wiener tuned (balance) | "
          "− blurred | − peers |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    swept = {} if args.no_sweeps else swept_methods()
    if args.sweep:
        swept = {m: f for m, f in swept.items() if m in args.sweep.split(",")}
    rows = []
    for case in cases:
        row = run_case(case, swept)
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1, default=float))  # so far: see --summary
        print(table_row(row), flush=True)
        if "sweeps" in row:
            parts = [
                f"{m} {s['gap']:.2f} dB (auto {s['value']:.3g}, best {s['best_value']:.3g})"
                if s["gap"] is not None
                else f"{m}: no automatic value"
                for m, s in row["sweeps"].items()
            ]
            print(f"|  | sweep gaps: {'; '.join(parts)} | | | | | |", flush=True)
    print("\nTargets:")
    for line in summary(rows):
        print(line)
    print(f"\nrows written to {out.relative_to(matrix.CACHE.parent.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
