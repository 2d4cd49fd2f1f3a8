"""Utility of the federation against local-only and pooled baselines on IBM Telco (churn)
and UCI Bank Marketing (propensity, without `duration`).

    .venv/bin/python benchmarks/utility.py telco   # = fedcrm benchmark utility --data telco
    .venv/bin/python benchmarks/utility.py bank    # writes benchmarks/results/utility_bank.{json,md,baselines.json}
    .venv/bin/python benchmarks/utility.py telco 0.1   # data-scarce: 10 % of each partner's rows (utility_telco_keep10)

5 partners, IID and label-skewed splits (Dirichlet α = 1 over each class), 3 seeds, 10 rounds;
see `fedcrm.utility` for what each variant is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fedcrm.launcher import FLWR_ENV
from fedcrm.utility import Settings, markdown, run, write

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    os.environ.update(FLWR_ENV)
    keep = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    settings = Settings(data=sys.argv[1] if len(sys.argv) > 1 else "telco", keep_fraction=keep)
    name = f"utility_{settings.data}" + (f"_keep{round(keep * 100)}" if keep < 1 else "")
    report = run(settings, Path(__file__).resolve().parents[1] / ".work" / name)
    write(report, RESULTS / name)
    print(markdown(report))
