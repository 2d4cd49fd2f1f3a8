"""The predicted side of a joint-histogram release: the bins a model's scores are cut into.

A value task (`fedcrm.ml.value`) and a time-to-churn task (`fedcrm.ml.survival`) each
release one joint histogram of hold-out customers: (predicted bin, outcome) counts, one
customer in one cell, L2 sensitivity 1 whatever the edges. The outcome side is the task's
own (spend bins; the period a customer left in). The predicted side is shared: a score on
[0, top] cut at `bins - 1` edges the coordinator sends with each evaluation (even at first,
then the deciles of the last pooled, noised predicted margin: `next_edges`, post-processing
of a release already charged). A node checks the edges it is sent (`check_edges`) and
refuses malformed ones before charging anything; any edges leave the sensitivity at 1, so a
coordinator's choice can skew the metrics it reads, not what a partner's release discloses.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field


class PredictedSide(BaseModel):
    """`bins` predicted bins over a score in [0, `top`], and `outcomes` outcome columns."""

    bins: int = Field(10, ge=3, le=50)

    @property
    def top(self) -> float:
        raise NotImplementedError

    @property
    def outcomes(self) -> int:
        raise NotImplementedError

    def even_edges(self) -> list[float]:
        """Predicted-side edges before any evaluation: [0, top] in `bins` even slices."""
        return [float(v) for v in np.arange(1, self.bins) * self.top / self.bins]

    def check_edges(self, edges: list[float] | None) -> np.ndarray:
        """The predicted-side edges a message names (None: `even_edges`), or ValueError:
        `bins` − 1 finite values, strictly increasing, within [0, top]."""
        e = np.asarray(self.even_edges() if edges is None else edges, dtype=np.float64)
        if e.shape != (self.bins - 1,) or not np.isfinite(e).all() or (np.diff(e) <= 0).any() \
                or e[0] < 0 or e[-1] > self.top:
            raise ValueError(f"predicted-side edges: {self.bins - 1} increasing values within [0, {self.top:.4g}] "
                             "expected")
        return e

    def predicted_bin(self, score: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, np.clip(np.asarray(score, dtype=np.float64), 0.0, self.top), side="right")

    def predicted_values(self, edges: np.ndarray) -> np.ndarray:
        """The score each predicted bin stands for: the middle of an inner bin; the outer
        bins reach to 0 and to the top, where few predictions are, so each stands as far
        beyond its edge as its neighbour's half-width (within the scale)."""
        e = np.asarray(edges, dtype=np.float64)
        inner = (e[:-1] + e[1:]) / 2
        if len(e) == 1:
            return np.array([e[0] / 2, (e[0] + self.top) / 2])
        low = max(e[0] - (e[1] - e[0]) / 2, e[0] / 2)
        high = min(e[-1] + (e[-1] - e[-2]) / 2, (e[-1] + self.top) / 2)
        return np.concatenate([[low], inner, [high]])

    def joint(self, counts: np.ndarray | list) -> np.ndarray:
        """A release's counts as a (predicted bin, outcome) matrix."""
        return np.asarray(counts, dtype=np.float64).reshape(self.bins, self.outcomes)

    def next_edges(self, counts: np.ndarray | list, edges: np.ndarray, min_customers: float = 50.0) -> list[float]:
        """The predicted-side edges for the next evaluation: the deciles (`bins` quantiles)
        of the pooled predicted margin of `counts`, read with each bin's customers spread
        evenly over it. Noised cells are clipped at 0 for this; with fewer than
        `min_customers` left (a margin of mostly noise) the edges stay as they were."""
        margin = np.clip(self.joint(counts).sum(axis=1), 0.0, None)
        if margin.sum() < min_customers:
            return [float(v) for v in edges]
        bounds = np.concatenate([[0.0], edges, [self.top]])
        cdf = np.concatenate([[0.0], np.cumsum(margin) / margin.sum()])
        targets = np.arange(1, self.bins) / self.bins
        new = np.interp(targets, cdf, bounds)  # cdf is non-decreasing; flat runs give their first bound
        gap = self.top * 1e-4
        for i in range(len(new)):  # strictly increasing, within the scale
            new[i] = max(new[i], (new[i - 1] + gap) if i else gap)
        new = np.minimum(new, self.top - gap * (len(new) - np.arange(len(new))))
        return [float(v) for v in new]


def mid_ranks(counts: np.ndarray) -> np.ndarray:
    """The average rank of the customers in each bin (bins in order, ties within a bin)."""
    before = np.concatenate([[0.0], np.cumsum(counts)[:-1]])
    return before + (counts + 1) / 2
