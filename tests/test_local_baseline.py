"""The local-only baseline (`TrainPlan.local_baseline`): a partner trains the run's starting
model on its own rows alone and releases only its hold-out metrics, planned, capped and
charged like every other release. The federated path (Flower, the run report) is checked in
tests/test_reports.py, whose run asks for one."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.errors import ConfigError, PolicyRefusal
from fedcrm.ml.models import build_model
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.account import BudgetExceeded
from fedcrm.privacy.accounting import epsilon
from fedcrm.privacy.ledger import Ledger
from tests.conftest import set_privacy

RUN = {"num-server-rounds": 2, "dp-target-epsilon": 2.0, "local-baseline": True}


def node_for(fed: Path, i: int = 0, **plan: object) -> PartnerNode:
    cfg = PartnerConfig.load(FederationConfig.load(fed).members[i].config)
    return PartnerNode(cfg, TrainPlan.from_run_config({**RUN, **plan}))


def test_a_tree_run_cannot_ask_for_one() -> None:
    with pytest.raises(ConfigError, match="local-baseline .* logistic and mlp"):
        TrainPlan.from_run_config({**RUN, "model": "gbdt"})


def test_the_plan_prices_it_after_the_run(fresh_demo: Path) -> None:
    """Same σ and q as the run's training, as many steps again: its ε is that of a run twice as
    long, one more evaluation is planned on the hold-out, and the plan says where ε ends."""
    with_it, without = node_for(fresh_demo).plan_run(), node_for(fresh_demo, **{"local-baseline": False}).plan_run()
    assert with_it.noise_multiplier == pytest.approx(without.noise_multiplier)  # the run's own training is unchanged
    assert with_it.evaluations == without.evaluations + 1
    assert with_it.baseline_steps == with_it.steps_per_round * with_it.rounds
    run_releases = [(with_it.statistics_noise, 1.0, 1)]
    doubled = [*run_releases, (with_it.noise_multiplier, with_it.sample_rate, 2 * with_it.baseline_steps)]
    assert with_it.epsilon_after_baseline == pytest.approx(epsilon(doubled, with_it.delta), rel=1e-9)
    assert with_it.epsilon_after_baseline > with_it.projections[-1].epsilon
    assert with_it.epsilon_after == pytest.approx(max(with_it.epsilon_after_baseline, with_it.epsilon_holdout_after))
    assert without.epsilon_after_baseline is None and without.baseline_within_cap is None


def test_refused_unless_the_run_declared_it_and_the_partner_releases_it(fresh_demo: Path) -> None:
    with pytest.raises(PolicyRefusal, match="did not declare a local-only baseline"):
        node_for(fresh_demo, **{"local-baseline": False}).baseline("r1")
    set_privacy(FederationConfig.load(fresh_demo).members[0].config, releases=["train", "evaluate", "statistics"])
    with pytest.raises(PolicyRefusal, match="does not release 'baseline'"):
        node_for(fresh_demo).baseline("r1")
    assert not Ledger.of(node_for(fresh_demo).cfg).entries()


def test_it_is_charged_once_and_sent_again_for_free(fresh_demo: Path) -> None:
    node = node_for(fresh_demo)
    plan = node.plan_run(run_id="r2")
    node.feature_sums("r2")
    state = build_model("logistic", node.layout.width, seed=node.plan.seed).state_dict()
    for rnd in (1, 2):
        state, _ = node.train(state, rnd, run_id="r2")
    reply = node.baseline("r2")
    entries = Ledger.of(node.cfg).entries()
    baseline, evaluation = entries[-2:]
    assert (baseline.kind, baseline.server_round, baseline.side) == ("baseline", 3, "training")
    assert (baseline.noise_multiplier, baseline.steps) == (entries[1].noise_multiplier, plan.baseline_steps)
    assert (evaluation.kind, evaluation.server_round, evaluation.side) == ("evaluate", 3, "holdout")
    assert 0.5 < reply.auc <= 1.0 and reply.epsilon == pytest.approx(evaluation.epsilon_after)
    # the training side ends where the plan said
    sides = {region.label: eps for region, eps in node.account.by_region()}
    assert sides["training"] == pytest.approx(plan.epsilon_after_baseline, rel=1e-6)
    again = node_for(fresh_demo).baseline("r2")  # a retried message, a restarted node
    assert again.auc == reply.auc and len(Ledger.of(node.cfg).entries()) == len(entries)


def test_a_kept_model_without_its_charge_is_not_used(fresh_demo: Path) -> None:
    """A node killed between keeping the baseline and charging it: the model on disk was
    never paid for, so it is trained (and charged) anew, not released for free."""
    node = node_for(fresh_demo)
    never_charged = build_model("logistic", node.layout.width, seed=1).state_dict()
    node.replies.save("r3", 3, {}, never_charged, {}, "baseline")
    node.baseline("r3")
    kinds = [e.kind for e in Ledger.of(node.cfg).entries()]
    assert kinds == ["baseline", "evaluate"]


def test_the_cap_refuses_it(fresh_demo: Path) -> None:
    config = FederationConfig.load(fresh_demo).members[0].config
    set_privacy(config, epsilon_cap=0.5)
    with pytest.raises(BudgetExceeded, match="baseline of round 3"):
        node_for(fresh_demo).baseline("r4")
    assert not Ledger.of(node_for(fresh_demo).cfg).entries()
