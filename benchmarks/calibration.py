"""How many accountant evaluations the node's noise calibration costs, against bisection.

    .venv/bin/python benchmarks/calibration.py      # writes benchmarks/results/calibration.{json,md} (~3 min)

A node calibrates σ once a run for training (round 1) and once for its evaluations; on a
deployed SuperNode every message is a fresh process, so each of those calibrations pays
every PRV evaluation it makes (0.1-1.5 s each, more the smaller σ). The reference is the
bisection the node used before (kept here, verbatim in its logic): the same bracket
start, halving until ε is within `tolerance` of the target or σ is pinned to 0.1 %.

Cases are the shapes the node meets: the demo's round 1 (after its statistics release),
the Telco and Bank partners' training at the default batch (3 partners, 5 rounds, 1 local
epoch), a second run on a partner with history, and the evaluation calibration (q = 1).
Each method runs on cleared caches, alternated, REPEATS times. Reported per case and
method: accountant evaluations, wall seconds (median), σ and its ε; and whether ours
lands in the same band: ε ≤ target and within the tolerance, or σ no larger than the
reference's.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

from fedcrm.privacy import accounting
from fedcrm.privacy.accounting import SIGMA_MIN, UnaccountableRelease, calibrate_noise, epsilon

RESULTS = Path(__file__).resolve().parent / "results"
DELTA = 1e-5
TOLERANCE = 0.01
STATS = (8.0, 1.0, 1)  # the default policy's statistics release, paid first


def bisection(prior: tuple, q: float, steps: int, target: float, delta: float, kind: str = "prv",
              tolerance: float = TOLERANCE) -> float:
    """The node's calibration before Brent's method (fedcrm ≤ c5e96ea), for reference."""
    def eps(sigma: float) -> float:
        try:
            return epsilon(list(prior) + [(sigma, q, steps)], delta, kind)  # type: ignore[arg-type]
        except UnaccountableRelease:
            return math.inf

    low, high = SIGMA_MIN, 2.0
    while eps(high) > target:
        low, high = high, high * 2
    while True:
        if low == SIGMA_MIN and high < 1.5 * SIGMA_MIN and eps(SIGMA_MIN) <= target:
            return SIGMA_MIN
        mid = (low + high) / 2
        if high - low <= 1e-3 * high:
            return high
        e = eps(mid)
        if e > target:
            low = mid
        else:
            high = mid
            if target - e <= tolerance * target:
                return high


def cases() -> list[dict]:
    """(name, prior, q, steps, run ε): q and steps as `round_shape` gives them."""
    out = []
    for name, rows, rounds in (("demo round 1", 1900, 4), ("telco partner", 1878, 5), ("bank partner", 10983, 5)):
        q, per_round = accounting.round_shape(rows, 64, 1)[::-1]
        for target in (1.0, 3.0, 8.0):
            out.append(dict(name=f"{name}, ε={target:g}", prior=(STATS,), q=q, steps=per_round * rounds,
                            run_epsilon=target))
    q, per_round = accounting.round_shape(1878, 64, 1)[::-1]
    first = calibrate_noise((STATS,), q, per_round * 5, epsilon([STATS], DELTA) + 3.0, DELTA)
    out.append(dict(name="telco partner, second run, ε=3", prior=(STATS, (first, q, per_round * 5), STATS), q=q,
                    steps=per_round * 5, run_epsilon=3.0))
    for evaluations in (5, 11):
        out.append(dict(name=f"evaluations ×{evaluations}, ε=3", prior=(), q=1.0, steps=evaluations, run_epsilon=3.0))
    return out


def measure(method, case: dict) -> dict:  # noqa: ANN001
    accounting._epsilon.cache_clear()
    prior, q, steps = case["prior"], case["q"], case["steps"]
    target = (epsilon(list(prior), DELTA) if prior else 0.0) + case["run_epsilon"]
    before = accounting._epsilon.cache_info().misses
    accounting._memoised_rdp().cache_clear()  # the search starts as in a fresh node process: nothing remembered
    started = time.perf_counter()
    sigma = method(prior, q, steps, target, DELTA)
    seconds = time.perf_counter() - started
    evaluations = accounting._epsilon.cache_info().misses - before
    return dict(sigma=sigma, epsilon=epsilon(list(prior) + [(sigma, q, steps)], DELTA), target=target,
                evaluations=evaluations, seconds=seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    epsilon([STATS], DELTA)  # Opacus' import, outside every timing
    rows = []
    for case in cases():
        runs: dict[str, list[dict]] = {"bisection": [], "fedcrm": []}
        for _ in range(args.repeats):
            runs["bisection"].append(measure(bisection, case))
            runs["fedcrm"].append(measure(calibrate_noise, case))
        row = {"case": case["name"], "q": case["q"], "steps": case["steps"], "target": runs["fedcrm"][0]["target"]}
        for method, got in runs.items():
            row[method] = {"sigma": got[0]["sigma"], "epsilon": got[0]["epsilon"],
                           "evaluations": got[0]["evaluations"],
                           "seconds": statistics.median(g["seconds"] for g in got)}
        ours, ref, target = row["fedcrm"], row["bisection"], row["target"]
        row["same_band"] = bool(ours["epsilon"] <= target and (target - ours["epsilon"] <= TOLERANCE * target
                                                                 or ours["sigma"] <= ref["sigma"] * (1 + 1e-3)))
        rows.append(row)
        print(f"{row['case']:<36} evaluations {ref['evaluations']:>2} → {ours['evaluations']:>2}   "
              f"{ref['seconds']:.2f} → {ours['seconds']:.2f} s   σ {ref['sigma']:.4f} / {ours['sigma']:.4f}", flush=True)
    total = {m: sum(r[m]["seconds"] for r in rows) for m in ("bisection", "fedcrm")}
    out = {"machine": platform.platform(), "python": platform.python_version(), "delta": DELTA,
           "tolerance": TOLERANCE, "repeats": args.repeats, "cases": rows,
           "total_seconds": total, "all_in_band": all(r["same_band"] for r in rows)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = ["# Noise calibration: accountant evaluations, Brent's method against bisection", "",
             "`.venv/bin/python benchmarks/calibration.py` (PRV, δ = 1e-5, tolerance 1 % of the target ε; "
             f"seconds: median of {args.repeats}, caches cleared, as on a fresh node process)", "",
             "| case | target ε | evaluations, bisection → ours | seconds, bisection → ours | σ, bisection / ours "
             "| ε of ours | in band |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        b, f = r["bisection"], r["fedcrm"]
        lines.append(f"| {r['case']} | {r['target']:.3f} | {b['evaluations']} → {f['evaluations']} | "
                     f"{b['seconds']:.2f} → {f['seconds']:.2f} | {b['sigma']:.4f} / {f['sigma']:.4f} | "
                     f"{f['epsilon']:.3f} | {'yes' if r['same_band'] else 'NO'} |")
    lines += ["", f"Total: {total['bisection']:.1f} s → {total['fedcrm']:.1f} s."]
    (RESULTS / "calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
