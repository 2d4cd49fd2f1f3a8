"""Where the federation's numeric columns may be split: a quantile sketch from noised counts.

Boosted trees compare a column with candidate thresholds. Quantiles of the standard normal
(after the federation's normalisation) fit a symmetric column; a skewed one (counts, days
since an event) gets most of them where few rows are. So a gbdt run's statistics release
also carries, per numeric column, the count of training rows in each cell of a fixed grid
over the layout's range (±VALUE_CLIP reference scales); the coordinator adds the partners'
counts and cuts each column at its quantiles.

Each row falls in one cell of each of the k numeric columns, so the counts move by at most
sqrt(k) in L2 when a row is added or removed: noise of σ·sqrt(k) on every count makes them
one more Gaussian mechanism of multiplier σ in the statistics release (charged with the
sums, `PartnerNode.statistics`). The cut points depend on the data only through the noised
counts: post-processing.
"""

from __future__ import annotations

import math

import numpy as np

from fedcrm.ml.fedstats import VALUE_CLIP
from fedcrm.privacy.noise import os_normal

CELLS = 256  # grid cells per column: 10 reference scales / 256 ≈ 0.04 of one


def grid() -> np.ndarray:
    return np.linspace(-VALUE_CLIP, VALUE_CLIP, CELLS + 1)


def sketch_counts(x_numeric: np.ndarray, noise_multiplier: float = 0.0) -> np.ndarray:
    """[k, CELLS] training rows per cell of each numeric column (matrix units), noised with
    σ·sqrt(k) when `noise_multiplier` > 0."""
    k = x_numeric.shape[1]
    cell = np.clip(np.searchsorted(grid(), x_numeric, side="right") - 1, 0, CELLS - 1)
    counts = np.stack([np.bincount(cell[:, j], minlength=CELLS) for j in range(k)]).astype(np.float64) if k else \
        np.zeros((0, CELLS))
    if noise_multiplier > 0 and k:
        counts += os_normal(noise_multiplier * math.sqrt(k), counts.shape)
    return counts


def split_points(counts: np.ndarray, bins: int) -> list[list[float]]:
    """Per column, at most `bins` - 1 cut points (matrix units) at the quantiles of the
    summed counts (negative noised counts read as 0), placed within their cell by linear
    interpolation (the rows of a cell taken as spread evenly over it); a column with no
    mass keeps none."""
    edges, width, out = grid(), 2 * VALUE_CLIP / CELLS, []
    for row in np.maximum(counts, 0.0):
        total = row.sum()
        if total <= 0:
            out.append([])
            continue
        upto = np.cumsum(row) / total
        targets = np.arange(1, bins) / bins
        cell = np.minimum(np.searchsorted(upto, targets, side="left"), CELLS - 1)
        before = np.where(cell > 0, upto[cell - 1], 0.0)
        share = np.where(row[cell] > 0, (targets - before) / np.maximum(row[cell] / total, 1e-300), 0.0)
        cuts = edges[cell] + np.clip(share, 0.0, 1.0) * width
        out.append(sorted({round(float(c), 6) for c in cuts if -VALUE_CLIP < c < VALUE_CLIP}))
    return out
