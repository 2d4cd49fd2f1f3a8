"""New consortia by commands and configs only, on exports no one here wrote a line for:
`contract draft` (or a shipped contract) → `partner map` → `partner init` → `partner check`
→ `fedcrm run` (real Flower simulation) → `fedcrm score`. Every column the contract makes a
feature reaches the model; learned categories get their levels from the federation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.contract.model import Contract
from fedcrm.sandbox.random_export import random_export

pytestmark = [pytest.mark.flower]


def fedcrm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, f"fedcrm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def onboard(tmp_path: Path, contract: Path, exports: list[Path], task: str, delimiter: str | None = None) -> Path:
    """Map, init and check every partner under `contract`; the federation config naming it."""
    members = []
    for pid, export in enumerate(exports, start=1):
        folder = tmp_path / f"p{pid}"
        folder.mkdir(exist_ok=True)
        extra = ["--delimiter", delimiter] if delimiter else []
        fedcrm("partner", "map", "--contract", str(contract), "--data", str(export), "--name", f"p{pid}",
               "--partner-id", str(pid), "--out", str(folder / "partner.toml"), *extra)
        fedcrm("partner", "init", "--config", str(folder / "partner.toml"))
        check = fedcrm("partner", "check", "--config", str(folder / "partner.toml"), "--task", task)
        assert "passes: no finding" in check.stdout, check.stdout  # the contract's gate (exit 1 on a finding)
        members.append(f'[[members]]\npartner_id = {pid}\nname = "p{pid}"\nconfig = "p{pid}/partner.toml"\n')
    federation = tmp_path / "federation.toml"
    federation.write_text(f'name = "consortium"\ncontract = "{contract}"\n\n' + "\n".join(members))
    return federation


def test_a_generated_export_with_random_names_by_configs_only(tmp_path: Path) -> None:
    spec, exports = random_export(tmp_path / "data", rows=4500, fields=14, seed=3, partners=3)
    contract = tmp_path / "contract.toml"
    fedcrm("contract", "draft", "--data", str(exports[0]), "--id", spec.id_column, "--label", spec.label_column,
           "--task", "churn", "--out", str(contract))
    drafted = Contract.load(contract)
    features = {f.name for f in drafted.features()}
    federation = onboard(tmp_path, contract, exports, "churn")

    run_dir = tmp_path / "run"
    fedcrm("run", "--federation", str(federation), "--out", str(run_dir), "--work", str(tmp_path / "flower"),
           "--rounds", "3", "--epsilon", "3")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_global"]["auc"] > 0.7, summary  # the planted signal
    model = json.loads((run_dir / "model.json").read_text())
    layout = model["layout"]
    reached = {c["name"] for group in ("numeric", "flags", "categories") for c in layout[group]}
    assert reached == features  # every feature the contract defines is in the model
    # every export column but the id, the label, the date (sensitive: dropped) and free text reaches it
    kinds = {col: kind for col, kind in spec.kinds.items()}
    assert len(reached) == sum(k not in ("date", "text") for k in kinds.values())
    # the wide category: its four frequent values learned from the partners' noised counts, the
    # 36 rare ones (about 25 customers each per partner) fell to 'other'
    wide = next(c for c in layout["categories"] if len(c["levels"]) == 6)
    assert wide["learned"] and wide["levels"][-2:] == ["other", "unknown"]
    data = pd.read_csv(exports[0], dtype=str)
    wide_col = next(col for col, k in spec.kinds.items() if k == "wide_category")
    top = set(data[wide_col].str.lower().value_counts().index[:4])
    assert set(wide["levels"][:4]) == top

    scores = tmp_path / "scores.csv"
    fedcrm("score", "--model", str(run_dir), "--partner-config", str(tmp_path / "p2" / "partner.toml"),
           "--out", str(scores))
    out = pd.read_csv(scores, dtype=str)
    assert set(out["customer_id"]) == set(pd.read_csv(exports[1], dtype=str)[spec.id_column])
