"""Value (customer lifetime value) tasks: the target the model learns, the metrics a
marketer reads, and the same metrics from the one release a node makes of them.

The target is a customer's spend in the horizon after the cutoff (`future-spend` labels),
capped at the task's `value_cap` and taken as log1p: spend is skewed (most customers spend
little, a few a lot), and a capped target bounds what one customer can move. The model
predicts the log value; the metrics are those of the log scale (MAE, RMSE, R²), the rank
correlation (Spearman) and the share of next-period value captured by the top decile of
predictions, the number a marketer plans with.

What leaves a node is a joint histogram of (predicted bin, actual bin) counts on the log
scale: one customer adds 1 to one cell, so the release has L2 sensitivity 1, like the
classification histograms (`fedcrm.ml.evaluation`), whatever the bins' edges are.

- **Actual side: fixed.** Bin 0 holds exactly the customers who spent nothing (the churned,
  often the largest group); the others split (0, log1p(cap)] evenly.
- **Predicted side: edges the coordinator sends.** A model's predictions crowd into a narrow
  band (a DP linear model on Online Retail: 90 % of them within 4.8-6.3 of a 0-9.2 scale),
  so even bins put nearly everyone in two of them: the ranks are lost, and the empty bins'
  noise lands with the largest rank weights (a 2-round run measured Spearman 0.05 against
  0.3). The coordinator places the edges at the deciles of the last trained model's pooled,
  noised predicted margin (`next_edges`: post-processing of a release already made and
  charged). Edges are data of the message, checked on the node (`check_edges`); any edges
  leave the sensitivity at 1, so a coordinator's choice can skew the metrics it reads, not
  what a partner's release discloses.

Every metric is then computed from the (noised) counts, each bin standing for one value:
an approximation whose error `tests/test_value.py` bounds against the exact metrics.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from fedcrm.ml.predicted_side import PredictedSide, mid_ranks
from fedcrm.protocol import ValueHeldOutMetrics as ValueMetrics

if TYPE_CHECKING:
    import torch


class ValueScale(PredictedSide):
    """The target's scale: spend capped at `cap`, on log1p, in `bins` histogram bins (the
    predicted side's bins, `fedcrm.ml.predicted_side`, and as many of actual spend).
    `fit`: what the model learns, log1p spend or the mean spend (`unit_target`); either way
    its predictions are read, binned and scored on the log scale."""

    cap: float = Field(gt=0)
    fit: Literal["log", "mean"] = "log"

    @property
    def top(self) -> float:
        return math.log1p(self.cap)

    @property
    def outcomes(self) -> int:
        return self.bins

    def target(self, spend: np.ndarray) -> np.ndarray:
        """The model's target: log1p of the spend, clipped to [0, cap]."""
        return np.log1p(np.clip(np.asarray(spend, dtype=np.float64), 0.0, self.cap)).astype(np.float32)

    def unit_target(self, spend: np.ndarray) -> np.ndarray:
        """What the model is trained on: `target` divided by the top, within [0, 1], fitted
        as a fractional logit (Papke and Wooldridge): cross-entropy against the model's
        sigmoid, the classifier's loss with a target between 0 and 1. Its steps are a
        classifier's size, so the same learning rate and clipping serve both tasks. Tried
        before and measured: squared error on the log scale (the intercept starts ~5 away;
        DP-SGD's clipped steps reached exact Spearman 0.11 in 3 rounds) and on the unit
        scale (0.19-0.36 with DP; without DP, unclipped, learning rate 0.5 diverged).

        With `fit = "mean"` the target is the capped spend over the cap instead: the
        fractional logit's fitted value is then the expected spend (its quasi-likelihood
        estimates a mean, as a Tweedie or Poisson loss does), which ranks a customer with a
        small chance of a large spend above one sure to spend a little. That ordering is
        what the top-decile value capture counts: pooled on Online Retail, 0.34-0.36
        against 0.31-0.33 for the log fit (`benchmarks/value_and_time.py`)."""
        if self.fit == "mean":
            return (np.clip(np.asarray(spend, dtype=np.float64), 0.0, self.cap) / self.cap).astype(np.float32)
        return (self.target(spend) / self.top).astype(np.float32)

    def log_value(self, unit: np.ndarray) -> np.ndarray:
        """The model's sigmoid output (on `unit_target`'s scale) as a predicted log spend."""
        unit = np.asarray(unit, dtype=np.float64)
        return np.log1p(unit * self.cap) if self.fit == "mean" else unit * self.top

    def spend(self, log_value: np.ndarray) -> np.ndarray:
        return np.expm1(np.clip(np.asarray(log_value, dtype=np.float64), 0.0, self.top))

    def bin(self, log_value: np.ndarray) -> np.ndarray:
        """0 for nothing spent (≤ 0); 1 … bins-1 evenly over (0, top] (above top: the last)."""
        v = np.asarray(log_value, dtype=np.float64)
        inner = 1 + np.floor(np.clip(v, 0.0, self.top) / self.top * (self.bins - 1)).astype(np.int64)
        return np.where(v <= 0, 0, np.minimum(inner, self.bins - 1))

    def bin_spend(self) -> np.ndarray:
        """The mean spend of each bin with its log values spread evenly over it: 0, then
        (e^b − e^a) / (b − a) − 1 (the midpoint's spend would be too low: spend is convex
        in the log value)."""
        width = self.top / (self.bins - 1)
        a = np.arange(self.bins - 1) * width
        return np.concatenate([[0.0], (np.exp(a + width) - np.exp(a)) / width - 1])

    def midpoints(self) -> np.ndarray:
        """The log value each bin stands for: 0, then the middle of each even slice."""
        width = self.top / (self.bins - 1)
        return np.concatenate([[0.0], (np.arange(self.bins - 1) + 0.5) * width])


