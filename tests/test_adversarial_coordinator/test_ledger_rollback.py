"""Attack 8: the ledger reset without forging a hash.

Before the fix the ledger lived in `work/privacy/`, inside the folder the README calls the
cache: deleting `work/` restarted ε at 0. Cutting the ledger's tail and writing a
zero-entry anchor did the same, and `fedcrm privacy verify` passed. Now the ledger lives
in a privacy folder apart from the work dir, and the coordinator keeps a receipt of every
partner's ledger head: a reply whose ledger went back (fewer entries, another head, or a
first part that no longer hashes to the receipt) is a failure, `ledger-rollback` goes to
the audit log, and the partner is refused until its operator acknowledges the reset with
`fedcrm privacy ack-ledger`, which the compliance report shows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from flwr.app import ArrayRecord, Message, Metadata, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID

from fedcrm.config import FederationConfig, TrainPlan
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.account import PrivacyAccount
from fedcrm.privacy.chain import GENESIS
from fedcrm.privacy.ledger import Ledger
from fedcrm.protocol import RoundConfig
from fedcrm.sandbox.demo_data import generate
from tests.test_adversarial_coordinator.test_policy import partner, weights

JOB = "4242"
NODE, HEALTHY = 31, 32  # the attacked partner's SuperNode, and another partner's
PLAN = dict(task="churn", model="logistic", num_server_rounds=10, dp_target_epsilon=1.0, min_partners=1)


def _metadata(message_id: str, src: int, dst: int, reply_to: str = "") -> Metadata:
    return Metadata(run_id=7, message_id=message_id, src_node_id=src, dst_node_id=dst, reply_to_message_id=reply_to,
                    group_id="1", created_at=time.time(), ttl=600.0, message_type="train")


def test_deleting_the_work_dir_keeps_the_ledger_and_epsilon(fresh_demo: Path) -> None:
    """The work dir is a cache: deleting it costs a re-prepare, never the privacy ledger."""
    cfg = partner(fresh_demo)
    plan = TrainPlan(**PLAN)
    _, first = PartnerNode(cfg, plan).train(weights(), 1, run_id=JOB)
    assert first.ledger_entries == 1 and first.epsilon and first.epsilon > 0
    shutil.rmtree(cfg.work_dir)  # "the cache"
    _, second = PartnerNode(cfg, plan).train(weights(), 2, run_id=JOB)
    assert second.ledger_entries == 2, "deleting the work dir reset the ledger"
    assert second.epsilon > first.epsilon, f"ε restarted: {first.epsilon} then {second.epsilon}"
    assert not cfg.privacy_dir.is_relative_to(cfg.work_dir) and (cfg.privacy_dir / "ledger.jsonl").is_file()


def test_an_old_ledger_in_the_work_dir_is_moved_once_not_abandoned(fresh_demo: Path) -> None:
    """A node upgraded from the old layout keeps its history: `work/privacy` is moved to the
    privacy folder by one rename; two ledgers at once are refused, not merged or ignored."""
    cfg = partner(fresh_demo)
    old = cfg.work_dir / "privacy"
    legacy = Ledger.at(old)
    legacy.append(partner=cfg.name, run_id="1", server_round=1, dataset_fingerprint="f", noise_multiplier=1.0,
                  sample_rate=0.01, steps=10, delta=1e-5, max_grad_norm=1.0, accountant="prv", epsilon_after=0.5,
                  epsilon_rdp_after=0.6, epsilon_cap=10.0)
    node = PartnerNode(cfg, TrainPlan(**PLAN))
    assert not old.exists() and [e.run_id for e in node.ledger.entries()] == ["1"]
    assert node.ledger.path == cfg.privacy_dir / "ledger.jsonl"
    shutil.copytree(cfg.privacy_dir, old)  # now there are two
    with pytest.raises(Exception, match="two privacy ledgers"):
        PartnerNode(cfg, TrainPlan(**PLAN))


# ---------------------------------------------------------------- the coordinator side, cheaply
def _chain(folder: Path, n: int, run_id: str = "a") -> Ledger:
    ledger = Ledger.at(folder)
    for r in range(1, n + 1):
        ledger.append(partner="p", run_id=run_id, server_round=r, dataset_fingerprint="f", noise_multiplier=1.0,
                      sample_rate=0.01, steps=10, delta=1e-5, max_grad_norm=1.0, accountant="prv",
                      epsilon_after=0.1 * r, epsilon_rdp_after=0.1 * r, epsilon_cap=10.0)
    return ledger


def _head(ledger: Ledger, receipt: int | None = None):  # noqa: ANN202
    from fedcrm.config import PrivacyPolicy

    return PrivacyAccount(ledger, PrivacyPolicy(), "p", "f").head(receipt)


def _observe(book_path: Path, head: Any, round_: int):  # noqa: ANN202
    from fedcrm.coordinator.receipts import ReceiptBook

    book = ReceiptBook(book_path)
    held = book.read().partner("p").last
    with book.update() as now:
        return ReceiptBook.observe(now, "p", head, held, run_id=JOB, server_round=round_, kind="train")


@pytest.mark.parametrize("attack", ["deleted", "cut-zero-anchor", "cut-and-regrown", "rewritten-same-length"])
def test_every_way_back_is_flagged_by_the_receipt(tmp_path: Path, attack: str) -> None:
    book = tmp_path / "coordinator" / "ledger-receipts.json"
    folder = tmp_path / "privacy"
    ledger = _chain(folder, 3)
    assert not _observe(book, _head(ledger), 1).problem  # the coordinator's receipt: 3 entries
    lines = ledger.path.read_text().splitlines(keepends=True)
    if attack == "deleted":
        shutil.rmtree(folder)
        ledger = _chain(folder, 1, "b")
    elif attack == "cut-zero-anchor":
        ledger.path.write_text(lines[0])
        ledger.head_path.write_text(json.dumps({"entries": 0, "hash": GENESIS}))
    elif attack == "cut-and-regrown":  # back to one entry, then four new ones elsewhere: more than the receipt
        ledger.path.write_text(lines[0])
        ledger.head_path.write_text(json.dumps({"entries": 1, "hash": json.loads(lines[0])["hash"]}))
        ledger = Ledger.at(folder)
        for r in range(2, 6):
            ledger.append(partner="p", run_id="other", server_round=r, dataset_fingerprint="f", noise_multiplier=9.0,
                          sample_rate=0.01, steps=1, delta=1e-5, max_grad_norm=1.0, accountant="prv",
                          epsilon_after=0.0, epsilon_rdp_after=0.0, epsilon_cap=10.0)
    else:  # the same three entries' count, another history
        shutil.rmtree(folder)
        ledger = _chain(folder, 3, "b")
    assert ledger.verify().ok, "the node's own check passes: only the receipt can tell"
    head = _head(ledger, receipt=3)  # the round config asks the node to prove entry 3
    verdict = _observe(book, head, 2)
    assert verdict.problem.startswith("ledger rollback") and verdict.new_flag is not None, verdict
    # refused from now on, whatever the node reports, until acknowledged
    assert "refused by the coordinator" in _observe(book, _head(ledger, 3), 3).problem


def test_a_continuing_ledger_passes_and_moves_the_receipt(tmp_path: Path) -> None:
    from fedcrm.coordinator.receipts import ReceiptBook

    book = tmp_path / "ledger-receipts.json"
    ledger = _chain(tmp_path / "privacy", 2)
    assert not _observe(book, _head(ledger), 1).problem
    ledger.append(partner="p", run_id="a", server_round=3, dataset_fingerprint="f", noise_multiplier=1.0,
                  sample_rate=0.01, steps=10, delta=1e-5, max_grad_norm=1.0, accountant="prv",
                  epsilon_after=0.3, epsilon_rdp_after=0.3, epsilon_cap=10.0)
    head = _head(ledger, receipt=2)
    assert head.ledger_receipt == 2 and head.ledger_receipt_hash is not None
    assert not _observe(book, head, 2).problem
    assert ReceiptBook(book).read().partner("p").last.entries == 3


# ---------------------------------------------------------------- the whole path, once
class Coordinator:
    """The coordinator as the ServerApp runs it (`coordinator.loop`): the recording strategy
    over FedAvg with the federation's receipts and audit log, its recorder and run dir;
    messages go to a real `PartnerNode` directly instead of through a SuperLink."""

    def __init__(self, root: Path, members: FederationConfig) -> None:
        from fedcrm.coordinator.loop import _strategy, partner_names
        from fedcrm.coordinator.recorder import RunRecorder
        from fedcrm.ops.deployment import FederationLayout
        from fedcrm.rundir import RunDir

        self.layout = FederationLayout(root / "federation")
        self.layout.coordinator.mkdir(parents=True)
        self.layout.manifest.write_text(tomli_w.dumps({"name": "fed", "members": [
            {"partner_id": m.partner_id, "name": m.name} for m in members.members]}))
        plan = TrainPlan(**PLAN, federation_config=str(self.layout.manifest), audit_log=str(self.layout.audit.path))
        self.run = RunDir.create(root / "run", JOB, plan)
        self.recorder = RunRecorder.start(self.run, partner_names(plan), plan, JOB)
        self.strategy, _ = _strategy(plan, self.recorder, 0, self.layout.audit)

    def round(self, server_round: int, node: PartnerNode, other_partner_id: int) -> dict[str, Any]:
        """Send the round to the node and to a healthy partner (a copy of the node's reply
        under another partner id and other weights); returns what the coordinator made of it."""
        config = RoundConfig(job_id=JOB).record()
        sent = self.strategy.track_sent(server_round, "train", [
            Message(RecordDict({"arrays": ArrayRecord(weights()), "config": config}),
                    metadata=_metadata(f"m{server_round}-{n}", SUPERLINK_NODE_ID, n)) for n in (NODE, HEALTHY)])
        replies, reply = [], None
        for msg in sent:
            if int(msg.metadata.dst_node_id) != NODE:
                continue
            asked = RoundConfig.of(msg.content).ledger_receipt  # what clients/client_app.py passes on
            state, reply = node.train(msg.content["arrays"].to_torch_state_dict(), server_round, JOB, None, asked)
            replies.append(Message(RecordDict({"arrays": ArrayRecord(state), "metrics": reply.record()}),
                                   metadata=_metadata(f"r{server_round}", NODE, SUPERLINK_NODE_ID,
                                                      msg.metadata.message_id)))
        zeros = {k: v * 0 for k, v in weights().items()}
        replies.append(Message(RecordDict({"arrays": ArrayRecord(zeros), "metrics": healthy_reply(other_partner_id)}),
                               metadata=_metadata(f"h{server_round}", HEALTHY, SUPERLINK_NODE_ID,
                                                  f"m{server_round}-{HEALTHY}")))
        arrays, _ = self.strategy.aggregate_train(server_round, replies)
        self.recorder.flush()
        rec = self.recorder.rounds[server_round]
        return {"asked": [int(m.metadata.dst_node_id) for m in sent], "reply": reply, "record": rec,
                "aggregate_is_healthy": all(float(a.abs().sum()) == 0.0 for a in arrays.to_torch_state_dict().values())}


def healthy_reply(partner_id: int):  # noqa: ANN201
    """Another partner's DP train reply (same keys as any node's), whose ledger stays put."""
    from fedcrm.protocol import TrainReply

    return TrainReply(partner_id=partner_id, num_examples=100, dp_enabled=1, train_loss=0.5, local_steps=1,
                      train_seconds=0.1, epsilon=0.1, epsilon_prv=0.1, epsilon_rdp=0.1, epsilon_run=0.1, epsilon_cap=10.0,
                      epsilon_remaining=9.9, delta=1e-5, noise_multiplier=1.0, sample_rate=0.01, max_grad_norm=1.0,
                      ledger_entries=1, ledger_ok=1, ledger_head=0xABC).record()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three good rounds; the attack (cut to one entry, zero-entry anchor); round 4 flagged;
    round 5 refused; the compliance report; the operator's acknowledgement; round 6 served."""
    from fedcrm.reports.compliance import write_report

    root = tmp_path_factory.mktemp("rollback")
    consortium = generate(root / "consortium")
    cfg = partner(consortium)
    members = FederationConfig.load(consortium)
    other = next(m.partner_id for m in members.members if m.name != cfg.name)
    coord = Coordinator(root, members)
    plan = TrainPlan(**PLAN)
    node = PartnerNode(cfg, plan)
    out: dict[str, Any] = {"cfg": cfg, "coord": coord, "rounds": {}}
    for r in (1, 2, 3):
        out["rounds"][r] = coord.round(r, node, other)

    ledger = Ledger.of(cfg)  # the attack: cut the tail, write a zero-entry anchor
    ledger.path.write_text(ledger.path.read_text().splitlines(keepends=True)[0])
    ledger.head_path.write_text(json.dumps({"entries": 0, "hash": GENESIS}))
    out["verify_after_attack"] = subprocess.run(
        [sys.executable, "-m", "fedcrm", "privacy", "verify", "--config", str(cfg.source)],
        capture_output=True, text=True, timeout=120)

    node = PartnerNode(cfg, plan)  # the SuperNode restarted on the cut ledger
    out["rounds"][4] = coord.round(4, node, other)
    out["rounds"][5] = coord.round(5, node, other)
    out["entries_after_refusal"] = Ledger.of(cfg).verify().entries
    coord.recorder.finish(ArrayRecord(weights()), status="completed")
    write_report(coord.run.path)
    out["report_flagged"] = json.loads((coord.run.path / "compliance.json").read_text())
    out["html_flagged"] = (coord.run.path / "compliance.html").read_text()

    out["ack"] = subprocess.run(
        [sys.executable, "-m", "fedcrm", "privacy", "ack-ledger", cfg.name, "--dir", str(coord.layout.root),
         "--reason", "work folder restored from an old backup; spend before it is lost"],
        capture_output=True, text=True, timeout=120)
    out["rounds"][6] = coord.round(6, node, other)
    coord.recorder.finish(ArrayRecord(weights()), status="completed")
    write_report(coord.run.path)
    out["report_acked"] = json.loads((coord.run.path / "compliance.json").read_text())
    out["html_acked"] = (coord.run.path / "compliance.html").read_text()
    return out


