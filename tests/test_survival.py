"""Time-to-churn pieces on their own (`fedcrm.ml.survival`): the label, the hazard model
under Opacus, the exact metrics against lifelines' concordance, and the same metrics from
the node's one release (a joint histogram of sensitivity 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcrm.ml import survival as sv
from fedcrm.ml.models import build_model, model_with_state
from fedcrm.ml.training import DPSettings, train_local

SCALE = sv.SurvivalScale(periods=6, period_days=30)


def planted(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Customers whose monthly hazard is logit⁻¹(−2.2 + 1.2·x0 − 0.8·x1), followed 6 months."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    h = 1 / (1 + np.exp(-(-2.2 + 1.2 * x[:, 0] - 0.8 * x[:, 1])))
    left = rng.random((n, 6)) < h[:, None]
    y = np.where(left.any(axis=1), left.argmax(axis=1) + 1, 7).astype(np.float32)
    return x, y


def test_the_lapse_day_is_the_first_day_of_a_long_enough_silence() -> None:
    """Brute force over random purchase days: the first day x in 1..horizon with x minus
    the last purchase on or before x of at least the lapse (before a first purchase there
    is no silence to count)."""
    rng = np.random.default_rng(3)
    for _ in range(400):
        days = rng.integers(-300, 260, rng.integers(1, 9)).astype(float)
        if not (days <= 180).any():
            continue
        _, got = sv.lapse_day(days, np.zeros(len(days), int), 180, 90)
        want = next((x for x in range(1, 181) if (days <= x).any() and x - days[days <= x].max() >= 90), np.nan)
        assert (np.isnan(want) and np.isnan(got[0])) or want == got[0], (sorted(days), want, got)


def test_labels_are_the_period_left_in_or_one_past_the_last() -> None:
    day = np.array([1, 30, 31, 90, 179, 180, np.nan])
    assert sv.survival_label(day, 180, 30).tolist() == [1, 1, 2, 3, 6, 6, 7]
    assert SCALE.month_periods() == {1: 1, 3: 3, 6: 6}
    assert sv.SurvivalScale(periods=12, period_days=30).month_periods() == {1: 1, 3: 3, 6: 6, 12: 12}


def test_the_hazard_loss_is_the_likelihood_of_the_periods_at_risk() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0]] * 3)
    y = torch.tensor([2.0, 4.0, 1.0])  # left in period 2; stayed all 3; left in period 1
    f = torch.nn.functional.binary_cross_entropy_with_logits
    want = [f(logits[0, 0], torch.tensor(0.0)) + f(logits[0, 1], torch.tensor(1.0)),
            sum(f(logits[1, k], torch.tensor(0.0)) for k in range(3)),
            f(logits[2, 0], torch.tensor(1.0))]
    assert torch.allclose(sv.hazard_nll(logits, y), torch.stack(want))


def test_dp_sgd_learns_a_planted_hazard_and_the_state_round_trips() -> None:
    x, y = planted(6000)
    xt, yt = planted(3000, seed=1)
    model = build_model("logistic", 3, seed=0, periods=6)
    dp = DPSettings(noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, history=[])
    out = train_local(model, x, y, epochs=3, batch_size=128, lr=0.5, optimizer="sgd", seed=0, dp=dp,
                      criterion=sv.HazardLoss())
    trained = model_with_state("logistic", 3, out.state_dict)
    assert isinstance(trained, sv.HazardModel) and out.steps > 0
    curves = sv.survival_curves(trained, xt)
    m = sv.survival_metrics(yt, curves, SCALE)
    oracle = sv.survival_metrics(yt, sv.curve_at(1.2 * xt[:, 0] - 0.8 * xt[:, 1], np.full(6, -2.2)), SCALE)
    assert m.c_index > oracle.c_index - 0.03 and oracle.c_index > 0.7, (m, oracle)
    assert abs(m.left_predicted - m.left_observed) < 0.05, m
    assert m.integrated_brier < oracle.integrated_brier + 0.01, (m, oracle)


def test_exact_concordance_matches_lifelines() -> None:
    lifelines = pytest.importorskip("lifelines.utils", reason="lifelines is in the bench extra")
    x, y = planted(800, seed=4)
    curves = sv.curve_at(x[:, 0], np.full(6, -2.0))
    risk = sv.leave_risk(curves)
    event = y <= 6
    want = lifelines.concordance_index(np.minimum(y, 6.5), -risk, event)  # censored after period 6
    assert sv.survival_metrics(y, curves, SCALE).c_index == pytest.approx(want, abs=1e-9)


def test_metrics_from_the_release_are_close_to_the_exact_ones() -> None:
    """Binned at the deciles of the predicted risk (where the coordinator moves the edges),
    the pooled metrics are within a few hundredths of the exact ones, and the noise at
    σ = 3 on 3,000 customers moves them little more."""
    x, y = planted(3000, seed=2)
    alpha = np.full(6, -2.2)
    curves = sv.curve_at(1.2 * x[:, 0] - 0.8 * x[:, 1], alpha)
    exact = sv.survival_metrics(y, curves, SCALE)
    edges = SCALE.check_edges(np.quantile(sv.leave_risk(curves), np.arange(1, 10) / 10).tolist())
    counts = sv.joint_histogram(y, curves, SCALE, edges)
    assert counts.sum() == 3000 and counts.shape == (10, 7)
    binned = sv.metrics_from_joint(counts, SCALE, edges, alpha)
    assert abs(binned.c_index - exact.c_index) < 0.02, (binned, exact)
    assert abs(binned.integrated_brier - exact.integrated_brier) < 0.01, (binned, exact)
    assert binned.left_observed == pytest.approx(exact.left_observed)
    assert abs(binned.left_predicted - exact.left_predicted) < 0.02
    rng = np.random.default_rng(0)
    noisy = [sv.metrics_from_joint(counts + rng.normal(0, 3, counts.shape), SCALE, edges, alpha) for _ in range(50)]
    assert abs(np.mean([m.c_index for m in noisy]) - binned.c_index) < 0.01
    assert np.std([m.c_index for m in noisy]) < 0.02


def test_one_customer_moves_one_cell_by_one() -> None:
    """The release's sensitivity: adding or removing a customer changes one count by 1."""
    x, y = planted(500, seed=5)
    curves = sv.curve_at(x[:, 0], np.full(6, -2.0))
    edges = SCALE.check_edges(None)
    full = sv.joint_histogram(y, curves, SCALE, edges)
    for i in (0, 17, 499):
        keep = np.arange(500) != i
        diff = full - sv.joint_histogram(y[keep], curves[keep], SCALE, edges)
        assert np.abs(diff).sum() == 1 and np.linalg.norm(diff) == 1


