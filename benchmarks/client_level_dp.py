"""What client-level (central) DP costs a small consortium: the demo's 3 partners.

    .venv/bin/python benchmarks/client_level_dp.py     # writes benchmarks/results/client_level_dp.json

Three real `flwr run` simulations, 5 rounds, every partner at record-level ε = 3 (DP-SGD),
then Flower's server-side fixed clipping (clip 1.0) with noise σ = 0.5 and 1.0 on top.
With n partners the noise on the mean has standard deviation σ·C/n: with n = 3 it is a
third of the clipping norm on every coordinate, every round.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from fedcrm.sandbox.demo_data import generate
from fedcrm.ops.launcher import FLWR_ENV, simulate
from fedcrm.reports.tables import read_rounds
from fedcrm.rundir import RunDir

RESULTS = Path(__file__).resolve().parent / "results" / "client_level_dp.json"
BASE = {"num-server-rounds": 5, "dp-target-epsilon": 3.0, "min-partners": 3}
RUNS = {
    "record-level only": {},
    "client-level sigma 0.5": {"client-dp": True, "client-dp-noise-multiplier": 0.5, "client-dp-clipping-norm": 1.0},
    "client-level sigma 1.0": {"client-dp": True, "client-dp-noise-multiplier": 1.0, "client-dp-clipping-norm": 1.0},
}


def main() -> None:
    os.environ.update(FLWR_ENV)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "date": time.strftime("%Y-%m-%d"), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in RUNS.items():
            work = Path(tmp) / name.replace(" ", "-")
            fed = generate(work / "consortium")
            result = simulate(fed, work / "run", work / "flower", {**BASE, **extra})
            eps = RunDir(result.run_dir).epsilon()
            out["runs"][name] = {
                "config": {**BASE, **extra},
                "auc_by_round": [round(r.auc, 4) for r in read_rounds(result.run_dir)],
                "record_level_epsilon_final": {k: round(v[-1].epsilon, 3) for k, v in eps.partners.items()},
                "client_level_epsilon_by_round": [round(c.epsilon, 3) for c in eps.client_level],
            }
            print(name, out["runs"][name], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
