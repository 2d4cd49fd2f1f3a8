"""DP-SGD on a node: calibrated to the run's target, cumulative across rounds and restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants import PRVAccountant

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.errors import PrivacyBudgetError
from fedcrm.features import feature_names
from fedcrm.models import build_model
from fedcrm.node import PartnerNode
from fedcrm.privacy import AccountStore, calibrate_noise, epsilon


def test_calibrated_noise_lands_on_target() -> None:
    sigma = calibrate_noise(3.0, 1e-5, 64 / 1900, 5 * 30)
    eps = epsilon([(sigma, 64 / 1900, 150)], 1e-5)
    assert 2.9 <= eps <= 3.0
    assert epsilon([(sigma * 0.8, 64 / 1900, 150)], 1e-5) > 3.0  # less noise would overspend


def node_for(fed: Path, i: int = 0, **plan: object) -> PartnerNode:
    cfg = PartnerConfig.load(FederationConfig.load(fed).members[i].config)
    defaults = {"num-server-rounds": 3, "dp-target-epsilon": 2.0}
    return PartnerNode(cfg, TrainPlan.from_run_config({**defaults, **plan}))


def test_epsilon_is_cumulative_across_rounds_and_node_restarts(fresh_demo: Path) -> None:
    state = build_model("logistic", len(feature_names())).state_dict()
    eps = []
    for rnd in (1, 2):
        state, metrics = node_for(fresh_demo).train(state, rnd, run_id=11)
        eps.append(metrics["epsilon"])
    # a new PartnerNode object reads the account from disk, as a restarted SuperNode would
    node = node_for(fresh_demo)
    state, metrics = node.train(state, 3, run_id=11)
    eps.append(metrics["epsilon"])
    assert eps[0] < eps[1] < eps[2] <= 2.0 + 1e-6
    account = AccountStore(node.cfg.work_dir).load(node.data().dataset_fingerprint)
    steps_per_round, q = node.planned_steps()
    assert sum(n for _, _, n in account.history) == 3 * steps_per_round
    fresh = PRVAccountant()
    fresh.history = account.history
    assert fresh.get_epsilon(1e-5) == pytest.approx(eps[-1], rel=1e-9)
    # a second run on the same data keeps adding to the same account
    _, metrics = node_for(fresh_demo).train(state, 1, run_id=12)
    assert metrics["epsilon"] > eps[-1]
    assert [(r.run_id, r.server_round) for r in AccountStore(node.cfg.work_dir).load(
        node.data().dataset_fingerprint).releases] == [(11, 1), (11, 2), (11, 3), (12, 1)]


def test_a_round_is_never_charged_twice(fresh_demo: Path) -> None:
    state = build_model("logistic", len(feature_names())).state_dict()
    node_for(fresh_demo).train(state, 1, run_id=5)
    with pytest.raises(PrivacyBudgetError, match="already charged"):
        node_for(fresh_demo).train(state, 1, run_id=5)


def test_unreadable_account_stops_training(fresh_demo: Path) -> None:
    node = node_for(fresh_demo)
    state = build_model("logistic", len(feature_names())).state_dict()
    node.train(state, 1, run_id=1)
    path = AccountStore(node.cfg.work_dir).path(node.data().dataset_fingerprint)
    path.write_text(path.read_text()[:-40])  # truncated
    with pytest.raises(PrivacyBudgetError, match="unreadable"):
        node_for(fresh_demo).train(state, 2, run_id=1)


def test_propensity_task_trains_and_evaluates(fresh_demo: Path) -> None:
    node = node_for(fresh_demo, 1, task="propensity", model="mlp")
    state = build_model("mlp", len(feature_names())).state_dict()
    new_state, train_metrics = node.train(state, 1, run_id=3)
    assert train_metrics["epsilon"] > 0 and train_metrics["num-examples"] > 1000
    metrics = node.evaluate(new_state)
    assert 0.0 <= metrics["auc"] <= 1.0 and metrics["num-positives"] > 0
    assert sum(metrics["score-hist-pos"]) + sum(metrics["score-hist-neg"]) == metrics["num-examples"]


def test_empty_poisson_batches_still_count_as_steps() -> None:
    """With q = 1/3 on three rows, about a third of the batches are empty: each is a step."""
    import numpy as np

    from fedcrm.training import DPSettings, train_local

    rng = np.random.default_rng(0)
    x, y = rng.random((3, 27), dtype=np.float32), np.array([0, 1, 0], dtype=np.float32)
    out = train_local(build_model("logistic", 27), x, y, epochs=10, batch_size=1, lr=0.1,
                      optimizer="sgd", seed=1, dp=DPSettings(1.0, 1.0, 1e-5, []))
    assert out.steps == 30 and out.history == [(1.0, 1 / 3, 30)]
