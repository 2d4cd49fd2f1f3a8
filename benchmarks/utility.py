"""Utility of the federation against local-only and pooled baselines on IBM Telco.

    .venv/bin/python benchmarks/utility.py     # = fedcrm benchmark utility (writes benchmarks/results/utility_telco.{json,md})

5 partners, IID and label-skewed splits (Dirichlet α = 1 over each class), 3 seeds, 10 rounds;
see `fedcrm.utility` for what each variant is.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedcrm.launcher import FLWR_ENV
from fedcrm.utility import Settings, markdown, run, write

RESULTS = Path(__file__).resolve().parent / "results" / "utility_telco"

if __name__ == "__main__":
    os.environ.update(FLWR_ENV)
    report = run(Settings(), Path(__file__).resolve().parents[1] / ".work" / "utility")
    write(report, RESULTS)
    print(markdown(report))
