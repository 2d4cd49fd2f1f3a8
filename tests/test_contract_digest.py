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
from fedcrm.privacy.ledger import Ledger

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
STANDARD = Path(__file__).resolve().parents[1] / "src" / "fedcrm" / "contract" / "standard.toml"


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

    # the node holds the standard contract's fields (its mapping fits them) at another version
    revised = cfg_path.parent / "revised.toml"
    revised.write_text(STANDARD.read_text().replace("version = 1", "version = 2", 1))
    name_contract(cfg_path, revised)
    other = PartnerNode(PartnerConfig.load(cfg_path), run)
    mine = Contract.load(revised).digest()
    with pytest.raises(PolicyRefusal, match=f"{telecom[:16]}, this node's copy is {mine[:16]}"):
        other.feature_sums("c2")
    with pytest.raises(PolicyRefusal, match="the run's contract is none"):
        PartnerNode(PartnerConfig.load(cfg_path), TrainPlan()).feature_sums("c3")
    assert Ledger.of(PartnerConfig.load(cfg_path)).entries() == []  # refused before anything was released
    refusals = [json.loads(line) for line in (PartnerConfig.load(cfg_path).work_dir / "refusals.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in refusals] == ["c1", "c2", "c3"]

# The same at the Flower level, a run under the contract with one partner holding another:
# tests/test_onboarding_flow.py.


def test_a_changed_copy_of_a_contract_is_hashed_afresh() -> None:
    """The digest is kept per contract instance; a copy with changes must not inherit it."""
    import hashlib

    contract = Contract.load(CONTRACTS / "telecom.toml")
    first = contract.digest()
    changed = contract.model_copy(update={"contract": contract.contract.model_copy(update={"version": 99})})
    assert changed.digest() != first
    assert changed.digest() == hashlib.sha256(changed.canonical_json().encode("utf-8")).hexdigest()
    assert contract.digest() == first == Contract.load(CONTRACTS / "telecom.toml").digest()