def next_edges(counts: np.ndarray, scale: ValueScale, edges: np.ndarray, min_customers: float = 50.0) -> list[float]:
    """`PredictedSide.next_edges` of a value release."""
    return scale.next_edges(counts, edges, min_customers)


def _capture(order_value: np.ndarray, weights: np.ndarray, fraction: float = 0.1) -> float:
    """Share of the total value held by the first `fraction` of the weight, items taken in
    the given order (a partial last item counts pro rata)."""
    total_w, total_v = weights.sum(), (order_value * weights).sum()
    if total_w <= 0 or total_v <= 0:
        return math.nan
    budget, got = fraction * total_w, 0.0
    for v, w in zip(order_value, weights):
        take = min(w, budget)
        got += take * v
        budget -= take
        if budget <= 0:
            break
    return float(got / total_v)


def value_metrics(spend: np.ndarray, predicted_log: np.ndarray, scale: ValueScale) -> ValueMetrics:
    """The exact metrics, from every customer's actual spend and predicted log value."""
    y, p = scale.target(spend).astype(np.float64), np.clip(np.asarray(predicted_log, np.float64), 0.0, scale.top)
    if len(y) == 0:
        return ValueMetrics()
    from scipy.stats import spearmanr  # here: scipy.stats costs the coordinator 0.8 s to import

    err = p - y
    sst = float(((y - y.mean()) ** 2).sum())
    order = np.argsort(-p, kind="stable")
    return ValueMetrics(mae_log=float(np.abs(err).mean()), rmse_log=float(np.sqrt((err**2).mean())),
                        r2_log=1 - float((err**2).sum()) / sst if sst > 0 else math.nan,
                        spearman=float(spearmanr(p, y).statistic) if len(y) > 2 and np.ptp(y) > 0 and np.ptp(p) > 0
                        else math.nan,
                        value_capture_top_decile=_capture(scale.spend(y)[order], np.ones(len(y))))


