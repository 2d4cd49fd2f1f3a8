"""Metrics on a partner's held-out split, and their aggregation across partners.

A weighted mean of per-partner AUCs is not the AUC of the federation: in a non-IID
consortium much of the signal lies *between* partners. Each partner therefore sends a
histogram of its scores per class (counts in fixed bins — aggregate, no row leaves), and the
server computes the pooled AUC — and PR-AUC, lift and capture at the top decile, and the
calibration error — from the summed histograms.

Under DP the histograms are the release: every count gets Gaussian noise from OS entropy
(`noised_histograms`; one customer changes one count by one, so σ is in counts), and every
metric the node sends is computed from the noised counts (`metrics_from_histograms`), which
is post-processing. Few bins keep the noise of the summed figures small: on IBM Telco
exact 20-bin histograms put the pooled AUC 0.002 under sklearn's, the noise then costs
0.02–0.05 in sd at the usual σ (benchmarks/evaluation_noise.py, results in the README).
"""

from __future__ import annotations

import numpy as np

from fedcrm.ml.predicted_side import mid_ranks
from fedcrm.privacy.noise import os_normal
from fedcrm.protocol import HeldOutMetrics

HIST_BINS = 20  # score bins of the evaluation histograms (0.5 is an edge: accuracy at 0.5 is exact)
TOP_FRACTION = 0.1  # marketing's "top decile"
ECE_BINS = 10


