"""One round of federated boosting: the coordinator picks new trees' splits, every
partner sends the gradient and hessian sums of its rows in each leaf, the coordinator
turns the summed sums into leaf values.

Splits come from candidate thresholds known to everyone before the run, in one of two ways
(Maddock et al., "Federated Boosted Decision Trees with Differential Privacy", CCS 2022):
  - random: each split a random column and threshold, so a tree costs one aggregation and
    the whole privacy budget goes to leaf values. A round grows a batch of trees on the
    same gradients; each tree's leaves are scaled by 1/batch, so a batch moves the model
    as one tree would.
  - histogram: a tree is grown level by level, one round a level: partners send gradient
    and hessian histograms (per node of the level, column and candidate bin) and the
    coordinator takes each node's best split; a last round sends the leaf sums. depth + 1
    rounds a tree; the splits are the ones a pooled histogram booster would pick.

The release and its sensitivity. A partner's rows have logistic-loss gradients
g = p - y in [-1, 1] and hessians h = p(1 - p) in [0, 1/4], clipped to |g| <= g_clip and
h <= h_clip. Every row lands in exactly one leaf of each tree, so adding or removing one
row changes the vector of all (G, H) sums of a batch of B trees by at most
    sensitivity = sqrt(B * (g_clip^2 + h_clip^2))
in L2. A level's histograms hold every row once per column (in its node's bin of that
column), so they move by at most sqrt(F * (g_clip^2 + h_clip^2)) for F columns. Gaussian
noise of standard deviation sigma * sensitivity on every sum makes a round one Gaussian
mechanism of noise multiplier sigma over all training rows: the ledger entry (sigma,
sample rate 1, 1 step), accounted like every other release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedcrm.ml.tree_ensemble import BASE, FEATURE, THRESHOLD, VALUE, check_ensemble, depth_of, leaf_index

GROW_FEATURE, GROW_THRESHOLD, GROW_GRAD, GROW_HESS = "grow.feature", "grow.threshold", "grow.grad", "grow.hess"
# a histogram round: [nodes of the level, columns, bins] sums instead of leaf sums, over the
# candidate thresholds it sends ([columns, bins - 1], +inf where a column has fewer)
HIST_GRAD, HIST_HESS, CANDIDATES = "grow.hist_grad", "grow.hist_hess", "grow.candidates"
MAX_BATCH = 64  # new trees one round may ask for
HESS_MAX = 0.25  # p(1 - p) never exceeds it


def candidate_thresholds(n_numeric: int, width: int, bins: int, cuts: list[list[float]] | None = None,
                         mean: list[float] | None = None, std: list[float] | None = None) -> list[np.ndarray]:
    """Thresholds every column may split at: 0/1 columns at 1/2; numeric columns at the
    federation's quantile cuts (`fedcrm.ml.sketch`, matrix units, standardised here with
    `mean` and `std`), or without a sketch at the standard normal's `bins`-quantiles (the
    federation's normalisation makes a numeric column roughly standard)."""
    from scipy.special import ndtri  # the standard normal's quantiles (scipy.stats: 0.8 s to import)

    normal = ndtri(np.arange(1, bins) / bins).astype(np.float32)
    out = []
    for j in range(width):
        if j >= n_numeric:
            out.append(np.array([0.5], np.float32))
        elif cuts is not None and mean is not None and std is not None:
            out.append(np.unique((np.asarray(cuts[j], np.float64) - mean[j]) / std[j]).astype(np.float32)[:bins - 1])
        else:
            out.append(normal)
    return out


def padded(thresholds: list[np.ndarray], bins: int) -> torch.Tensor:
    """[columns, bins - 1]: the candidate thresholds as one array, +inf after a column's own."""
    out = torch.full((len(thresholds), bins - 1), math.inf)
    for j, t in enumerate(thresholds):
        out[j, :len(t)] = torch.as_tensor(t)
    return out


def unpadded(candidates: torch.Tensor) -> list[np.ndarray]:
    return [row[np.isfinite(row)] for row in candidates.numpy().astype(np.float32)]


