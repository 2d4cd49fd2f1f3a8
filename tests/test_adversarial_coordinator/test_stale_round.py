"""Attack 7: a late SuperNode pays for a closed round.

A SuperNode down while round 2 ran comes back after the round closed; Flower still holds
round 2's train message for it (12 hours by default). Before the fix it trained on it and
was charged for an update the coordinator had stopped waiting for. Now the node serves a
message only within its time-to-live (the coordinator's round timeout) and within the
partner's own `max_message_age`, whatever time-to-live the coordinator gave it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.app import DEFAULT_TTL, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedcrm.node.freshness import CLOCK_SKEW
from fedcrm.privacy.ledger import Ledger
from tests.test_adversarial_coordinator.test_policy import partner, refusals, weights

RUN_CONFIG = {"task": "churn", "num-server-rounds": 3, "dp-target-epsilon": 2.0}


def train_message(sent_ago: float, ttl: float, server_round: int = 2) -> tuple[Message, float]:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 77, 9, 1
    msg = Message(content=RecordDict({"arrays": ArrayRecord(weights()),
                                      "config": ConfigRecord({"server-round": server_round})}),
                  dst_node_id=9, message_type=MessageType.TRAIN, ttl=ttl)
    msg.metadata.created_at = time.time() - sent_ago
    return msg, msg.metadata.created_at


def context(cfg_source: Path) -> Context:
    return Context(run_id=77, node_id=9, node_config={"partner-config": str(cfg_source)}, state=RecordDict(),
                   run_config=RUN_CONFIG)


@pytest.mark.parametrize(("sent_ago", "ttl", "why"), [
    (120.0, 25.0, "time-to-live"),  # the round timed out 95 s ago
    (7200.0, float(DEFAULT_TTL), "max_message_age"),  # the coordinator left Flower's 12-hour default
], ids=["past-its-ttl", "past-the-partner-max-age"])
def test_a_message_of_a_closed_round_is_refused_before_any_work(fresh_demo: Path, sent_ago: float, ttl: float,
                                                                 why: str) -> None:
    cfg = partner(fresh_demo)
    msg, _ = train_message(sent_ago, ttl)
    reply = client_app(msg, context(cfg.source))
    assert reply.has_error(), "the node trained on a message of a closed round"
    assert reply.error.code == 4103 and why in reply.error.reason, reply.error.reason
    assert Ledger(cfg.work_dir).entries() == [], "charged for a closed round"
    assert not (cfg.work_dir / "prepared").exists()
    assert [(r["kind"], r["run_id"]) for r in refusals(cfg)] == [("train", "77")]


def test_a_message_within_its_round_is_served_and_charged_once(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo)
    msg, _ = train_message(sent_ago=2.0 + CLOCK_SKEW, ttl=60.0)
    reply = client_app(msg, context(cfg.source))
    assert not reply.has_error(), reply.error.reason
    assert [e.server_round for e in Ledger(cfg.work_dir).entries()] == [2]
    assert refusals(cfg) == []


def test_the_coordinator_sends_each_round_with_its_timeout_as_time_to_live(tmp_path: Path) -> None:
    """Flower's default time-to-live is 12 hours: left at that, a late node still finds the
    message. The coordinator's own strategy gives every message its round timeout."""
    from fedcrm.config import TrainPlan
    from fedcrm.coordinator.loop import _strategy
    from fedcrm.coordinator.recorder import RunRecorder
    from fedcrm.rundir import RunDir

    plan = TrainPlan(task="churn", round_timeout=45)
    run = RunDir.create(tmp_path / "run", 5, plan)
    strategy, _ = _strategy(plan, RunRecorder.start(run, {}, plan, 5), 0)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 1, 1
    sent = strategy.track_sent(1, "train", [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=n,
                                                    message_type=MessageType.TRAIN) for n in (11, 12)])
    assert [m.metadata.ttl for m in sent] == [45.0, 45.0]
