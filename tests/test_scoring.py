"""Scoring on the partner's node: every current customer once, under its own id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.data.layout import standard_layout
from fedcrm.ml.models import build_model
from fedcrm.rundir import ModelMeta, RunDir, RunSummary
from fedcrm.config.tiers import TierRule
from fedcrm.node.scoring import churn_tiers, deciles, score_partner


def a_run_dir(path: Path, task: str, seed: int = 1) -> RunDir:
    """A published model as a run directory holds it (weights random: scoring is what is tested)."""
    run = RunDir.create(path, 77, TrainPlan(task=task))
    model = build_model("logistic", len(standard_layout().names()), seed=seed)
    run.publish(model.state_dict(), ModelMeta(kind="logistic", features=standard_layout().names(), task=task),
                RunSummary(run_id=77, status="completed", rounds_completed=0, flower_runs=[77], final_global={}, epsilon={}))
    return run


def test_tiers_and_deciles() -> None:
    s = np.array([0.9, 0.6, 0.3, 0.1])
    assert churn_tiers(s, TierRule()).tolist() == ["high", "high", "medium", "low"]
    assert deciles(np.linspace(1, 0, 20)).tolist() == [d for d in range(1, 11) for _ in range(2)]
    by_decile = churn_tiers(np.linspace(1, 0, 10), TierRule(by="deciles", high_deciles=1, medium_deciles=3))
    assert by_decile.tolist() == ["high", "medium", "medium"] + ["low"] * 7
    with pytest.raises(ValueError, match="below the high tier"):
        TierRule(high=0.2, medium=0.4)


@pytest.mark.parametrize("member, task", [(1, "churn"), (2, "propensity")])
def test_every_customer_once_with_its_own_id(demo_federation: Path, tmp_path: Path, member: int, task: str) -> None:
    cfg = PartnerConfig.load(FederationConfig.load(demo_federation).members[member].config)
    summary = score_partner(cfg, a_run_dir(tmp_path / "run", task), TierRule(), tmp_path / "scores.csv")
    out = pd.read_csv(tmp_path / "scores.csv", dtype={"customer_id": str})
    raw = pd.read_csv(cfg.customers.path, sep=cfg.customers.delimiter, dtype=str) if cfg.customers.path.suffix == ".csv" \
        else pd.read_parquet(cfg.customers.path).astype(str)
    raw_ids = raw[cfg.customers.columns["customer_id"]].dropna().str.strip()
    assert out["customer_id"].is_unique
    assert set(out["customer_id"]) == set(raw_ids)  # one row per customer in the export, real ids restored
    assert summary.customers == len(out) == raw_ids.nunique()
    scored = out[out["status"] == "scored"]
    assert scored["score"].between(0, 1).all() and summary.scored == len(scored) > 0.95 * len(out)
    assert out.loc[out["status"] != "scored", "status"].str.startswith("not scored: ").all()
    # every row says which model scored it: the run and the SHA-256 of its published weights
    import hashlib
    run = tmp_path / "run"
    assert set(out["run_id"].astype(str)) == {"77"}
    assert set(out["model_sha256"]) == {hashlib.sha256((run / "model.pt").read_bytes()).hexdigest()[:16]}
    if task == "churn":
        assert set(scored["churn_risk"]) <= {"high", "medium", "low"}
    else:
        assert sorted(scored["propensity_decile"].unique()) == list(range(1, 11))


def test_the_contract_says_how_a_task_is_scored(demo_federation: Path, tmp_path: Path) -> None:
    """Risk tiers or deciles is the task's `scores` in the contract, not its name: a
    consortium whose 'churn' task asks for deciles gets deciles."""
    import tomlkit

    from importlib.resources import files

    from tests.conftest import copy_partner

    standard = files("fedcrm.contract").joinpath("standard.toml").read_text(encoding="utf-8")
    contract = tmp_path / "contract.toml"
    contract.write_text(standard.replace('scores = "risk-tiers"', 'scores = "deciles"'))
    config = copy_partner(FederationConfig.load(demo_federation).members[0].config, tmp_path / "p")
    doc = tomlkit.parse(config.read_text())
    doc["contract"] = str(contract)
    config.write_text(tomlkit.dumps(doc))
    cfg = PartnerConfig.load(config)
    assert cfg.contract_model.task("churn").scores == "deciles"
    summary = score_partner(cfg, a_run_dir(tmp_path / "run", "churn"), TierRule(), tmp_path / "scores.csv")
    out = pd.read_csv(tmp_path / "scores.csv")
    assert "churn_risk" not in out.columns and sorted(summary.by_tier) == sorted(str(d) for d in range(1, 11))
