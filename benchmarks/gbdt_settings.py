"""DP boosted trees' settings, swept in-process: what the gradient clip (and any other
setting) does to AUC at ε = 1, 3, 8, with many noise draws, in minutes instead of hours.

Each dataset is split and onboarded as `gbdt_utility.py` does (3 partners, IID, one seed),
and each partner's prepared rows are used as they are. The federation is then emulated in
one process with the node's own arithmetic (`fedcrm.ml.tree_rounds`: random splits, clipped
gradients, leaf sums, Newton leaf values) and the node's own noise calibration
(`fedcrm.privacy.accounting.calibrate_noise`, after a statistics release at σ 8 as the
partners' default policy charges): per round, every partner's leaf sums plus Gaussian
noise of σ × the round's sensitivity, summed. What it leaves out, and so why its figures
sit a little above `gbdt_utility.py`'s real runs: the federation's noised normalisation
(exact here) and Flower. It is for choosing settings; the real runs measure them.

    .venv/bin/python benchmarks/gbdt_settings.py                       # clip 1.0 / 0.5 / 0.3 (~15 min)
    .venv/bin/python benchmarks/gbdt_settings.py --datasets bank --draws 3 \\
        --variants '[{"gbdt_grad_clip": 1.0}, {"gbdt_depth": 3}]' --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from contract_utility import CONTRACTS, onboard, split  # noqa: E402
from gbdt_utility import CONTRACT, CSV, DP, resolved  # noqa: E402

from fedcrm.config import FederationConfig, PartnerConfig  # noqa: E402
from fedcrm.data.prepare import prepare  # noqa: E402
from fedcrm.ml.tree_ensemble import BASE, FEATURE, THRESHOLD, VALUE, BoostedTrees, empty_ensemble  # noqa: E402
from fedcrm.ml.tree_rounds import (candidate_thresholds, gradients, leaf_sums, leaf_values, random_splits,  # noqa: E402
                                   sensitivity)
from fedcrm.privacy.accounting import calibrate_noise  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STATISTICS_SIGMA = 8.0  # the statistics release every partner's default policy charges first
EPSILONS = (1.0, 3.0, 8.0)
VARIANTS = [{"gbdt_grad_clip": 1.0}, {"gbdt_grad_clip": 0.5}, {"gbdt_grad_clip": 0.3}]


def partners(name: str, seed: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, np.ndarray, int]:
    """Every partner's standardised training rows, the pooled hold-out, and the count of
    numeric columns (the layout puts them first)."""
    work = ROOT / ".work" / "gbdt_settings" / f"{name}-{seed}"
    onboarded = work / "onboarded.json"  # the federation and task of an earlier call: onboarding takes minutes
    if not onboarded.is_file():
        paths, task, _, delimiter = split(name, work / "data")
        fed = onboard(name, CONTRACTS / f"{CONTRACT[name]}.toml", paths, delimiter, work, seed)
        onboarded.write_text(json.dumps({"federation": str(fed), "task": task}))
    known = json.loads(onboarded.read_text())
    fed, task = Path(known["federation"]), known["task"]
    configs = [PartnerConfig.load(m.config) for m in FederationConfig.load(fed).members]
    data = [prepare(c, task, c.privacy.holdout_fraction) for c in configs]
    x = np.vstack([d.x_train for d in data])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    binary = np.array([set(np.unique(x[:, j])) <= {0.0, 1.0} for j in range(x.shape[1])])
    n_numeric = int(np.max(np.nonzero(~binary)[0]) + 1) if (~binary).any() else 0
    rows = [(((d.x_train - mean) / std).astype(np.float32), d.y_train) for d in data]
    x_test = ((np.vstack([d.x_test for d in data]) - mean) / std).astype(np.float32)
    return rows, x_test, np.concatenate([d.y_test for d in data]), n_numeric


def boosted(rows: list[tuple[np.ndarray, np.ndarray]], x_test: np.ndarray, n_numeric: int, epsilon: float,
            settings: dict, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One emulated DP run: the published ensemble's hold-out margins and the round σ."""
    rounds, depth, batch = settings["num_server_rounds"], settings["gbdt_depth"], settings["gbdt_trees_per_round"]
    tree = resolved(settings, dp=True)  # the run's own defaults under DP
    clip, l2, floor, learning_rate = (tree[k] for k in ("gbdt_grad_clip", "gbdt_l2", "gbdt_min_hessian",
                                                       "gbdt_learning_rate"))
    width = x_test.shape[1]
    thresholds = candidate_thresholds(n_numeric, width, settings["gbdt_bins"])
    sigma = calibrate_noise(((STATISTICS_SIGMA, 1.0, 1),), 1.0, rounds, epsilon, 1e-5)
    rate = float(np.mean(np.concatenate([y for _, y in rows])))
    ensemble = empty_ensemble(depth, float(np.log(rate / (1 - rate))))
    model = BoostedTrees(width, depth)
    tensors = [(torch.from_numpy(x), y) for x, y in rows]
    for _ in range(rounds):
        feature, threshold = random_splits(rng, batch, depth, thresholds)
        model.load_state_dict(ensemble)
        grad = hess = 0.0
        for x, y in tensors:
            with torch.no_grad():
                g, h = gradients(model(x), y, clip)
            gs, hs = leaf_sums(g, h, x, feature, threshold, depth)
            std = sigma * sensitivity(batch, clip)
            grad = grad + gs + rng.normal(0.0, std, gs.shape)
            hess = hess + hs + rng.normal(0.0, std, hs.shape)
        values = leaf_values(grad, hess, learning_rate, l2, floor)
        ensemble = {FEATURE: torch.cat([ensemble[FEATURE], feature]), THRESHOLD: torch.cat([ensemble[THRESHOLD], threshold]),
                    VALUE: torch.cat([ensemble[VALUE], torch.as_tensor(values, dtype=torch.float32)]),
                    BASE: ensemble[BASE]}
    model.load_state_dict(ensemble)
    with torch.no_grad():
        return model(torch.from_numpy(x_test)).numpy(), sigma


