"""What DP evaluation costs in accuracy of the reported hold-out metrics, on IBM Telco.

    .venv/bin/python benchmarks/evaluation_noise.py     # writes benchmarks/results/evaluation_noise.json (~20 s)

Telco is split into 3 partners by Contract (non-IID; benchmark policy, HMAC keys derived
from the split so the hold-out repeats run after run), each prepared with the node's
default 20 % hold-out. One model is scored: the pooled logistic-regression reference (as in
`fedcrm.sandbox.utility.pooled`: fit on every partner's training rows with the combined
normalisation), on each partner's hold-out.

1. Binning alone: pooled AUC, PR-AUC, lift at the top decile, ECE and log-loss exact
   (scikit-learn, on the pooled hold-out scores) vs the same from exact 20-bin histograms
   (`HIST_BINS`, what the node releases) and from the old 200-bin histograms. Pooled
   figures are what the coordinator computes (`pooled_from_histograms` on the summed
   histograms; log-loss as the example-weighted mean of partners' `metrics_from_histograms`).
2. Noise: σ per evaluation as the node calibrates it for a run of R rounds at target ε
   (R + 1 evaluations adding at most ε on fresh hold-out customers, never under the
   default floor `min_eval_noise_multiplier`), for ε ∈ {0.5, 1, 3, 8} × R ∈ {3, 5, 10},
   plus the floor alone. For each distinct σ, DRAWS noise draws: every partner's
   histograms through `noised_histograms`, its own metrics through `metrics_from_histograms`,
   the sum through `pooled_from_histograms`. Reported: mean, sd and 2.5/97.5 percentiles
   of the error (noised − exact scikit-learn figure) of the pooled AUC and of each
   partner's own AUC (and mean/sd for the other pooled metrics); the mean error against
   the exact 20-bin figure (noise alone); the median and percentiles of the pooled AUC
   error of the same draws computed without clipping negative counts (a diagnostic of
   the bias the clipping adds); and ε of one evaluation and of the run's evaluations
   together (PRV, δ = 1e-5). Settings with the same σ share one set of draws (the floor
   pins σ at 4 for most loose targets). Noise comes from OS entropy, as on a node: means
   move by about sd/√DRAWS (≤ 0.003 in AUC) from one run to the next.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.config.partner import PrivacyPolicy
from fedcrm.data.prepare import prepare
from fedcrm.ml.evaluation import (HIST_BINS, binary_metrics, metrics_from_histograms, noised_histograms,
                                  pooled_from_histograms, score_histograms)
from fedcrm.ml.fedstats import combine, partner_sums
from fedcrm.privacy.accounting import calibrate_noise, epsilon
from fedcrm.sandbox.public_data import TELCO, TELCO_CSV, split_public

RESULTS = Path(__file__).resolve().parent / "results" / "evaluation_noise.json"
OLD_BINS = 200
TARGETS = (0.5, 1.0, 3.0, 8.0)
ROUNDS = (3, 5, 10)
DRAWS = 500
FLOOR = PrivacyPolicy().min_eval_noise_multiplier  # the partner's default floor (4.0)
DELTA = PrivacyPolicy().delta
METRICS = ("auc", "pr_auc", "lift_top_decile", "ece", "log_loss")


def node_sigma(target: float, rounds: int) -> float:
    """σ the node uses on an empty ledger (`PrivacyAccount.evaluation_noise`)."""
    return max(FLOOR, calibrate_noise((), 1.0, rounds + 1, target, DELTA, "prv"))


def from_histograms(hists: list[tuple[list, list]]) -> tuple[dict[str, float], list[float]]:
    """Pooled metrics as the coordinator computes them, and each partner's own AUC."""
    own = [metrics_from_histograms(p, n) for p, n in hists]
    pooled = pooled_from_histograms(np.sum([p for p, _ in hists], axis=0), np.sum([n for _, n in hists], axis=0))
    weights = [max(sum(p) + sum(n), 0) for p, n in hists]  # the reply's num_examples
    pooled["log_loss"] = float(np.average([m.log_loss for m in own], weights=weights))
    return {k: pooled.get(k, float("nan")) for k in METRICS}, [m.auc for m in own]


def auc_unclipped(pos: np.ndarray, neg: np.ndarray) -> float:
    """`auc_from_histograms` without turning negative counts into 0 (diagnostic only; NaN
    when the noise leaves a class with no rows in total)."""
    if pos.sum() <= 0 or neg.sum() <= 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def robust(errors: np.ndarray) -> dict[str, float]:
    """Median and 2.5/97.5 percentiles over the defined draws: a ratio of noised sums is
    heavy-tailed, its mean says little."""
    ok = errors[np.isfinite(errors)]
    low, median, high = np.percentile(ok, [2.5, 50, 97.5])
    return {"median": round(float(median), 5), "p2_5": round(float(low), 5), "p97_5": round(float(high), 5),
            "undefined_draws": int(len(errors) - len(ok))}


def spread(errors: np.ndarray, percentiles: bool = True) -> dict[str, float]:
    out = {"mean": float(np.mean(errors)), "sd": float(np.std(errors, ddof=1))}
    if percentiles:
        out["p2_5"], out["p97_5"] = (float(v) for v in np.percentile(errors, [2.5, 97.5]))
    return {k: round(v, 5) for k, v in out.items()}


