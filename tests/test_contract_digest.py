"""The consortium's contract travels with every run as a digest: a node whose own copy
differs refuses the run, naming both digests; plan.json and model.json record it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.contract.model import Contract
from fedcrm.errors import PolicyRefusal
from fedcrm.node.partner import PartnerNode
from fedcrm.ops.launcher import simulate
from fedcrm.privacy.ledger import Ledger
from fedcrm.protocol import ERROR_POLICY
from fedcrm.rundir import RunDir

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"


def name_contract(config: Path, contract: Path) -> None:
    """Put `contract = "<copy>"` at the top of a TOML config (top-level keys precede tables)."""
    copy = config.parent / "contract.toml"
    shutil.copyfile(contract, copy)
    config.write_text(f'contract = "{copy.name}"\n' + config.read_text())


def test_a_node_refuses_a_run_under_another_contract(fresh_demo: Path) -> None:
    cfg_path = FederationConfig.load(fresh_demo).members[0].config
    telecom = Contract.load(CONTRACTS / "telecom.toml").digest()
    run = TrainPlan(contract_digest=telecom)

    without = PartnerNode(PartnerConfig.load(cfg_path), run)
    with pytest.raises(PolicyRefusal, match=f"the run's contract is {telecom[:16]}, this node's copy is none"):
        without.feature_sums("c1")

    name_contract(cfg_path, CONTRACTS / "banking.toml")
    other = PartnerNode(PartnerConfig.load(cfg_path), run)
    banking = Contract.load(CONTRACTS / "banking.toml").digest()
    with pytest.raises(PolicyRefusal, match=f"{telecom[:16]}, this node's copy is {banking[:16]}"):
        other.feature_sums("c2")
    with pytest.raises(PolicyRefusal, match="the run's contract is none"):
        PartnerNode(PartnerConfig.load(cfg_path), TrainPlan()).feature_sums("c3")
    assert Ledger.of(PartnerConfig.load(cfg_path)).entries() == []  # refused before anything was released
    refusals = [json.loads(line) for line in (PartnerConfig.load(cfg_path).work_dir / "refusals.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in refusals] == ["c1", "c2", "c3"]


@pytest.mark.flower
def test_the_contract_digest_travels_with_the_run(fresh_demo: Path, tmp_path: Path) -> None:
    """Two partners hold the consortium's contract, the third another one: the run goes on
    with the two, the third's refusal names both digests, and the run records the digest."""
    members = FederationConfig.load(fresh_demo).members
    name_contract(fresh_demo, CONTRACTS / "telecom.toml")
    for m in members[:2]:
        name_contract(m.config, CONTRACTS / "telecom.toml")
    name_contract(members[2].config, CONTRACTS / "banking.toml")
    digest = Contract.load(CONTRACTS / "telecom.toml").digest()
    assert FederationConfig.load(fresh_demo).contract_digest() == digest

    run_dir = tmp_path / "run"
    simulate(fresh_demo, run_dir, tmp_path / "flower", {"num-server-rounds": 1, "min-partners": 2}, timeout=600)
    assert RunDir(run_dir).plan.contract_digest == digest
    assert json.loads((run_dir / "model.json").read_text())["contract_digest"] == digest
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    rounds = json.loads((run_dir / "metrics.json").read_text())["rounds"]
    failures = [f for r in rounds for f in r["failures"]]
    # (a node that never answered is known to the coordinator by its node id only)
    assert len({f["node_id"] for f in failures}) == 1 and rounds[-1]["absent"] == [members[2].name]
    assert all(f["code"] == ERROR_POLICY and digest[:16] in f["reason"] for f in failures)
    logged = (PartnerConfig.load(members[2].config).work_dir / "refusals.jsonl").read_text()
    assert digest[:16] in logged and Ledger.of(PartnerConfig.load(members[2].config)).entries() == []
