"""Membership-inference audit on IBM Telco: DP at ε = 1 per partner vs a deliberately
overfit non-private model.

    .venv/bin/python benchmarks/privacy_audit.py       # writes benchmarks/results/privacy_audit.json

Telco is split into 3 partners by Contract (non-IID). Two real `flwr run` simulations on
fresh partner work dirs:
1. `dp`: logistic model, DP-SGD with ε = 1, δ = 1e-5 per partner, 5 rounds;
2. `overfit`: non-private MLP (256 hidden), Adam, 20 local epochs × 10 rounds — built to memorise.
Each partner then audits the published model on its own rows (members = training rows,
non-members = held-out rows), several seeds of the balanced member sample.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.ops.launcher import FLWR_ENV, simulate
from fedcrm.node.partner import PartnerNode
from fedcrm.sandbox.public_data import TELCO_CSV, split_telco
from fedcrm.reports.tables import read_rounds
from fedcrm.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_audit.json"
SEEDS = range(5)
RUNS = {
    "dp": {"num-server-rounds": 5, "dp-target-epsilon": 1.0, "dp-delta": 1e-5},
    "overfit": {"num-server-rounds": 10, "dp-enabled": False, "model": "mlp", "model-hidden": 256,
                "optimizer": "adam", "learning-rate": 0.005, "local-epochs": 20, "batch-size": 32},
}


def audit(fed: Path, run_dir: Path) -> dict:
    run = RunDir(run_dir)
    out = {}
    for m in FederationConfig.load(fed).members:
        node = PartnerNode(PartnerConfig.load(m.config), run.plan)
        results = [node.audit(run, seed=s) for s in SEEDS]
        adv = [r.attack.advantage for r in results]
        out[m.name] = {
            "members_each": results[0].members,
            "attack_auc_mean": round(float(np.mean([r.attack.auc for r in results])), 4),
            "advantage_mean": round(float(np.mean(adv)), 4), "advantage_min": round(min(adv), 4),
            "advantage_max": round(max(adv), 4),
            "null_advantage_97_5": round(results[0].null_advantage_band[1], 4),
            "epsilon": results[0].epsilon, "advantage_bound": results[0].advantage_bound,
        }
    return out


def main() -> None:
    if not TELCO_CSV.is_file():
        raise SystemExit(f"IBM Telco not found at {TELCO_CSV}")
    os.environ.update(FLWR_ENV)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "date": time.strftime("%Y-%m-%d"), "seeds": len(SEEDS), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in RUNS.items():
            work = Path(tmp) / name
            fed = split_telco(work / "telco", benchmark_policy=True)  # fresh work dirs: ε starts at 0; the overfit run has no DP
            t0 = time.monotonic()
            result = simulate(fed, work / "run", work / "flower", config)
            rows = read_rounds(result.run_dir)
            out["runs"][name] = {"config": config, "wall_seconds": round(time.monotonic() - t0, 1),
                                 "auc_by_round": [round(r.auc, 4) for r in rows],
                                 "audit": audit(fed, result.run_dir)}
            print(name, json.dumps(out["runs"][name], indent=1), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