def test_cut_tail_and_zero_anchor_is_flagged_and_the_partner_refused(attacked: dict[str, Any]) -> None:
    cfg, rounds = attacked["cfg"], attacked["rounds"]
    assert attacked["verify_after_attack"].returncode == 0, "the node's own verify no longer passes the attack"
    for r in (1, 2, 3):
        assert cfg.name in rounds[r]["record"].partners and not rounds[r]["record"].failures
    assert rounds[3]["reply"].ledger_entries == 3 and rounds[3]["reply"].ledger_receipt == 2

    flagged = rounds[4]
    assert flagged["reply"].ledger_entries == 2, "the node trained on its cut ledger (ε restarted on the node)"
    failures = [f for f in flagged["record"].failures if f.partner == cfg.name]
    assert len(failures) == 1 and "ledger rollback" in failures[0].reason and "went back" in failures[0].reason
    assert cfg.name not in flagged["record"].partners or not flagged["record"].partners[cfg.name].train
    assert flagged["aggregate_is_healthy"], "the rolled-back partner's update was aggregated"
    audit = [e for e in attacked["coord"].layout.audit.entries() if e.action == "ledger-rollback"]
    assert len(audit) == 1 and audit[0].details["partner"] == cfg.name and audit[0].details["held"]["entries"] == 3

    refused = rounds[5]  # nothing is sent to the partner: it is not charged for an update that would be discarded
    assert refused["asked"] == [HEALTHY] and refused["reply"] is None
    assert any(f.partner == cfg.name and "refused by the coordinator" in f.reason for f in refused["record"].failures)
    assert attacked["entries_after_refusal"] == 2


