"""The privacy ledger: hash-chained, anchored, fsync'd; and its ε checked against an
independent accountant (Google's dp-accounting)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.data.layout import standard_layout
from fedcrm.privacy.ledger import Ledger, LedgerTampered
from fedcrm.ml.models import build_model
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.accounting import epsilon


def release(ledger: Ledger, run_id: int, server_round: int, sigma: float = 1.1) -> None:
    ledger.append(partner="p", run_id=run_id, server_round=server_round, dataset_fingerprint="f" * 64,
                  noise_multiplier=sigma, sample_rate=0.02, steps=50, delta=1e-5, max_grad_norm=1.0,
                  accountant="prv", epsilon_after=0.0, epsilon_rdp_after=0.0, epsilon_cap=10.0)


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.at(tmp_path)
    for rnd in (1, 2, 3):
        release(ledger, 1, rnd)
    return ledger


def test_a_clean_ledger_verifies_and_chains(ledger: Ledger) -> None:
    status = ledger.verify()
    assert status.ok and status.entries == 3 and not status.problem
    entries = ledger.entries()
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]


def test_an_edited_line_is_detected(ledger: Ledger) -> None:
    lines = ledger.path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["noise_multiplier"] = 5.0  # someone makes round 2 look cheaper
    lines[1] = json.dumps(entry)
    ledger.path.write_text("\n".join(lines) + "\n")
    status = ledger.verify()
    assert not status.ok and "line 2 was edited" in status.problem
    with pytest.raises(LedgerTampered, match="refuses to train"):
        ledger.entries()


def test_a_removed_line_is_detected(ledger: Ledger) -> None:
    lines = ledger.path.read_text().splitlines()
    ledger.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    assert "line 2 has sequence number 3" in ledger.verify().problem


def test_a_cut_tail_is_detected_by_the_head_anchor(ledger: Ledger) -> None:
    lines = ledger.path.read_text().splitlines()
    ledger.path.write_text("\n".join(lines[:2]) + "\n")  # a consistent chain, one entry short
    assert "truncated: the head anchor records 3 entries, the file holds 2" in ledger.verify().problem
    ledger.path.write_text("\n".join(lines)[:-30])  # cut mid-line
    assert "incomplete" in ledger.verify().problem


def test_a_missing_anchor_is_detected(ledger: Ledger) -> None:
    ledger.head_path.unlink()
    assert "head anchor" in ledger.verify().problem


def test_a_crash_between_append_and_anchor_keeps_the_extra_entry(ledger: Ledger) -> None:
    head = ledger.head_path.read_text()
    release(ledger, 1, 4)
    ledger.head_path.write_text(head)  # the anchor still says 3
    status = ledger.verify()
    assert status.ok and status.entries == 4


def test_an_anchor_moved_back_is_detected(ledger: Ledger) -> None:
    """Cut the tail and write a zero-entry anchor (issue 12, attack 8): more than one entry
    past the anchor is not a crash. (A cut to one entry still looks like a crash after the
    first append; the coordinator's receipt catches that, tests/test_adversarial_coordinator.)"""
    lines = ledger.path.read_text().splitlines(keepends=True)
    ledger.path.write_text("".join(lines[:2]))
    ledger.head_path.write_text(json.dumps({"entries": 0, "hash": "0" * 64}))
    assert "it was moved back" in ledger.verify().problem


def test_hash_at_proves_a_prefix(ledger: Ledger) -> None:
    entries = ledger.entries()
    assert [ledger.hash_at(n) for n in (1, 3)] == [entries[0].hash, entries[2].hash]
    assert ledger.hash_at(0) is None and ledger.hash_at(4) is None


def test_the_tampered_ledger_stops_the_node(fresh_demo: Path) -> None:
    cfg = PartnerConfig.load(FederationConfig.load(fresh_demo).members[0].config)
    plan = TrainPlan.from_run_config({"num-server-rounds": 2})
    state = build_model("logistic", len(standard_layout().names())).state_dict()
    PartnerNode(cfg, plan).train(state, 1, run_id=1)
    led = Ledger.of(cfg)
    led.path.write_text(led.path.read_text().replace('"server_round":1', '"server_round":7'))
    with pytest.raises(LedgerTampered, match="line 1 was edited"):
        PartnerNode(cfg, plan).train(state, 2, run_id=1)


def test_ledger_epsilon_matches_google_dp_accounting(fresh_demo: Path) -> None:
    """PRV (Opacus) vs PLD (dp-accounting), RDP (Opacus) vs RDP (dp-accounting): within 1 %."""
    dp_accounting = pytest.importorskip("dp_accounting", reason="pip install dp-accounting (test extra)")
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.rdp import rdp_privacy_accountant

    cfg = PartnerConfig.load(FederationConfig.load(fresh_demo).members[1].config)
    state = build_model("logistic", len(standard_layout().names())).state_dict()
    # two runs with different targets: a ledger of heterogeneous (σ, q, steps)
    for run_id, target in ((1, 1.0), (2, 2.0)):
        node = PartnerNode(cfg, TrainPlan.from_run_config({"num-server-rounds": 2, "dp-target-epsilon": target}))
        for rnd in (1, 2):
            state, _ = node.train(state, rnd, run_id=run_id)
    entries = Ledger.of(cfg).entries()
    assert len({e.noise_multiplier for e in entries}) == 2
    delta = cfg.privacy.delta

    def compose(accountant):  # noqa: ANN001, ANN202
        for e in entries:
            accountant.compose(dp_event.PoissonSampledDpEvent(
                e.sample_rate, dp_event.GaussianDpEvent(e.noise_multiplier)), e.steps)
        return accountant.get_epsilon(delta)

    relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    pld = compose(pld_privacy_accountant.PLDAccountant(relation, value_discretization_interval=1e-4))
    rdp = compose(rdp_privacy_accountant.RdpAccountant(neighboring_relation=relation))
    ours_prv = entries[-1].epsilon_after
    ours_rdp = entries[-1].epsilon_rdp_after
    assert ours_prv == pytest.approx(epsilon([e.history_entry for e in entries], delta, "prv"), rel=1e-9)
    assert ours_prv == pytest.approx(pld, rel=0.01)
    assert ours_rdp == pytest.approx(rdp, rel=0.01)


def test_a_line_written_with_an_integer_run_id_still_verifies(tmp_path: Path) -> None:
    """Before run ids were text, the ledger wrote them as JSON integers: such a line verifies
    against what was written, reads as text, and the chain goes on from it."""
    import hashlib

    ledger = Ledger.at(tmp_path)
    release(ledger, 7, 1)
    entry = json.loads(ledger.path.read_text())
    entry["run_id"] = 7
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    ledger.path.write_text(json.dumps(entry) + "\n")
    ledger.head_path.write_text(json.dumps({"entries": 1, "hash": entry["hash"]}))
    assert ledger.verify().ok and ledger.entries()[0].run_id == "7"
    release(ledger, 7, 2)
    assert ledger.verify().ok and [e.server_round for e in ledger.entries() if e.run_id == "7"] == [1, 2]
    entry["run_id"] = 8  # an edit of the old line is still an edit
    ledger.path.write_text(json.dumps(entry) + "\n" + ledger.path.read_text().split("\n", 1)[1])
    assert not ledger.verify().ok