def test_bin_curves_stand_at_their_bins_risk() -> None:
    alpha = np.array([-3.0, -2.5, -2.0, -2.0, -1.5, -1.5])
    edges = SCALE.check_edges(None)
    curves = sv.bin_curves(SCALE, edges, alpha)
    assert np.allclose(1 - curves[:, -1], SCALE.predicted_values(edges), atol=1e-6)
    assert (np.diff(curves, axis=1) <= 0).all()


def test_the_model_opacus_wraps_is_one_row_per_customer() -> None:
    """Per-sample gradients exist for every parameter, the period intercepts included."""
    from opacus import GradSampleModule

    model = GradSampleModule(build_model("mlp", 3, periods=6, hidden=8))
    x, y = planted(16)
    sv.HazardLoss()(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    for name, p in model.named_parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 16, name


def test_the_contract_declares_time_to_churn_and_refuses_what_does_not_fit(tmp_path) -> None:  # noqa: ANN001
    """A contract's task says how long a period and a lapse are; a horizon of fewer than two
    periods, and the options on another kind of label, are contract errors naming the key."""
    from pathlib import Path

    from fedcrm.contract.model import Contract
    from fedcrm.errors import ConfigError

    text = (Path(__file__).resolve().parents[1] / "contracts" / "retail.toml").read_text()
    task = Contract.loads(text).task("time-to-churn")
    assert task.kind == "survival" and task.scores == "risk-tiers" and task.value_scale() is None
    assert task.survival_scale() == sv.SurvivalScale(periods=6, period_days=30)
    short = text.replace("horizon_days = 180, period_days = 30", "horizon_days = 45, period_days = 30")
    with pytest.raises(ConfigError, match="horizon_days.*2 to 36 periods"):
        Contract.loads(short)
    wrong = text.replace('label = {derived = "future-spend", horizon_days = 180, value_cap = 10000.0, population = "bought-by-cutoff"}',
                         'label = {derived = "future-spend", horizon_days = 180, lapse_days = 60}')
    assert wrong != text
    with pytest.raises(ConfigError, match="lapse_days: only \"time-to-churn\" takes it"):
        Contract.loads(wrong)