def joint_histogram(spend: np.ndarray, predicted_log: np.ndarray, scale: ValueScale,
                    edges: np.ndarray | None = None) -> np.ndarray:
    """Counts of customers by (predicted bin, actual bin): the node's one release."""
    edges = scale.check_edges(None) if edges is None else edges
    pred, actual = scale.predicted_bin(predicted_log, edges), scale.bin(scale.target(spend))
    return np.bincount(pred * scale.bins + actual, minlength=scale.bins**2).reshape(scale.bins, scale.bins).astype(float)


def metrics_from_joint(counts: np.ndarray, scale: ValueScale, edges: np.ndarray | None = None) -> ValueMetrics:
    """`value_metrics` from a (noised) joint histogram. Each actual bin stands at its
    midpoint on the log scale and, for spend, at the mean spend of a log value spread evenly
    over it; each predicted bin at `ValueScale.predicted_values` of its `edges`;
    ranks are the bins' mid-ranks. The cells are used as noised, negative ones included:
    every metric is a ratio of sums linear in the counts, which the noise leaves unbiased
    (clipping cells at 0 would add the noise's positive half to every empty cell). Only the
    margins, which set ranks and the top decile, are clipped at 0."""
    c = np.asarray(counts, dtype=np.float64).reshape(scale.bins, scale.bins)
    per_pred, per_actual = np.clip(c.sum(axis=1), 0.0, None), np.clip(c.sum(axis=0), 0.0, None)
    n = float(c.sum())
    if n <= 0 or per_pred.sum() <= 0:
        return ValueMetrics()
    mid, pred = scale.midpoints(), scale.predicted_values(scale.check_edges(None) if edges is None else edges)
    err = pred[:, None] - mid[None, :]  # predicted minus actual, per cell
    y_mean = (c.sum(axis=0) * mid).sum() / n
    sst = (c.sum(axis=0) * (mid - y_mean) ** 2).sum()
    sse = (c * err**2).sum()
    rp, ra = mid_ranks(per_pred), mid_ranks(per_actual)
    mp, ma = (c.sum(axis=1) * rp).sum() / n, (c.sum(axis=0) * ra).sum() / n
    cov = (c * (rp[:, None] - mp) * (ra[None, :] - ma)).sum()
    var_p, var_a = (c.sum(axis=1) * (rp - mp) ** 2).sum(), (c.sum(axis=0) * (ra - ma) ** 2).sum()
    # the top decile: predicted bins from the highest down, each bin's customers at the
    # mean spend of its actual bins
    value = (c * scale.bin_spend()[None, :]).sum(axis=1)
    per_customer = np.divide(value, per_pred, out=np.zeros_like(per_pred), where=per_pred > 0)
    down = np.arange(scale.bins)[::-1]
    return ValueMetrics(mae_log=float(max((c * np.abs(err)).sum(), 0.0) / n),
                        rmse_log=float(np.sqrt(max(sse, 0.0) / n)),
                        r2_log=float(1 - sse / sst) if sst > 0 else math.nan,
                        spearman=float(np.clip(cov / np.sqrt(var_p * var_a), -1, 1)) if var_p > 0 and var_a > 0
                        else math.nan,
                        value_capture_top_decile=_capture(np.clip(per_customer[down], 0.0, None), per_pred[down]))


def predict_log_value(model: torch.nn.Module, x: np.ndarray, scale: ValueScale) -> np.ndarray:
    """A value model's predicted capped log spend: the sigmoid of its output (on
    `ValueScale.unit_target`'s scale), read back onto the log scale (`ValueScale.log_value`)."""
    import torch

    model.eval()
    with torch.no_grad():
        out = torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))).reshape(-1).numpy()
    return scale.log_value(out)


def noised_joint(counts: np.ndarray, noise_multiplier: float) -> list[int]:
    """The release: every count plus N(0, σ²) from OS entropy, rounded, row-major; negative
    counts stay (the reader's sums are unbiased that way, `metrics_from_joint`)."""
    from fedcrm.privacy.noise import os_normal

    flat = np.asarray(counts, dtype=np.float64).ravel()
    if noise_multiplier > 0:
        flat = flat + os_normal(noise_multiplier, flat.shape)
    return [int(v) for v in np.rint(flat)]
