"""Utility of the federation against local-only and pooled baselines on IBM Telco (churn)
and UCI Bank Marketing (propensity, without `duration`).

    .venv/bin/python benchmarks/utility.py telco   # = fedcrm benchmark utility --data telco
    .venv/bin/python benchmarks/utility.py bank    # writes benchmarks/results/utility_bank.{json,md,baselines.json}
    .venv/bin/python benchmarks/utility.py telco 0.2   # data-scarce: 20 % of each partner's rows (utility_telco_keep20)
    .venv/bin/python benchmarks/utility.py telco 0.2 --model mlp --learning-rate 0.1   # (utility_telco_keep20_mlp)

5 partners, IID and label-skewed splits (Dirichlet α = 1 over each class), 3 seeds, 10 rounds;
see `fedcrm.sandbox.utility` for what each variant is.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedcrm.ops.launcher import FLWR_ENV
from fedcrm.sandbox.utility import Settings, markdown, run, write

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default="telco", choices=["telco", "bank"])
    parser.add_argument("keep", nargs="?", type=float, default=1.0, help="share of each partner's rows kept")
    parser.add_argument("--model", default="logistic", choices=["logistic", "mlp"])
    parser.add_argument("--learning-rate", type=float, default=0.5)
    args = parser.parse_args()
    os.environ.update(FLWR_ENV)
    settings = Settings(data=args.data, keep_fraction=args.keep, model=args.model, learning_rate=args.learning_rate)
    report = run(settings, Path(__file__).resolve().parents[1] / ".work" / settings.name)
    write(report, RESULTS / settings.name)
    print(markdown(report))