def random_splits(rng: np.random.Generator, trees: int, depth: int, thresholds: list[np.ndarray]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """`trees` complete trees of `depth`: every split a uniformly random column, and one of
    its candidate thresholds at random."""
    inner = 2**depth - 1
    splittable = np.array([j for j, t in enumerate(thresholds) if len(t)])
    feature = splittable[rng.integers(0, len(splittable), size=(trees, inner))]
    threshold = np.array([[rng.choice(thresholds[f]) for f in row] for row in feature], dtype=np.float32)
    return torch.as_tensor(feature, dtype=torch.float32), torch.as_tensor(threshold.reshape(trees, inner))


def grow_request(feature: torch.Tensor, threshold: torch.Tensor, level: int | None = None,
                 thresholds: list[np.ndarray] | None = None, bins: int = 0) -> dict[str, torch.Tensor]:
    """The arrays a round sends besides the ensemble: the trees' splits and zeroed sums for
    the partner to fill (a reply carries exactly the arrays it was sent): leaf sums, or a
    level's histograms (`level`) over the run's candidate `thresholds` in `bins` bins."""
    if level is not None:
        assert thresholds is not None
        zeros = torch.zeros(2**level, len(thresholds), bins)
        return {GROW_FEATURE: feature, GROW_THRESHOLD: threshold, HIST_GRAD: zeros, HIST_HESS: zeros.clone(),
                CANDIDATES: padded(thresholds, bins)}
    leaves = feature.shape[1] + 1
    zeros = torch.zeros(feature.shape[0], leaves)
    return {GROW_FEATURE: feature, GROW_THRESHOLD: threshold, GROW_GRAD: zeros, GROW_HESS: zeros.clone()}


def unsplit_tree(depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One tree with no split decided yet (threshold +inf: every row goes left)."""
    inner = 2**depth - 1
    return torch.zeros(1, inner), torch.full((1, inner), math.inf)


@dataclass(frozen=True)
class Request:
    """What a boosting round asks of a partner, checked (`check_request`)."""

    depth: int
    feature: torch.Tensor  # [B, 2^depth - 1] the new trees' splits (a histogram round: the one tree so far)
    threshold: torch.Tensor
    level: int | None  # a histogram round: the level whose nodes' histograms are asked for; None: leaf sums
    thresholds: list[np.ndarray] | None = None  # a histogram round: each column's candidate thresholds


def check_request(state: dict[str, torch.Tensor], n_features: int, bins: int) -> Request:
    """The round's trees, checked like the ensemble (same depth, 1 … MAX_BATCH trees), and
    the shape of the sums asked for: leaf sums [B, 2^depth], or histograms [2^level,
    n_features, bins] of one tree's level (the node's own column count and bins)."""
    depth = depth_of(state)
    check_ensemble(state, n_features, depth)
    for k in (GROW_FEATURE, GROW_THRESHOLD):
        if k not in state:
            raise ValueError(f"a boosting round without {k}")
    feature, threshold = (torch.as_tensor(state[k], dtype=torch.float32) for k in (GROW_FEATURE, GROW_THRESHOLD))
    batch = feature.shape[0] if feature.ndim == 2 else -1
    if not 1 <= batch <= MAX_BATCH or feature.shape != threshold.shape or feature.shape[1] != 2**depth - 1:
        raise ValueError(f"new trees of shape {list(feature.shape)}: 1 … {MAX_BATCH} trees of depth {depth}")
    check_ensemble({FEATURE: feature, THRESHOLD: threshold, VALUE: torch.zeros(batch, 2**depth),
                    BASE: torch.zeros(1)}, n_features, depth)
    if HIST_GRAD in state or HIST_HESS in state:
        shape = tuple(state.get(HIST_GRAD, torch.zeros(0)).shape)
        nodes = shape[0] if shape else 0
        level = nodes.bit_length() - 1
        if (batch != 1 or nodes != 2**level or not 0 <= level < depth or shape != (nodes, n_features, bins)
                or tuple(state.get(HIST_HESS, torch.zeros(0)).shape) != shape or GROW_GRAD in state):
            raise ValueError(f"histograms must be [2^level, {n_features}, {bins}] for one tree, level < {depth}")
        candidates = torch.as_tensor(state.get(CANDIDATES, torch.zeros(0)), dtype=torch.float32)
        if (tuple(candidates.shape) != (n_features, bins - 1) or torch.isnan(candidates).any()
                or (candidates == -math.inf).any() or (candidates.diff(dim=1) < 0).any()):
            raise ValueError(f"candidate thresholds must be [{n_features}, {bins - 1}], ascending numbers "
                             "(+inf after a column's last)")
        return Request(depth, feature, threshold, level, unpadded(candidates))
    for k in (GROW_GRAD, GROW_HESS):
        if k not in state or tuple(state[k].shape) != (batch, 2**depth):
            raise ValueError(f"{k} must be [{batch}, {2**depth}]")
    return Request(depth, feature, threshold, None)


def sensitivity(copies: int, grad_clip: float, hess_clip: float = HESS_MAX) -> float:
    """L2 change of a round's sums when one row is added or removed (module docstring):
    `copies` is how often a row is counted: once per tree of a leaf round, once per column
    of a histogram round."""
    return math.sqrt(copies * (grad_clip**2 + hess_clip**2))


def gradients(margin: torch.Tensor, y: np.ndarray, grad_clip: float, hess_clip: float = HESS_MAX
              ) -> tuple[np.ndarray, np.ndarray]:
    """Clipped logistic-loss gradients and hessians of every row."""
    p = torch.sigmoid(margin).numpy().astype(np.float64)
    return np.clip(p - y.astype(np.float64), -grad_clip, grad_clip), np.clip(p * (1.0 - p), 0.0, hess_clip)


def bin_codes(x: np.ndarray, thresholds: list[np.ndarray]) -> np.ndarray:
    """[rows, columns]: how many of the column's candidate thresholds each value exceeds
    (so `x > thresholds[k]` exactly when the code is above k)."""
    return np.stack([np.searchsorted(t, x[:, j], side="left") for j, t in enumerate(thresholds)], axis=1)


def node_at_level(x: torch.Tensor, feature: torch.Tensor, threshold: torch.Tensor, level: int) -> np.ndarray:
    """The node (0 … 2^level - 1, left to right) of one tree's level each row reaches."""
    node = torch.zeros(x.shape[0], dtype=torch.long)
    f, t = feature[0].long(), threshold[0]
    for _ in range(level):
        node = 2 * node + 1 + (x.gather(1, f[node].unsqueeze(1)).squeeze(1) > t[node]).long()
    return (node - (2**level - 1)).numpy()


def histograms(g: np.ndarray, h: np.ndarray, codes: np.ndarray, node: np.ndarray, nodes: int, bins: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradient and hessian sums per (node, column, bin), [nodes, columns, bins] each."""
    columns = codes.shape[1]
    cell = (node[:, None] * columns + np.arange(columns)[None, :]) * bins + codes  # [rows, columns]
    size = nodes * columns * bins
    grad = np.bincount(cell.ravel(), weights=np.repeat(g, columns), minlength=size)
    hess = np.bincount(cell.ravel(), weights=np.repeat(h, columns), minlength=size)
    return grad.reshape(nodes, columns, bins), hess.reshape(nodes, columns, bins)


def best_splits(grad: np.ndarray, hess: np.ndarray, thresholds: list[np.ndarray], l2: float, min_hessian: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Every node's best split from the summed histograms [nodes, columns, bins]: the
    column and threshold of the largest gain G_L²/(H_L+λ) + G_R²/(H_R+λ) - G²/(H+λ) with
    both sides holding at least `min_hessian`; a node where no split gains gets threshold
    +inf (all rows left). A node's G and H are averaged over the columns' totals (each
    column's bins add up to them: the average holds less noise)."""
    nodes, columns, bins = grad.shape
    total_g, total_h = grad.sum(axis=2).mean(axis=1), hess.sum(axis=2).mean(axis=1)  # [nodes]
    left_g, left_h = np.cumsum(grad, axis=2), np.cumsum(hess, axis=2)  # left of threshold k: bins 0 … k
    right_g, right_h = total_g[:, None, None] - left_g, total_h[:, None, None] - left_h
    gain = (left_g**2 / (np.maximum(left_h, 0) + l2) + right_g**2 / (np.maximum(right_h, 0) + l2)
            - (total_g**2 / (np.maximum(total_h, 0) + l2))[:, None, None])
    valid = np.zeros((columns, bins), bool)
    for j, t in enumerate(thresholds):
        valid[j, :len(t)] = True  # threshold k exists for k < len(t)
    gain = np.where(valid[None] & (left_h >= min_hessian) & (right_h >= min_hessian), gain, -np.inf)
    flat = gain.reshape(nodes, -1).argmax(axis=1)
    best = gain.reshape(nodes, -1)[np.arange(nodes), flat]
    column, k = np.divmod(flat, bins)
    threshold = np.array([thresholds[c][i] if len(thresholds[c]) > i else np.inf for c, i in zip(column, k)])
    threshold = np.where(best > 0, threshold, np.inf)
    return np.where(best > 0, column, 0).astype(np.float32), threshold.astype(np.float32)


def leaf_sums(g: np.ndarray, h: np.ndarray, x: torch.Tensor, feature: torch.Tensor, threshold: torch.Tensor,
              depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradient and hessian sums per leaf of each new tree, [B, 2^depth] each."""
    leaf = leaf_index(x, feature.long(), threshold, depth).numpy()  # [rows, B]
    leaves = 2**depth
    grads = np.stack([np.bincount(leaf[:, t], weights=g, minlength=leaves) for t in range(leaf.shape[1])])
    hess = np.stack([np.bincount(leaf[:, t], weights=h, minlength=leaves) for t in range(leaf.shape[1])])
    return grads, hess


def leaf_values(grad: np.ndarray, hess: np.ndarray, learning_rate: float, l2: float, hess_floor: float
                ) -> np.ndarray:
    """Newton steps -G / (H + l2), shrunk by the learning rate and shared across the batch.
    Noised hessian sums can be tiny or negative: `hess_floor` keeps a leaf with next to no
    rows from taking a huge step on noise alone."""
    batch = grad.shape[0]
    return -learning_rate / batch * grad / (np.maximum(hess, hess_floor) + l2)


def with_trees(state: dict[str, torch.Tensor], feature: torch.Tensor, threshold: torch.Tensor,
               values: np.ndarray) -> dict[str, torch.Tensor]:
    """The ensemble with the round's trees appended."""
    return {FEATURE: torch.cat([state[FEATURE], feature]), THRESHOLD: torch.cat([state[THRESHOLD], threshold]),
            VALUE: torch.cat([state[VALUE], torch.as_tensor(values, dtype=torch.float32)]), BASE: state[BASE].clone()}