def top_fraction(y: np.ndarray, p: np.ndarray, fraction: float = TOP_FRACTION) -> tuple[float, float]:
    """Lift and capture rate among the `fraction` highest scores (ceil(fraction·n) rows):
    lift = positive rate there / overall positive rate; capture = share of all positives there."""
    n_top = int(np.ceil(fraction * len(y)))
    top = np.asarray(y)[np.argsort(-np.asarray(p), kind="stable")[:n_top]]
    base, total = float(np.mean(y)), float(np.sum(y))
    return float(np.mean(top) / base), float(np.sum(top) / total)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_b (n_b / n) · |mean score in b − positive rate in b| over equal-width score bins."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    gap = np.abs(np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins))
    return float(gap.sum() / len(y))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> HeldOutMetrics:
    """Log-loss, Brier score, accuracy at 0.5, calibration error, ROC-AUC, PR-AUC (average
    precision) and lift / capture at the top decile (NaN without both classes). Exact
    metrics are for runs without DP.

    Their definitions in numpy, the AUC as Mann-Whitney's U over tie-averaged ranks:
    scikit-learn's checks of its inputs cost about 2 ms a metric whatever the size (12 ms
    for these on 60 rows, more deep in a Ray actor), paid by every simulated partner at
    every evaluation, and scipy.stats' `rankdata` 0.8 s of import in every node process.
    `tests/test_metrics.py` holds each to scikit-learn's figure."""

    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(y) == 0:
        return HeldOutMetrics()
    out = HeldOutMetrics(log_loss=float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p)))),
                         brier=float(np.mean((p - y) ** 2)), accuracy=float(np.mean((p >= 0.5) == (y == 1))),
                         ece=expected_calibration_error(y, p))
    # ranking metrics of a held-out set with one class only stay NaN: undefined, not zero
    n_pos = int(y.sum())
    if 0 < n_pos < len(y):
        n_neg = len(y) - n_pos
        auc = (_average_ranks(p)[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        lift, capture = top_fraction(y, p)
        out = out.model_copy(update=dict(auc=float(auc), pr_auc=average_precision(y, p),
                                         lift_top_decile=lift, capture_top_decile=capture))
    return out


def _average_ranks(p: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks: each distinct value is a
    bin of `mid_ranks`."""
    _, inverse, counts = np.unique(p, return_inverse=True, return_counts=True)
    return mid_ranks(counts)[inverse]


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Σ_n (R_n − R_{n−1}) P_n over the distinct scores, highest first (tied scores form
    one threshold): scikit-learn's `average_precision_score`, without its input checks."""
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # the last row of each distinct score
    tp = np.cumsum(ys)[last]
    precision, recall = tp / (last + 1), tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def score_histograms(y: np.ndarray, p: np.ndarray, bins: int = HIST_BINS) -> tuple[list[int], list[int]]:
    """Counts of positive and negative examples per score bin on [0, 1]."""
    idx = np.clip((np.asarray(p) * bins).astype(np.int64), 0, bins - 1)
    y = np.asarray(y).astype(bool)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    return pos.tolist(), neg.tolist()


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Mann–Whitney AUC from binned scores; pairs in the same bin count as ties (½)."""
    pos, neg = _counts(pos), _counts(neg)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _bin_centres(bins: int) -> np.ndarray:
    return (np.arange(bins) + 0.5) / bins


def calibration_bins(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, Σ predicted score and positives per equal-width calibration bin, from score
    histograms (rows of a histogram bin placed at its centre)."""
    pos, neg = _counts(pos), _counts(neg)
    bins = len(pos)
    centre = _bin_centres(bins)
    group = np.minimum((centre * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    return (np.bincount(group, weights=pos + neg, minlength=ECE_BINS),
            np.bincount(group, weights=(pos + neg) * centre, minlength=ECE_BINS),
            np.bincount(group, weights=pos, minlength=ECE_BINS))


def pooled_from_histograms(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """`HeldOutMetrics` fields (those defined) of the pooled held-out sets: ranking and calibration metrics of the pooled held-out sets, from summed histograms.

    Within a bin scores are unknown, so rows of one bin are treated as tied (AUC), as
    seeing the precision at the bin's middle (PR-AUC),
    taken pro rata at the top-decile cut (lift, capture) and placed at the bin centre (ECE):
    with 20 bins the error is at most 1/40 in score. Negative counts (noise) count as 0."""
    pos, neg = _counts(pos), _counts(neg)
    out: dict[str, float] = {}
    n_pos, n = pos.sum(), pos.sum() + neg.sum()
    if n == 0:
        return out
    _, predicted, observed = calibration_bins(pos, neg)
    out["ece"] = float(np.abs(predicted - observed).sum() / n)
    auc = auc_from_histograms(pos, neg)
    if auc is None:
        return out
    out["auc"] = auc
    # descending score: cumulative positives and rows after each bin
    dp, dn = pos[::-1], (pos + neg)[::-1]
    tp, rows = np.cumsum(dp), np.cumsum(dn)
    nonempty = dn > 0
    # a bin's positives are spread through it: each sees about the precision at its middle
    middle = rows - dn / 2
    precision = np.divide(tp - dp / 2, middle, out=np.zeros_like(tp), where=middle > 0)
    out["pr_auc"] = float(np.sum((dp / n_pos * precision)[nonempty]))
    n_top = np.ceil(TOP_FRACTION * n)
    before = np.concatenate([[0.0], rows[:-1]])
    take = np.clip(n_top - before, 0, dn)  # rows of each bin inside the top decile
    top_pos = float(np.sum(np.divide(dp * take, dn, out=np.zeros_like(dp), where=dn > 0)))
    out["capture_top_decile"] = top_pos / n_pos
    out["lift_top_decile"] = (top_pos / n_top) / (n_pos / n)
    return out


def _counts(values: np.ndarray | list) -> np.ndarray:
    """Histogram counts as floats, negatives (noise) as 0."""
    return np.maximum(np.asarray(values, dtype=np.float64), 0.0)


def noised_histograms(pos: list[int], neg: list[int], noise_multiplier: float) -> tuple[list[int], list[int]]:
    """The evaluation release: every count plus N(0, σ²) from OS entropy, rounded. Counts
    may come out negative: clipping here would bias every sum upward, so the reader clips
    (after summing partners, where the noise is relatively smaller)."""
    if noise_multiplier <= 0:
        return list(pos), list(neg)
    noise = os_normal(noise_multiplier, (2, len(pos)))
    return ([int(v) for v in np.rint(np.asarray(pos) + noise[0])],
            [int(v) for v in np.rint(np.asarray(neg) + noise[1])])


def metrics_from_histograms(pos: list[int] | np.ndarray, neg: list[int] | np.ndarray) -> HeldOutMetrics:
    """Every `HeldOutMetrics` field from score histograms alone (post-processing of a
    noised release): ranking and calibration as in `pooled_from_histograms`; log-loss and
    Brier score with each row's score at its bin's centre; accuracy at 0.5, a bin edge."""
    p_, n_ = _counts(pos), _counts(neg)
    n = p_.sum() + n_.sum()
    if n <= 0:
        return HeldOutMetrics()
    centre = np.clip(_bin_centres(len(p_)), 1e-7, 1 - 1e-7)
    out = HeldOutMetrics(log_loss=float(-(p_ * np.log(centre) + n_ * np.log1p(-centre)).sum() / n),
                         brier=float((p_ * (1 - centre) ** 2 + n_ * centre**2).sum() / n),
                         accuracy=float((p_[centre >= 0.5].sum() + n_[centre < 0.5].sum()) / n))
    return out.model_copy(update=pooled_from_histograms(p_, n_))
