"""Metrics on a partner's held-out split, and their aggregation across partners.

A weighted mean of per-partner AUCs is not the AUC of the federation: in a non-IID
consortium much of the signal lies *between* partners. Each partner therefore also sends a
histogram of its scores per class (counts in fixed bins — aggregate, no row leaves), and the
server computes the pooled AUC from the summed histograms. Log-loss and accuracy are means
over examples, so their example-weighted average is exact.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

HIST_BINS = 200


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC (when both classes are present), log-loss and accuracy at 0.5."""
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    out = {
        "log-loss": float(log_loss(y, p, labels=[0, 1])),
        "accuracy": float(accuracy_score(y, p >= 0.5)),
    }
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, p))
    return out


def score_histograms(y: np.ndarray, p: np.ndarray, bins: int = HIST_BINS) -> tuple[list[int], list[int]]:
    """Counts of positive and negative examples per score bin on [0, 1]."""
    idx = np.clip((np.asarray(p) * bins).astype(np.int64), 0, bins - 1)
    y = np.asarray(y).astype(bool)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    return pos.tolist(), neg.tolist()


def auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """Mann–Whitney AUC from binned scores; pairs in the same bin count as ties (½)."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