def draws(hists: list[tuple[list, list]], sigma: float, exact: dict, exact_own: list[float],
          binned: dict, n: int = DRAWS) -> dict:
    pooled_err = {k: [] for k in METRICS}
    own_err: list[list[float]] = [[] for _ in hists]
    unclipped, negative = [], 0
    for _ in range(n):
        noised = [noised_histograms(p, q, sigma) for p, q in hists]
        pooled, own = from_histograms(noised)
        for k in METRICS:
            pooled_err[k].append(pooled[k] - exact[k])
        for i, a in enumerate(own):
            own_err[i].append(a - exact_own[i])
        pos, neg = (np.sum([np.asarray(h[j], dtype=np.float64) for h in noised], axis=0) for j in (0, 1))
        unclipped.append(auc_unclipped(pos, neg) - exact["auc"])
        negative += int((pos < 0).sum() + (neg < 0).sum())
    auc_err = np.asarray(pooled_err["auc"])
    return {
        "pooled_auc_error": spread(auc_err),
        "pooled_auc_noise_bias": round(float(np.mean(auc_err) - (binned["auc"] - exact["auc"])), 5),
        "pooled_auc_error_median": round(float(np.median(auc_err)), 5),
        "pooled_auc_error_unclipped": robust(np.asarray(unclipped)),
        "pooled_other_errors": {k: spread(np.asarray(pooled_err[k]), percentiles=False) for k in METRICS[1:]},
        "partner_auc_error": [spread(np.asarray(e)) for e in own_err],
        "negative_summed_counts_per_draw": round(negative / n, 3),
    }


def main() -> None:
    if not TELCO_CSV.is_file():
        raise SystemExit(f"IBM Telco not found at {TELCO_CSV} (expected under ../shared/datasets): skipped")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        fed = split_public(TELCO, Path(tmp) / "telco", "Contract", seeded_keys=True, benchmark_policy=True)
        members = FederationConfig.load(fed).members
        names = [m.name for m in members]
        data = [prepare(PartnerConfig.load(m.config), "churn", 0.2) for m in members]
    norm = combine([partner_sums(d.x_train) for d in data]).normalisation
    model = LogisticRegression(max_iter=5000).fit(np.vstack([norm.apply(d.x_train) for d in data]),
                                                  np.concatenate([d.y_train for d in data]))
    ys = [d.y_test.astype(np.int64) for d in data]
    ps = [model.predict_proba(norm.apply(d.x_test))[:, 1] for d in data]

    exact_m = binary_metrics(np.concatenate(ys), np.concatenate(ps))
    exact = {k: getattr(exact_m, k) for k in METRICS}
    exact_own = [binary_metrics(y, p).auc for y, p in zip(ys, ps)]
    hists = {bins: [score_histograms(y, p, bins) for y, p in zip(ys, ps)] for bins in (HIST_BINS, OLD_BINS)}
    binned = {bins: from_histograms(h) for bins, h in hists.items()}
    partners = [{"name": name, "holdout_rows": int(len(y)), "holdout_positives": int(y.sum()),
                 "train_rows": int(len(d.y_train)), "auc_exact": round(a, 5),
                 "auc_20_bins": round(binned[HIST_BINS][1][i], 5), "auc_200_bins": round(binned[OLD_BINS][1][i], 5),
                 "empty_bins_20": int(sum(v == 0 for v in hists[HIST_BINS][i][0] + hists[HIST_BINS][i][1]))}
                for i, (name, y, d, a) in enumerate(zip(names, ys, data, exact_own))]
    print(f"pooled hold-out {sum(map(len, ys))} rows; exact " + ", ".join(f"{k} {v:.4f}" for k, v in exact.items()))
    for bins in (HIST_BINS, OLD_BINS):
        print(f"  {bins:>3} bins: " + ", ".join(f"{k} {v - exact[k]:+.4f}" for k, v in binned[bins][0].items()))

    settings = [{"target_epsilon": t, "rounds": r, "evaluations": r + 1, "sigma": node_sigma(t, r)}
                for t in TARGETS for r in ROUNDS]
    settings.append({"target_epsilon": None, "rounds": 1, "evaluations": 1, "sigma": FLOOR})  # the floor alone
    by_sigma: dict[float, dict] = {}
    for s in sorted({s["sigma"] for s in settings}):
        t0 = time.monotonic()
        by_sigma[s] = draws(hists[HIST_BINS], s, exact, exact_own, binned[HIST_BINS][0])
        e = by_sigma[s]["pooled_auc_error"]
        print(f"σ {s:7.3f}: pooled AUC error {e['mean']:+.4f} ± {e['sd']:.4f} [{e['p2_5']:+.4f}, {e['p97_5']:+.4f}]; "
              + ", ".join(f"{n} ±{p['sd']:.4f}" for n, p in zip(names, by_sigma[s]["partner_auc_error"]))
              + f" ({time.monotonic() - t0:.1f}s)", flush=True)
    noise = [{**s, "sigma": round(s["sigma"], 4), "epsilon_per_evaluation": round(epsilon([(s["sigma"], 1.0, 1)], DELTA), 4),
              "epsilon_run_evaluations": round(epsilon([(s["sigma"], 1.0, s["evaluations"])], DELTA), 4),
              **by_sigma[s["sigma"]]} for s in settings]

    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "wall_seconds": round(time.monotonic() - started, 1),
           "data": "IBM Telco by Contract, 3 partners, 20 % hold-out, pooled LR reference",
           "draws": DRAWS, "delta": DELTA, "floor": FLOOR, "hist_bins": HIST_BINS, "partners": partners,
           "pooled_exact": {k: round(v, 5) for k, v in exact.items()},
           "pooled_binned": {f"{bins}_bins": {k: round(v, 5) for k, v in binned[bins][0].items()}
                             for bins in (HIST_BINS, OLD_BINS)},
           "noise": noise}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS} ({out['wall_seconds']}s)")


if __name__ == "__main__":
    main()
