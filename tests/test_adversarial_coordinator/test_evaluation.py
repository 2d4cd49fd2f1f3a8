"""Attack 3: evaluation was an uncharged, exact release.

Before the fix the node evaluated any weights it was sent and replied with exact metrics
and exact 200-bin score histograms of its hold-out, charging nothing: a crafted one-column
model read a column's per-class distribution out of the histograms, and a tiny hold-out
gave away a few customers' labels. Now the histograms are the release: 20 bins, Gaussian
noise from OS entropy on every count (σ calibrated to the run's target, never under the
partner's `min_eval_noise_multiplier`), charged to the ledger under (run, round,
evaluate) on the hold-out side of the partner's split, and every figure in the reply is
computed from the noised counts. The crafted-model membership attack is measured in
`benchmarks/privacy_audit.py --evaluation-attack`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedcrm.data.layout import standard_layout
from fedcrm.errors import PolicyRefusal, PrivacyBudgetError
from fedcrm.ml.evaluation import score_histograms
from fedcrm.ml.models import build_model
from fedcrm.ml.training import predict
from fedcrm.privacy.accounting import epsilon
from fedcrm.privacy.ledger import Ledger
from tests.test_adversarial_coordinator.test_policy import node, partner


def one_column_model(column: int) -> dict[str, torch.Tensor]:
    """The attack's crafted model: the score is a steep function of one column alone, so
    the score histogram is that column's histogram, per class."""
    model = build_model("logistic", len(standard_layout().names()))
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.weight[0, column] = 2.0
        model.linear.bias.zero_()
    return model.state_dict()


def test_an_evaluation_is_noised_charged_and_computed_from_the_noised_counts(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo)
    run = node(cfg, **{"test-fraction": 0.003, "dp-target-epsilon": 1.0, "num-server-rounds": 2})
    crafted = one_column_model(standard_layout().names().index("tenure_months"))
    reply = run.evaluate(crafted, run_id="curious", server_round=1)

    data = run.data()
    exact_pos, exact_neg = score_histograms(data.y_test, predict(run._model(crafted, data), data.x_test))
    assert (reply.score_hist_pos, reply.score_hist_neg) != (exact_pos, exact_neg), "the histograms left exact"
    assert reply.num_examples != len(data.y_test) or reply.num_positives != int(data.y_test.sum())

    entries = Ledger(cfg.work_dir).entries()
    assert [(e.run_id, e.server_round, e.kind, e.side) for e in entries] == [("curious", 1, "evaluate", "holdout")]
    entry = entries[0]
    assert entry.noise_multiplier == reply.noise_multiplier >= cfg.privacy.min_eval_noise_multiplier
    assert (entry.sample_rate, entry.steps) == (1.0, 1)  # one Gaussian mechanism on counts of sensitivity 1
    assert reply.epsilon == entry.epsilon_after == pytest.approx(epsilon([(entry.noise_multiplier, 1.0, 1)], 1e-5))
    # σ is calibrated so the run's 3 planned evaluations (rounds 0, 1, 2) stay within its target
    assert epsilon([(entry.noise_multiplier, 1.0, 3)], 1e-5) <= 1.0 + 1e-6

    # the same round again: the same model gets the kept reply at no cost, another model nothing
    again = run.evaluate(crafted, run_id="curious", server_round=1)
    assert again.score_hist_pos == reply.score_hist_pos and len(Ledger(cfg.work_dir).entries()) == 1
    with pytest.raises(PrivacyBudgetError, match="already charged"):
        run.evaluate(one_column_model(1), run_id="curious", server_round=1)