def test_acknowledging_resets_the_baseline_and_is_audited(attacked: dict[str, Any]) -> None:
    cfg, coord = attacked["cfg"], attacked["coord"]
    assert attacked["ack"].returncode == 0, attacked["ack"].stdout + attacked["ack"].stderr
    acks = [e for e in coord.layout.audit.entries() if e.action == "ledger-rollback-acknowledged"]
    assert len(acks) == 1 and acks[0].details["partner"] == cfg.name and "old backup" in acks[0].details["reason"]
    assert acks[0].details["baseline"]["entries"] == 2 and acks[0].actor.startswith("admin:")
    served = attacked["rounds"][6]
    assert NODE in served["asked"] and served["reply"].ledger_receipt == 2  # proves the new baseline
    assert cfg.name in served["record"].partners and not served["record"].failures
    assert coord.recorder.receipts.read().partner(cfg.name).last.entries == 3
    assert coord.layout.audit.verify().ok


def test_the_compliance_report_shows_the_flag_and_the_acknowledgement(attacked: dict[str, Any]) -> None:
    name = attacked["cfg"].name
    before = {p["partner"]: p for p in attacked["report_flagged"]["partners"]}[name]
    assert before["ledger"]["rollback_open"] and "ROLLBACK" in attacked["html_flagged"]
    assert len(before["rollbacks"]) == 1 and before["rollbacks"][0]["acknowledged"] is None
    assert before["receipt"]["entries"] == 3
    assert 'id="ledger-receipts"' in attacked["html_flagged"] and 'data-flag="open"' in attacked["html_flagged"]
    after = {p["partner"]: p for p in attacked["report_acked"]["partners"]}[name]
    assert not after["ledger"]["rollback_open"] and after["rollbacks"][0]["acknowledged"]["reason"].startswith("work")
    assert after["receipt"]["entries"] == 3 and 'data-flag="acknowledged"' in attacked["html_acked"]
