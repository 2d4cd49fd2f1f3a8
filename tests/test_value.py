"""Value tasks' metrics (`fedcrm.ml.value`): exact ones checked by hand, and the ones a
node's joint histogram gives, against the exact ones on a skewed spend with many zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcrm.ml.value import ValueScale, joint_histogram, metrics_from_joint, value_metrics

SCALE = ValueScale(cap=5000.0, bins=10)


def skewed(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Spend: 40 % nothing, the rest log-normal around 150; predictions: the log target
    plus noise, so the model ranks well but not perfectly."""
    rng = np.random.default_rng(seed)
    spend = np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(5.0, 1.2, n))
    predicted = SCALE.target(spend) + rng.normal(0, 0.8, n)
    return spend, predicted


def test_the_target_is_capped_log_spend_and_bins_keep_zero_apart() -> None:
    assert SCALE.target(np.array([-3.0, 0.0, math.e - 1, 1e9])).tolist() == pytest.approx(
        [0.0, 0.0, 1.0, math.log1p(5000.0)], rel=1e-6)
    assert SCALE.bin(np.array([0.0, 1e-6, SCALE.top, 99.0])).tolist() == [0, 1, 9, 9]
    assert SCALE.midpoints()[0] == 0 and len(SCALE.midpoints()) == 10


def test_the_mean_fit_learns_expected_spend_and_reads_back_on_the_log_scale() -> None:
    """`fit = "mean"`: the unit target is the capped spend over the cap, and a prediction
    reads back as its log spend. A customer with a 10 % chance of spending 5,000 (expected
    500) then ranks above one sure to spend 100, as the top-decile capture wants; the log
    fit ranks them the other way (expected log spend 0.85 against 4.6)."""
    mean = ValueScale(cap=10_000.0, fit="mean")
    log = ValueScale(cap=10_000.0)
    spend = np.array([0.0, 100.0, 5000.0, 1e9])
    assert mean.unit_target(spend).tolist() == pytest.approx([0.0, 0.01, 0.5, 1.0])
    assert mean.log_value(mean.unit_target(spend)) == pytest.approx(mean.target(spend), rel=1e-6)
    assert log.log_value(log.unit_target(spend)) == pytest.approx(log.target(spend), rel=1e-6)
    gamble = np.array([5000.0] + [0.0] * 9)  # ten such customers: one spends, nine do not
    sure = np.full(10, 100.0)
    for scale, gamble_first in ((mean, True), (log, False)):
        # a fitted model's prediction for a group is the mean of its unit targets
        assert bool(scale.unit_target(gamble).mean() > scale.unit_target(sure).mean()) == gamble_first


def test_exact_metrics_by_hand() -> None:
    spend = np.array([0.0, 0.0, np.e - 1, np.e**2 - 1])  # log targets 0, 0, 1, 2
    m = value_metrics(spend, np.array([0.0, 1.0, 1.0, 2.0]), SCALE)
    assert m.mae_log == pytest.approx(0.25) and m.rmse_log == pytest.approx(0.5)
    assert m.r2_log == pytest.approx(1 - 1 / 2.75)  # SSE 1, SST 2.75
    # top 10 % of 4 customers is 0.4 of the best-predicted one, who spent e² − 1 of the e² + e − 2 in all
    assert m.value_capture_top_decile == pytest.approx(0.4 * (np.e**2 - 1) / (np.e**2 + np.e - 2))


def test_the_joint_histogram_gives_the_exact_metrics_to_within_its_bins() -> None:
    spend, predicted = skewed(20_000)
    exact = value_metrics(spend, predicted, SCALE)
    counts = joint_histogram(spend, predicted, SCALE)
    assert counts.sum() == 20_000 and counts.shape == (10, 10)
    binned = metrics_from_joint(counts, SCALE)
    assert binned.spearman == pytest.approx(exact.spearman, abs=0.03)
    assert binned.value_capture_top_decile == pytest.approx(exact.value_capture_top_decile, abs=0.04)  # measured −0.03
    assert binned.mae_log == pytest.approx(exact.mae_log, abs=0.15)
    assert binned.rmse_log == pytest.approx(exact.rmse_log, abs=0.15)
    assert binned.r2_log == pytest.approx(exact.r2_log, abs=0.05)


def test_noised_counts_still_give_usable_metrics() -> None:
    """σ = 4 on every one of the 100 cells (the partners' evaluation floor), 5,000 customers:
    measured bias over 200 draws −0.007 Spearman, −0.04 capture (the top predicted bins are
    sparse: their noise moves the decile's cut), spread 0.01 and 0.02."""
    spend, predicted = skewed(5_000, seed=1)
    exact = value_metrics(spend, predicted, SCALE)
    counts = joint_histogram(spend, predicted, SCALE)
    draws = [metrics_from_joint(counts + np.random.default_rng(seed).normal(0, 4.0, counts.shape), SCALE)
             for seed in range(50)]
    spearman = np.array([m.spearman for m in draws]) - exact.spearman
    capture = np.array([m.value_capture_top_decile for m in draws]) - exact.value_capture_top_decile
    assert abs(spearman.mean()) < 0.02 and spearman.std() < 0.03, (spearman.mean(), spearman.std())
    assert abs(capture.mean()) < 0.07 and capture.std() < 0.04, (capture.mean(), capture.std())