def test_the_crafted_model_no_longer_reads_a_columns_distribution(fresh_demo: Path) -> None:
    """Before: the per-class mean of the column was recovered within 0.001 from the
    histograms. Now the noise on each of the 40 counts hides single customers; the
    attacker's reading of the positives' distribution is off by far more than one
    customer's share."""
    cfg = partner(fresh_demo)
    run = node(cfg, **{"dp-target-epsilon": 1.0, "num-server-rounds": 1})
    crafted = one_column_model(0)
    reply = run.evaluate(crafted, run_id="reader", server_round=0)
    data = run.data()
    exact_pos, _ = score_histograms(data.y_test, predict(run._model(crafted, data), data.x_test))
    error = np.abs(np.asarray(reply.score_hist_pos) - np.asarray(exact_pos))
    assert error.max() >= 1, "every count of the positives' histogram left the node exact"
    assert np.sqrt(np.mean(error**2)) > 0.3 * reply.noise_multiplier  # noise of the stated scale, not rounding


def test_evaluations_do_not_spend_the_training_rows_budget(fresh_demo: Path) -> None:
    """Hold-out and training customers are disjoint by pseudonym: an evaluation adds to
    the hold-out side only, so the partner's ε is the larger side, not the sum."""
    cfg = partner(fresh_demo)
    run = node(cfg, **{"dp-target-epsilon": 1.0, "num-server-rounds": 2})
    run.feature_sums("sides")
    before = Ledger(cfg.work_dir).entries()[-1].epsilon_after
    for r in range(3):
        run.evaluate(one_column_model(r), run_id="sides", server_round=r)
    entries = Ledger(cfg.work_dir).entries()
    assert [e.kind for e in entries] == ["statistics", "evaluate", "evaluate", "evaluate"]
    sides = dict((region.label, eps) for region, eps in run.account.by_region())
    assert set(sides) == {"hold-out", "training"}
    assert sides["training"] == pytest.approx(before)
    assert entries[-1].epsilon_after == pytest.approx(max(sides.values()))
    together = epsilon([e.history_entry for e in entries], cfg.privacy.delta)
    assert entries[-1].epsilon_after < together  # composed sequentially it would cost more


def test_fewer_declared_evaluations_buy_less_noise_and_others_are_refused(fresh_demo: Path) -> None:
    """`evaluate-every` declares the evaluated rounds; the node calibrates its noise to that
    many releases and refuses an evaluation at any other round (a coordinator cannot
    declare few evaluations for low noise, then send many)."""
    cfg = partner(fresh_demo)
    every = node(cfg, **{"dp-target-epsilon": 1.0, "num-server-rounds": 6})
    sparse = node(cfg, **{"dp-target-epsilon": 1.0, "num-server-rounds": 6, "evaluate-every": 3})
    assert sparse.plan.evaluation_rounds() == [0, 3, 6] and every.plan.evaluation_rounds() == list(range(7))
    assert sparse.evaluation_sigma("sparse") < every.evaluation_sigma("every")
    plan = sparse.plan_run("sparse")
    assert plan.evaluations == 3 and plan.evaluation_noise == pytest.approx(sparse.evaluation_sigma("sparse"))
    assert plan.epsilon_holdout_after == pytest.approx(1.0, abs=0.02)  # the run's target, on the hold-out side

    outcome = None
    try:
        sparse.evaluate(one_column_model(0), run_id="sparse", server_round=1)
    except PolicyRefusal as refusal:
        outcome = refusal
    assert outcome is not None and "not one of the evaluations the run declared" in str(outcome)
    assert Ledger(cfg.work_dir).entries() == []
    assert sparse.evaluate(one_column_model(0), run_id="sparse", server_round=3).noise_multiplier == plan.evaluation_noise


def test_a_dp_round_does_not_release_its_exact_training_loss(fresh_demo: Path) -> None:
    """The mean loss over a round's batches is computed on private rows and no noise covers
    it: under DP the train reply carries NaN (the hold-out log-loss is the DP figure)."""
    cfg = partner(fresh_demo)
    run = node(cfg, **{"dp-target-epsilon": 1.0, "num-server-rounds": 1})
    _, reply = run.train(one_column_model(0), 1, "loss")
    assert np.isnan(reply.train_loss) and reply.epsilon > 0
    plain = partner(fresh_demo, dp_required=False)
    _, reply = node(plain, **{"dp-enabled": False, "num-server-rounds": 1}).train(one_column_model(0), 1, "plain")
    assert np.isfinite(reply.train_loss)  # without DP nothing is hidden anyway