def main() -> None:
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["telco", "bank", "retail"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=5, help="noise draws (emulated runs) per cell")
    parser.add_argument("--epsilons", nargs="*", type=float, default=list(EPSILONS))
    parser.add_argument("--variants", type=json.loads, default=VARIANTS,
                        help="settings changed from gbdt_utility.py's DP runs, as a JSON list of objects")
    parser.add_argument("--out", type=Path, default=RESULTS / "gbdt_settings")
    args = parser.parse_args()
    command = "benchmarks/gbdt_settings.py " + " ".join(sys.argv[1:])
    cells = []
    for name in args.datasets:
        if not CSV[name].is_file():
            print(f"skip {name}: not found under ../shared/datasets")
            continue
        rows, x_test, y_test, n_numeric = partners(name, args.seed)
        for variant in args.variants:
            settings = {**DP, **variant}
            for eps in args.epsilons:
                t0 = time.perf_counter()
                rng = np.random.default_rng([args.seed, 7])  # splits and noise: the same draws for every variant
                aucs, sigma = [], 0.0
                for _ in range(args.draws):
                    margin, sigma = boosted(rows, x_test, n_numeric, eps, settings, rng)
                    aucs.append(float(roc_auc_score(y_test, margin)))
                cell = {"dataset": name, "variant": variant, "epsilon": eps, "sigma": round(sigma, 3),
                        "auc_mean": round(statistics.fmean(aucs), 4), "auc_sd": round(statistics.stdev(aucs), 4)
                        if len(aucs) > 1 else 0.0, "aucs": [round(a, 4) for a in aucs],
                        "seconds": round(time.perf_counter() - t0, 1)}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
    lines = [f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"In-process emulation of DP random-split boosting (module docstring): 3 partners, IID, seed {args.seed}, "
             f"{args.draws} noise draws a cell; settings otherwise gbdt_utility.py's DP runs "
             f"({DP['num_server_rounds']} rounds of {DP['gbdt_trees_per_round']} trees of depth {DP['gbdt_depth']}). "
             "Mean hold-out AUC (standard deviation over draws):", "",
             "| dataset | variant | " + " | ".join(f"ε = {e:g}" for e in args.epsilons) + " |",
             "|---|---|" + "---|" * len(args.epsilons)]
    for name in dict.fromkeys(c["dataset"] for c in cells):
        for variant in args.variants:
            got = {c["epsilon"]: c for c in cells if c["dataset"] == name and c["variant"] == variant}
            lines.append(f"| {name} | `{json.dumps(variant)}` | " + " | ".join(
                f"{got[e]['auc_mean']:.3f} ({got[e]['auc_sd']:.3f})" for e in args.epsilons) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "cells": cells}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
