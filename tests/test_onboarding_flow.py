"""A new consortium on IBM Telco, by commands and configs only: the shipped telecom contract,
`partner map` per partner, `partner init`, `partner check` (gated by the contract),
`fedcrm run` under the contract's digest, and `fedcrm score` on a partner's node. A third
partner holding another contract is refused by its own node, naming both digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.protocol import ERROR_POLICY
from fedcrm.sandbox.public_data import TELCO_CSV

pytestmark = [pytest.mark.flower, pytest.mark.dataset]
CONTRACT = Path(__file__).resolve().parents[1] / "contracts" / "telecom.toml"


def fedcrm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, f"fedcrm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_telco_by_configs_only(tmp_path: Path) -> None:
    if not TELCO_CSV.is_file():
        pytest.skip(f"IBM Telco not found at {TELCO_CSV} (../shared/datasets)")
    telco = pd.read_csv(TELCO_CSV, dtype=str, keep_default_na=False)
    members = []
    for pid, part in enumerate((telco.iloc[::3], telco.iloc[1::3], telco.iloc[2::3]), start=1):
        folder = tmp_path / f"telco-p{pid}"
        folder.mkdir()
        part.to_csv(folder / "export.csv", index=False)
        held = CONTRACT
        if pid == 3:  # this partner's copy is another contract (same fields the pipeline reads)
            held = folder / "contract.toml"
            held.write_text(CONTRACT.read_text().replace('version = 1', 'version = 2', 1))
        fedcrm("partner", "map", "--contract", str(held), "--data", str(folder / "export.csv"), "--name",
               f"telco-p{pid}", "--partner-id", str(pid), "--out", str(folder / "partner.toml"))
        config = (folder / "partner.toml").read_text()
        assert 'contract = "' in config and 'contract = "Contract"' in config  # its own copy, and the column
        fedcrm("partner", "init", "--config", str(folder / "partner.toml"))
        check = fedcrm("partner", "check", "--config", str(folder / "partner.toml"), "--task", "churn")
        assert "passes: no finding" in check.stdout  # the contract's gate, which would exit 1 on a finding
        members.append(f'[[members]]\npartner_id = {pid}\nname = "telco-p{pid}"\nconfig = "telco-p{pid}/partner.toml"\n')
    federation = tmp_path / "federation.toml"
    federation.write_text(f'name = "telco-consortium"\ncontract = "{CONTRACT}"\n\n' + "\n".join(members))

    run_dir = tmp_path / "run"
    run = fedcrm("run", "--federation", str(federation), "--out", str(run_dir), "--work", str(tmp_path / "flower"),
                 "--rounds", "1", "--epsilon", "3",  # min-partners 2 (the default): the run goes on without p3
                 "--mlflow-uri", (tmp_path / "mlruns").as_uri())  # and logged to MLflow as it ends
    # the refusals are printed as they land, with the node's reason; the run ends with what to do next
    printed = [line for line in run.stdout.splitlines() if "telco-p3 refused" in line]
    assert printed and all("contract" in line for line in printed), run.stdout
    assert "fedcrm report compliance" in run.stdout and "fedcrm score --model" in run.stdout
    assert "MLflow: run" in run.stdout and (tmp_path / "mlruns").is_dir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_global"]["auc"] > 0.7, summary
    from fedcrm.contract.model import Contract

    digest = Contract.load(CONTRACT).digest()
    assert json.loads((run_dir / "model.json").read_text())["contract_digest"] == digest
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    failures = [f for r in rounds for f in r["failures"]]  # the third partner's node refused every message
    assert failures and rounds[-1]["absent"] == ["telco-p3"]
    assert all(f["code"] == ERROR_POLICY and digest[:16] in f["reason"] for f in failures), failures

    scores = tmp_path / "scores.csv"
    fedcrm("score", "--model", str(run_dir), "--partner-config", str(tmp_path / "telco-p1" / "partner.toml"),
           "--out", str(scores))
    out = pd.read_csv(scores, dtype=str)
    assert set(out["customer_id"]) == set(telco.iloc[::3]["customerID"])  # its own customers, its own ids
