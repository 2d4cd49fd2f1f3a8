"""Every metric against values worked out by hand on ten rows, and the pooled (histogram)
versions against the exact ones."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrm.ml.evaluation import (binary_metrics, expected_calibration_error, metrics_from_histograms,
                                  noised_histograms, pooled_from_histograms, score_histograms, top_fraction)

# ten customers, scores in distinct tenths (one per calibration bin), three churners
Y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
P = np.array([0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05])


def test_hand_computed_metrics() -> None:
    m = binary_metrics(Y, P)
    # ROC-AUC: 21 churner/non-churner pairs; 0.95 outranks 7, 0.75 outranks 6, 0.05 outranks 0
    assert m.auc == pytest.approx(13 / 21)
    # average precision: precision 1/1, 2/3 and 3/10 at the three churners' ranks
    assert m.pr_auc == pytest.approx((1 + 2 / 3 + 3 / 10) / 3)
    # Brier: mean squared distance of score to label
    assert m.brier == pytest.approx((0.05**2 + 0.85**2 + 0.25**2 + 0.65**2 + 0.55**2 + 0.45**2 + 0.35**2
                                        + 0.25**2 + 0.15**2 + 0.95**2) / 10)
    # log-loss: −mean log-probability of the true label
    assert m.log_loss == pytest.approx(-np.mean(np.log(np.where(Y == 1, P, 1 - P))))
    # accuracy at 0.5: wrong are the non-churners at 0.85, 0.65, 0.55 and the churner at 0.05
    assert m.accuracy == pytest.approx(6 / 10)
    # top decile = 1 row (0.95, a churner): captures 1 of 3 churners; its rate 1.0 vs 0.3 overall
    assert m.capture_top_decile == pytest.approx(1 / 3)
    assert m.lift_top_decile == pytest.approx(1 / 0.3)
    # ECE: one row per bin, so the mean |score − label|
    assert m.ece == pytest.approx(np.mean(np.abs(P - Y)))


@pytest.mark.parametrize("n, rate, levels", [(60, 0.3, 0), (2000, 0.05, 0), (500, 0.5, 7), (3, 0.34, 2)])
def test_exact_metrics_equal_scikit_learns(n: int, rate: float, levels: int) -> None:
    """The numpy definitions and the rank AUC against scikit-learn's own functions, with
    tied scores (`levels` distinct values) and a rare class among them."""
    from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

    rng = np.random.default_rng(n)
    y = (rng.random(n) < rate).astype(int)
    y[0], y[-1] = 1, 0  # both classes
    p = rng.random(n) if not levels else rng.integers(0, levels, n) / levels + 0.01
    m = binary_metrics(y, p)
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    assert m.auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m.pr_auc == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m.log_loss == pytest.approx(log_loss(y, clipped), abs=1e-12)
    assert m.brier == pytest.approx(brier_score_loss(y, clipped), abs=1e-12)
    assert m.accuracy == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)


def test_lift_and_capture_take_ceil_of_the_fraction() -> None:
    y, p = np.array([0, 1, 1, 0, 0]), np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    lift, capture = top_fraction(y, p, fraction=0.5)  # ceil(2.5) = 3 rows: 0, 1, 1
    assert capture == pytest.approx(1.0) and lift == pytest.approx((2 / 3) / 0.4)


def test_calibration_error_of_a_calibrated_and_a_shifted_model() -> None:
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)  # bin 2: rate 1/4, bin 7: rate 3/4 → perfectly calibrated
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert expected_calibration_error(y, p + 0.1) == pytest.approx(0.1)


def test_pooled_metrics_from_histograms_match_the_exact_ones() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(20_000) < 0.25
    p = 1 / (1 + np.exp(-(rng.normal(size=y.size) + 1.5 * y - 1)))
    exact, pooled = binary_metrics(y, p), pooled_from_histograms(*score_histograms(y, p))
    # 20 bins (the evaluation release): the binning costs little of any metric
    for key, tol in (("auc", 2e-3), ("pr_auc", 6e-3), ("lift_top_decile", 0.02), ("capture_top_decile", 5e-3),
                     ("ece", 3e-3)):
        assert pooled[key] == pytest.approx(getattr(exact, key), abs=tol), key
    every = metrics_from_histograms(*score_histograms(y, p))  # what a node sends, from its histograms alone
    for key, tol in (("log_loss", 2e-3), ("brier", 1e-3), ("accuracy", 1e-9), ("auc", 2e-3)):
        assert getattr(every, key) == pytest.approx(getattr(exact, key), abs=tol), key


def test_noised_histograms_are_noised_with_the_stated_sigma_and_unpredictably() -> None:
    pos, neg = [10] * 20, [30] * 20
    draws = np.array([noised_histograms(pos, neg, 4.0) for _ in range(300)], dtype=float)  # (300, 2, 20)
    assert abs(draws[:, 0].mean() - 10) < 0.3 and abs(draws[:, 1].mean() - 30) < 0.3  # unbiased
    assert 3.6 < draws[:, 0].std() < 4.4  # σ in counts (rounding adds 1/12 to the variance)
    assert len({tuple(d.ravel()) for d in draws}) == 300  # no two releases alike: no seed to replay
    assert noised_histograms(pos, neg, 0.0) == (pos, neg)
    # the reader treats a negative (noised) count as none
    assert metrics_from_histograms([-3] + [0] * 19, [5] + [0] * 19).accuracy == pytest.approx(1.0)


def test_pooled_lift_takes_a_bin_pro_rata_at_the_cut() -> None:
    # 10 rows; top bin holds 2 rows (1 positive): the top decile (1 row) takes half of it
    pos, neg = [1, 0, 1], [6, 1, 1]
    pooled = pooled_from_histograms(pos, neg)
    assert pooled["capture_top_decile"] == pytest.approx(0.5 / 2)
    assert pooled["lift_top_decile"] == pytest.approx((0.5 / 1) / (2 / 10))
