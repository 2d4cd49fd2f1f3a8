"""A malicious coordinator controls the run config; the partner's privacy policy wins.

One test per attack: the node refuses with a plain reason, logs the refusal on the node,
and releases, prepares, trains and charges nothing for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedcrm import errors
from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.data.layout import standard_layout
from fedcrm.data.prepare import prepare
from fedcrm.ml.models import build_model
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.ledger import Ledger
from tests.conftest import set_privacy

BASE_PRIVACY = ("epsilon_cap", "delta", "accountant", "compose_over")


def partner(consortium: Path, **policy: Any) -> PartnerConfig:
    """The demo's south-broadband partner, with `policy` written into its own `[privacy]` table."""
    path = FederationConfig.load(consortium).members[2].config
    if policy:
        kept = PartnerConfig.load(path).privacy.model_dump(include=set(BASE_PRIVACY))
        set_privacy(path, **{**kept, **policy})
    return PartnerConfig.load(path)


def node(cfg: PartnerConfig, **run_config: Any) -> PartnerNode:
    return PartnerNode(cfg, TrainPlan.from_run_config({"task": "churn", "model": "logistic", **run_config}))


def weights() -> dict[str, Any]:
    return build_model("logistic", len(standard_layout().names())).state_dict()


def attempt(call: Callable[[], Any]) -> Any:
    """The reply, or the error the node raised instead."""
    try:
        return call()
    except errors.FedcrmError as exc:
        return exc


def refusals(cfg: PartnerConfig) -> list[dict[str, Any]]:
    log = cfg.work_dir / "refusals.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def assert_refused(outcome: Any, cfg: PartnerConfig, kind: str, run_id: str | None, reason: str,
                   prepared: bool = False, charged_before: int = 0) -> None:
    """A policy refusal with a plain reason, logged on the node, and nothing released or charged."""
    assert isinstance(outcome, Exception), f"the node released a {type(outcome).__name__} instead of refusing"
    assert isinstance(outcome, errors.PolicyRefusal), f"{type(outcome).__name__}: {outcome}"
    assert reason in str(outcome), str(outcome)
    assert len(Ledger(cfg.work_dir).entries()) == charged_before, "a refused run charged the ledger"
    replies = cfg.work_dir / "privacy" / "replies"
    assert not replies.exists() or not any(replies.rglob("*")), "a refused run kept a trained release"
    if not prepared:  # refused before the data was even prepared
        assert not (cfg.work_dir / "prepared").exists()
    last = refusals(cfg)[-1]
    assert (last["kind"], last["run_id"]) == (kind, run_id) and reason in last["reason"] and last["time"]


def test_a_run_without_dp_is_refused_unless_the_partner_allows_it(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo)  # the default policy: DP required
    run = node(cfg, **{"dp-enabled": False, "num-server-rounds": 2})
    assert_refused(attempt(lambda: run.train(weights(), 1, "run-a")), cfg, "train", "run-a", "dp-enabled = false")
    assert_refused(attempt(lambda: run.feature_sums("run-a")), cfg, "statistics", "run-a", "dp-enabled = false")
    assert len(refusals(cfg)) == 2

    cfg = partner(fresh_demo, dp_required=False)  # the partner's own decision
    _, reply = node(cfg, **{"dp-enabled": False, "num-server-rounds": 2}).train(weights(), 1, "run-b")
    assert reply.dp_enabled == 0 and reply.num_examples > 0
    assert Ledger(cfg.work_dir).entries() == [] and len(refusals(cfg)) == 2


def test_run_test_fraction_does_not_move_the_holdout(fresh_demo: Path) -> None:
    """The reply's row count is a noised release (σ per count, 40 counts): it lands within
    4σ√40 of the partner's own hold-out, far from what the run's fraction would give."""
    cfg = partner(fresh_demo)
    expected = prepare(cfg, "churn", 0.2).summary.n_test  # the default policy's holdout_fraction
    assert expected >= 50  # the default min_holdout_rows
    for fraction in (0.99, 0.003):  # nearly every row an evaluation set; a handful of customers' labels
        reply = attempt(lambda: node(cfg, **{"test-fraction": fraction}).evaluate(weights(), run_id=f"tf-{fraction}"))
        assert not isinstance(reply, Exception), reply
        assert reply.noise_multiplier >= cfg.privacy.min_eval_noise_multiplier
        assert abs(reply.num_examples - expected) <= 4 * reply.noise_multiplier * 40**0.5, (fraction, reply, expected)
        data = node(cfg, **{"test-fraction": fraction}).data()
        assert len(data.y_test) == expected and len(data.y_train) > expected  # training rows stay training rows

    cfg = partner(fresh_demo, holdout_fraction=0.5)  # the partner's fraction, not the run's
    reply = node(cfg, **{"test-fraction": 0.003}).evaluate(weights(), run_id="tf-0.5")
    wider = prepare(cfg, "churn", 0.5).summary.n_test
    assert wider - expected > 8 * reply.noise_multiplier * 40**0.5  # the two are told apart through the noise
    assert abs(reply.num_examples - wider) <= 4 * reply.noise_multiplier * 40**0.5
    assert refusals(cfg) == []