def test_predicted_edges_move_to_the_released_deciles_and_any_edges_keep_sensitivity_one() -> None:
    """The coordinator's edges for the next evaluation (`next_edges`) are the deciles of the
    pooled predicted margin; whatever edges it sends, one customer more moves one count by 1."""
    from fedcrm.ml.value import next_edges

    spend, predicted = skewed(4000, seed=3)
    predicted = 5.0 + 0.25 * (predicted - predicted.mean()) / predicted.std()  # a narrow band, like a DP model's
    even = SCALE.check_edges(None)
    counts = joint_histogram(spend, predicted, SCALE, even)
    assert (counts.sum(axis=1) > 0).sum() <= 3  # even edges: nearly everyone in a few predicted bins
    edges = SCALE.check_edges(next_edges(counts, SCALE, even))
    again = SCALE.check_edges(next_edges(joint_histogram(spend, predicted, SCALE, edges), SCALE, edges))
    deciles = np.quantile(predicted, np.arange(1, 10) / 10)
    assert np.abs(again - deciles).max() < 0.05, (again, deciles)  # two steps: at the deciles
    share = joint_histogram(spend, predicted, SCALE, again).sum(axis=1) / len(spend)
    assert share.min() > 0.04 and share.max() < 0.2  # every bin in use (spread evenly within a bin: not exact)
    exact = value_metrics(spend, predicted, SCALE)
    assert abs(metrics_from_joint(joint_histogram(spend, predicted, SCALE, again), SCALE, again).spearman
               - exact.spearman) < 0.03
    # a margin of mostly noise leaves the edges where they were
    assert next_edges(np.zeros((10, 10)) + 0.1, SCALE, again) == again.tolist()
    # sensitivity: any edges, one customer added changes one cell by exactly 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        cut = np.sort(rng.uniform(0, SCALE.top, 9))
        more = joint_histogram(np.append(spend, rng.lognormal(5, 1)), np.append(predicted, rng.uniform(0, 9)), SCALE, cut)
        diff = more - joint_histogram(spend, predicted, SCALE, cut)
        assert np.abs(diff).sum() == 1 and diff.max() == 1


@pytest.mark.parametrize("edges", [[1.0] * 9, list(range(9, 0, -1)), [0.5] * 8, [float("nan")] + list(range(1, 9)),
                                   [-1.0] + list(range(1, 9)), list(range(1, 9)) + [99.0]])
def test_edges_a_node_refuses(edges: list[float]) -> None:
    with pytest.raises(ValueError, match="predicted-side edges"):
        SCALE.check_edges(edges)


def test_the_run_reports_value_table_reads_the_pooled_histograms() -> None:
    """`fedcrm report run`'s value table: bins from the highest prediction down, every
    customer once, cumulative shares ending at 1, and a model that ranks well shows it."""
    from fedcrm.reports.run_report import value_bins
    from fedcrm.rundir import ValueHistogram

    spend, predicted = skewed(3000, seed=5)
    edges = SCALE.check_edges(np.quantile(np.clip(predicted, 0, SCALE.top), np.arange(1, 10) / 10).tolist())
    halves = [joint_histogram(spend[i::2], predicted[i::2], SCALE, edges) for i in (0, 1)]
    rows = value_bins({f"p{i}": ValueHistogram(counts=[int(v) for v in h.ravel()], edges=edges.tolist(), cap=SCALE.cap)
                       for i, h in enumerate(halves)})
    assert [r["bin"] for r in rows] == list(range(1, 11)) and sum(r["customers"] for r in rows) == 3000
    assert rows[-1]["share_customers"] == pytest.approx(1) and rows[-1]["share_value"] == pytest.approx(1)
    used = [r for r in rows if r["customers"] > 0]  # (a tenth of predictions sit at 0: the lowest bin is empty)
    assert used[0]["actual"] > used[-1]["actual"] and rows[0]["share_value"] > 2 * rows[0]["share_customers"]
    assert all(a["predicted"] >= b["predicted"] for a, b in zip(rows, rows[1:]))


def test_the_contract_names_the_fit_and_refuses_it_on_another_label() -> None:
    from pathlib import Path

    from fedcrm.contract.model import Contract
    from fedcrm.errors import ConfigError

    text = (Path(__file__).resolve().parents[1] / "contracts" / "retail.toml").read_text()
    contract = Contract.loads(text)
    assert contract.task("clv").value_scale().fit == "log"  # type: ignore[union-attr]
    assert contract.task("clv-mean").value_scale() == ValueScale(cap=10_000.0, fit="mean")
    wrong = text.replace("period_days = 30, lapse_days = 90,", 'period_days = 30, lapse_days = 90, value_fit = "mean",')
    assert wrong != text
    with pytest.raises(ConfigError, match="value_fit: only \"future-spend\" takes it"):
        Contract.loads(wrong)
