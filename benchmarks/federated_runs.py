"""Wall time, global AUC and per-partner ε of the two reference runs of issue 2.

    .venv/bin/python benchmarks/federated_runs.py            # writes benchmarks/results/federated_runs.json

1. the demo consortium (3 generated partners, 5 rounds, ε = 3 per partner);
2. IBM Telco split into 3 partners by Contract (non-IID), 5 rounds, ε = 3, δ = 1e-5, with
   the pooled non-private logistic regression on the same features and split as reference
   (the pooled model needs all data in one place: it exists only here, as a yardstick).
Each run starts from fresh partner work dirs, so ε starts at 0.
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
from sklearn.metrics import roc_auc_score

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.sandbox.demo_data import generate
from fedcrm.ops.launcher import FLWR_ENV, simulate
from fedcrm.data.prepare import prepare
from fedcrm.sandbox.public_data import TELCO_CSV, split_telco
from fedcrm.reports.tables import read_rounds

RESULTS = Path(__file__).resolve().parent / "results" / "federated_runs.json"


def run(fed: Path, work: Path, config: dict) -> dict:
    t0 = time.monotonic()
    result = simulate(fed, work / "run", work / "flower", config)
    wall = time.monotonic() - t0
    rows = read_rounds(result.run_dir)
    return {
        "status": result.status, "wall_seconds": round(wall, 1), "config": config,
        "auc_by_round": [round(r.auc, 4) for r in rows],
        "log_loss_by_round": [round(r.log_loss, 4) for r in rows],
        "epsilon_final": {k: round(v, 4) for k, v in rows[-1].epsilon.items()},
    }


def pooled_reference(fed: Path) -> float:
    data = [prepare(PartnerConfig.load(m.config), "churn") for m in FederationConfig.load(fed).members]
    x, y = np.vstack([d.x_train for d in data]), np.concatenate([d.y_train for d in data])
    xt, yt = np.vstack([d.x_test for d in data]), np.concatenate([d.y_test for d in data])
    model = LogisticRegression(max_iter=5000).fit(x, y)
    return float(roc_auc_score(yt, model.predict_proba(xt)[:, 1]))


def main() -> None:
    os.environ.update(FLWR_ENV)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fed = generate(tmp / "demo")
        out["demo"] = run(fed, tmp / "demo-run", {"num-server-rounds": 5, "dp-target-epsilon": 3.0})
        if TELCO_CSV.is_file():
            fed = split_telco(tmp / "telco")
            out["telco_by_contract"] = run(fed, tmp / "telco-run",
                                           {"num-server-rounds": 5, "dp-target-epsilon": 3.0, "dp-delta": 1e-5})
            out["telco_by_contract"]["pooled_nonprivate_lr_auc"] = round(pooled_reference(fed), 4)
        else:
            out["telco_by_contract"] = f"skipped: {TELCO_CSV} not found"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
