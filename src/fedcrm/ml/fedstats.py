"""Federated feature statistics: normalisation from every partner's data, aggregate only.

Before round 0 the coordinator asks each partner for column sums over its training rows —
a count, Σx and Σx² per numeric feature and a count per one-hot column (the federation's
category vocabulary, as frequencies). Only these sums leave a node. The coordinator
combines them into a mean and standard deviation per numeric feature, which every partner
then applies in training, evaluation and scoring: the whole federation standardises the
same way, instead of each partner on its own or on fixed reference values.

Optionally the sums are noised on the node (Gaussian mechanism, each row's contribution
clipped to L2 norm `clip`); that release is charged to the partner's ledger like any
DP-SGD step — one step of noise multiplier σ with sampling rate 1 — and counts against its
cap. The noise comes from the OS's CSPRNG (`os.urandom`, Box–Muller), never from a seed
the coordinator could know: there is no generator argument to pass one in (issue 12).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from fedcrm.data.layout import FeatureLayout, standard_layout
from fedcrm.privacy.noise import os_normal

VALUE_CLIP = 5.0  # features are built clipped to ±5 reference scales; standardised values are kept within it too
# The statistics clip each value to ±3 reference scales before summing: the x² terms set the
# release's sensitivity (3⁴ against 5⁴ per column), so the same ε buys 2.6 times less noise,
# and no feature of the demo or the public datasets has more than 1 % of its values beyond 3.
STATS_CLIP = 3.0


def numeric_count(layout: FeatureLayout | None = None) -> int:
    return (layout or standard_layout()).n_numeric


class PartnerSums(BaseModel):
    """What one partner sends: sums over its training rows (noised if asked)."""

    n: float
    sum: list[float]
    sumsq: list[float]
    onehot: list[float]


def row_bound(k: int, width: int | None = None) -> float:
    """L2 norm of one row's contribution vector [x, x², 1, one-hot]: x clipped to ±STATS_CLIP,
    at most one 1 per categorical block; we use the loose bound with all one-hot ones."""
    width = standard_layout().width if width is None else width
    return float(np.sqrt(k * STATS_CLIP**2 + k * STATS_CLIP**4 + 1 + (width - k)))


def partner_sums(x: np.ndarray, noise_multiplier: float = 0.0, layout: FeatureLayout | None = None) -> PartnerSums:
    k = numeric_count(layout)
    num = np.clip(x[:, :k].astype(np.float64), -STATS_CLIP, STATS_CLIP)
    rest = x[:, k:].astype(np.float64)
    n, s, sq, oh = float(len(x)), num.sum(axis=0), (num**2).sum(axis=0), rest.sum(axis=0)
    if noise_multiplier > 0:
        std = noise_multiplier * row_bound(k, x.shape[1])
        n += float(os_normal(std))
        s, sq, oh = s + os_normal(std, s.shape), sq + os_normal(std, sq.shape), oh + os_normal(std, oh.shape)
    return PartnerSums(n=n, sum=s.tolist(), sumsq=sq.tolist(), onehot=oh.tolist())


class Normalisation(BaseModel):
    """Mean and standard deviation of the numeric columns: what travels with the model."""

    mean: list[float]
    std: list[float]

    def apply(self, x: np.ndarray) -> np.ndarray:
        k = len(self.mean)
        out = x.astype(np.float32, copy=True)
        out[:, :k] = (np.clip(out[:, :k], -VALUE_CLIP, VALUE_CLIP) - np.asarray(self.mean, np.float32)) \
            / np.asarray(self.std, np.float32)
        # noised statistics can put a mean or an sd off by a fraction of a reference scale;
        # kept within ±VALUE_CLIP, no feature can swamp DP-SGD's clipped gradients
        out[:, :k] = np.clip(out[:, :k], -VALUE_CLIP, VALUE_CLIP)
        return out


class FeatureStats(BaseModel):
    """The federation's statistics: the normalisation plus how often each binary and
    category column is set across all partners' training rows."""

    names: list[str]
    normalisation: Normalisation
    rows: float
    category_counts: dict[str, float]
    partners: int
    noised: bool
    layout: FeatureLayout | None = None  # the run's layout, learned categories' levels included
    split_points: list[list[float]] | None = None  # gbdt runs: per numeric column, quantile cuts (matrix units)


NOISED_VAR_FLOOR = 0.25**2  # noised sums: no sd under a quarter of a reference scale


def combine(sums: list[PartnerSums], noised: bool = False, layout: FeatureLayout | None = None) -> FeatureStats:
    layout = layout or standard_layout()
    k = layout.n_numeric
    n = max(sum(s.n for s in sums), 1.0)
    mean = np.sum([s.sum for s in sums], axis=0) / n
    var = np.sum([s.sumsq for s in sums], axis=0) / n - mean**2
    # a constant column is left unscaled-ish; with noised sums a low-variance column can come
    # out with a tiny or negative variance, and dividing by its root would blow it up
    std = np.sqrt(np.clip(var, NOISED_VAR_FLOOR if noised else 1e-4, None))
    names = layout.names()
    onehot = np.sum([s.onehot for s in sums], axis=0)
    return FeatureStats(names=names[:k], normalisation=Normalisation(mean=mean.tolist(), std=std.tolist()), rows=n,
                        category_counts={name: float(c) for name, c in zip(names[k:], onehot)},
                        partners=len(sums), noised=noised)