def test_evaluation_on_a_holdout_below_the_minimum_is_refused(fresh_demo: Path) -> None:
    rows = prepare(partner(fresh_demo), "churn", 0.2).summary.n_test
    cfg = partner(fresh_demo, min_holdout_rows=rows + 1)
    run = PartnerNode(cfg, TrainPlan.from_run_config({"test-fraction": 0.2}), run_id=31)
    outcome = attempt(lambda: run.evaluate(weights()))
    assert_refused(outcome, cfg, "evaluate", "31", f"the hold-out has {rows} rows", prepared=True)
    assert "min_holdout_rows" in str(outcome)


def test_more_epsilon_or_rounds_than_the_policy_allows_is_refused(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo, max_run_epsilon=1.0, max_rounds=3)
    greedy = node(cfg, **{"dp-target-epsilon": 3.0, "num-server-rounds": 2})
    assert_refused(attempt(lambda: greedy.train(weights(), 1, "eps")), cfg, "train", "eps", "ε 3")
    assert_refused(attempt(lambda: greedy.feature_sums("eps")), cfg, "statistics", "eps", "ε 3")
    long = node(cfg, **{"dp-target-epsilon": 0.5, "num-server-rounds": 10})
    assert_refused(attempt(lambda: long.train(weights(), 1, "long")), cfg, "train", "long", "10 rounds")
    # a run that declares 3 rounds but sends a fourth
    sneaky = node(cfg, **{"dp-target-epsilon": 0.5, "num-server-rounds": 3})
    assert_refused(attempt(lambda: sneaky.train(weights(), 4, "sneaky")), cfg, "train", "sneaky", "round 4")
    no_dp = node(cfg, **{"dp-enabled": False, "num-server-rounds": 2})
    assert_refused(attempt(lambda: no_dp.train(weights(), 1, "plain")), cfg, "train", "plain", "no ε bound")
    assert len(refusals(cfg)) == 5


def test_a_release_kind_the_partner_does_not_make_is_refused(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo, releases=["evaluate"])
    run = node(cfg, **{"stats-noise-multiplier": 1.0})  # noised sums would be charged to the ledger
    assert_refused(attempt(lambda: run.feature_sums("rel")), cfg, "statistics", "rel", "does not release 'statistics'")
    assert_refused(attempt(lambda: run.train(weights(), 1, "rel")), cfg, "train", "rel", "does not release 'train'")
    assert run.evaluate(weights(), run_id="rel").num_examples > 0  # the kind it does release still works
    assert [e.kind for e in Ledger(cfg.work_dir).entries()] == ["evaluate"]  # and is charged

    cfg = partner(fresh_demo, releases=["train", "statistics"])
    outcome = attempt(lambda: node(cfg).evaluate(weights(), run_id="rel-2"))
    assert_refused(outcome, cfg, "evaluate", "rel-2", "does not release 'evaluate'", prepared=True, charged_before=1)


def test_client_app_returns_a_policy_error_reply(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 4103, 9, 1
    msg = Message(content=RecordDict({"arrays": ArrayRecord(weights()), "config": ConfigRecord({"server-round": 1})}),
                  dst_node_id=9, message_type=MessageType.TRAIN)
    context = Context(run_id=4103, node_id=9, node_config={"partner-config": str(cfg.source)}, state=RecordDict(),
                      run_config={"task": "churn", "dp-enabled": False, "num-server-rounds": 2})
    reply = client_app(msg, context)
    assert reply.has_error(), "a train without DP was answered with weights"
    assert reply.error.code == 4103, (reply.error.code, reply.error.reason)
    assert "PolicyRefusal" in reply.error.reason and "dp-enabled = false" in reply.error.reason
    assert Ledger(cfg.work_dir).entries() == [] and not (cfg.work_dir / "prepared").exists()
    assert not (cfg.work_dir / "egress.jsonl").exists()  # nothing passed the egress guard
    assert [(r["kind"], r["run_id"]) for r in refusals(cfg)] == [("train", "4103")]
