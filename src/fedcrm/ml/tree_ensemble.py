"""Boosted trees as the rest of fedcrm sees a model: a torch module over plain arrays.

Every tree is a complete binary tree of the run's depth d: 2^d - 1 splits (a feature
column and a threshold on the standardised scale: `x[feature] > threshold` goes right) and
2^d leaf values. The ensemble is four float arrays, which is all a checkpoint, a Flower
message or the node's reply cache holds:

  trees.feature    [T, 2^d - 1]   column index of each split (whole numbers, as floats:
                                  only float arrays may leave a node)
  trees.threshold  [T, 2^d - 1]
  trees.value      [T, 2^d]       leaf values (margins, shrinkage included)
  trees.base       [1]            the starting margin

Because it is an `nn.Module` whose forward returns a logit, evaluation, scoring and the
membership audit use it exactly as they use logistic regression and the MLP. A split
that should not split (a tree grown less deep) has threshold +inf: everything goes left.
"""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import torch
from torch import nn

FEATURE, THRESHOLD, VALUE, BASE = "trees.feature", "trees.threshold", "trees.value", "trees.base"
TREE_KEYS = (FEATURE, THRESHOLD, VALUE, BASE)
MAX_DEPTH = 8  # 255 splits and 256 leaves a tree
MAX_TREES = 5_000  # what a node will evaluate: T × rows × depth steps


class BoostedTrees(nn.Module):
    """The ensemble; `load_state_dict` takes any number of trees of the module's depth."""

    def __init__(self, n_features: int, depth: int) -> None:
        super().__init__()
        if not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"tree depth {depth}: 1 to {MAX_DEPTH}")
        self.n_features, self.depth = n_features, depth
        inner, leaves = 2**depth - 1, 2**depth
        self.register_buffer(FEATURE.replace(".", "_"), torch.zeros(0, inner))
        self.register_buffer(THRESHOLD.replace(".", "_"), torch.zeros(0, inner))
        self.register_buffer(VALUE.replace(".", "_"), torch.zeros(0, leaves))
        self.register_buffer(BASE.replace(".", "_"), torch.zeros(1))

    # buffers are named trees_feature ...; the state dict speaks the wire names above
    def state_dict(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return {key: getattr(self, key.replace(".", "_")).detach().clone() for key in TREE_KEYS}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201, ARG002
        arrays = check_ensemble(state, self.n_features, self.depth)
        for key in TREE_KEYS:
            setattr(self, key.replace(".", "_"), arrays[key])
        return None

    @property
    def n_trees(self) -> int:
        return int(self.trees_value.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        margin = self.trees_base.expand(x.shape[0]).clone()
        if self.n_trees:
            leaf = leaf_index(x, self.trees_feature.long(), self.trees_threshold, self.depth)
            margin += self.trees_value.gather(1, leaf.T).sum(0)
        return margin


def leaf_index(x: torch.Tensor, feature: torch.Tensor, threshold: torch.Tensor, depth: int) -> torch.Tensor:
    """[rows, trees]: the leaf (0 … 2^d - 1) each row reaches in each tree."""
    rows, trees = x.shape[0], feature.shape[0]
    node = torch.zeros(rows, trees, dtype=torch.long)
    tree = torch.arange(trees).expand(rows, trees)
    for _ in range(depth):
        f, t = feature[tree, node], threshold[tree, node]
        right = x.gather(1, f) > t
        node = 2 * node + 1 + right.long()
    return node - (2**depth - 1)


def check_ensemble(state: dict[str, torch.Tensor], n_features: int, depth: int) -> dict[str, torch.Tensor]:
    """The four arrays, checked: shapes of this depth, whole feature indices in range,
    finite leaf values, at most `MAX_TREES` trees. What a coordinator sends cannot make a
    node index out of range or loop for long."""
    missing = [k for k in TREE_KEYS if k not in state]
    if missing:
        raise ValueError(f"tree ensemble without {', '.join(missing)}")
    feature, threshold, value, base = (torch.as_tensor(state[k], dtype=torch.float32) for k in TREE_KEYS)
    inner, leaves = 2**depth - 1, 2**depth
    trees = feature.shape[0] if feature.ndim == 2 else -1
    if not (feature.shape == threshold.shape == (trees, inner) and value.shape == (trees, leaves)
            and base.shape == (1,)):
        raise ValueError(f"tree arrays of shapes {[list(state[k].shape) for k in TREE_KEYS]} are not trees of depth "
                         f"{depth} (splits [T, {inner}], leaves [T, {leaves}], base [1])")
    if trees > MAX_TREES:
        raise ValueError(f"{trees} trees: a node evaluates at most {MAX_TREES}")
    _check_splits(feature, threshold, n_features)
    if not (torch.isfinite(value).all() and torch.isfinite(base).all()):
        raise ValueError("leaf values and the base margin must be finite")
    return {FEATURE: feature, THRESHOLD: threshold, VALUE: value, BASE: base}


def _check_splits(feature: torch.Tensor, threshold: torch.Tensor, n_features: int) -> None:
    if feature.numel() and not (torch.equal(feature, feature.round()) and feature.min() >= 0
                                and feature.max() < n_features):
        raise ValueError(f"split features must be column numbers 0 … {n_features - 1}")
    if torch.isnan(threshold).any() or (threshold == -math.inf).any():
        raise ValueError("split thresholds must be numbers (or +inf: no split)")


def empty_ensemble(depth: int, base: float = 0.0) -> dict[str, torch.Tensor]:
    inner, leaves = 2**depth - 1, 2**depth
    return {FEATURE: torch.zeros(0, inner), THRESHOLD: torch.zeros(0, inner), VALUE: torch.zeros(0, leaves),
            BASE: torch.tensor([float(base)])}


def depth_of(state: dict[str, torch.Tensor]) -> int:
    """The depth of the trees in a state dict (from its leaf array's width)."""
    leaves = int(state[VALUE].shape[1])
    depth = leaves.bit_length() - 1
    if leaves != 2**depth or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"{leaves} leaves a tree is not a complete tree of depth 1 … {MAX_DEPTH}")
    return depth


def to_plain(state: dict[str, torch.Tensor], names: list[str]) -> dict:
    """The ensemble as plain data (`trees.json` in a run directory): feature names with
    every split, thresholds on the standardised scale the model.json normalisation defines."""
    depth = depth_of(state)
    feature, threshold = state[FEATURE].long().numpy(), state[THRESHOLD].numpy().astype(float)
    return {
        "format": "fedcrm complete binary trees v1",
        "depth": depth,
        "base_margin": float(state[BASE][0]),
        "rule": "split i of a tree: x[feature] > threshold goes to node 2i + 2, else 2i + 1; leaves follow the "
                f"{2**depth - 1} splits in order; thresholds are on the standardised scale (model.json normalisation); "
                "the logit is base_margin + the sum of the leaves reached",
        "trees": [{"feature": [names[f] for f in feature[t]],
                   "threshold": [None if not np.isfinite(v) else float(v) for v in threshold[t]],
                   "value": state[VALUE][t].numpy().astype(float).tolist()} for t in range(feature.shape[0])],
    }


def _raw_threshold(t: float, approx: float, mean: np.float32, std: np.float32, value_clip: float) -> float:
    """The largest raw value whose standardised form, computed as `Normalisation.apply`
    does (float32, clipped), is still <= the split's float32 threshold `t`: so a raw value
    sitting on a cut (an integer column cut at an integer) goes the same way in LightGBM
    (x <= threshold, in doubles) as in the model. `approx` (t·std + mean) brackets it."""
    t32 = np.float32(t)

    def standardised(x: float) -> np.float32:
        v = np.float32(min(max(x, -value_clip), value_clip))
        return np.float32(min(max(np.float32((v - mean) / std), -value_clip), value_clip))

    top = min(value_clip, np.finfo(np.float64).max)
    if standardised(top) <= t32:  # every value goes left
        return float(np.finfo(np.float64).max)
    if standardised(-top) > t32:  # every value goes right
        return -float(np.finfo(np.float64).max)
    step = max(abs(approx), 1.0) * 1e-6
    lo, hi = approx - step, approx + step
    while standardised(lo) > t32:
        lo, step = lo - step, step * 2
    step = max(abs(approx), 1.0) * 1e-6
    while standardised(hi) <= t32:
        hi, step = hi + step, step * 2
    for _ in range(100):  # bisection down to neighbouring doubles
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if standardised(mid) <= t32 else (lo, mid)
    return lo


def to_lightgbm(state: dict[str, torch.Tensor], names: list[str], mean: list[float] | None = None,
                std: list[float] | None = None, value_clip: float = math.inf) -> str:
    """The ensemble as a LightGBM text model (binary objective) that scores the partner's
    own feature matrix, unstandardised: `lightgbm.Booster(model_str=...)` predicts the same
    probabilities from the layout's columns as this model from their standardised form.
    The numeric columns' thresholds are mapped back through the normalisation (`mean`,
    `std` of the first len(mean) columns, raw values clipped at ±`value_clip` first); the
    base margin is added to the first tree's leaves (LightGBM's text format has no intercept).
    LightGBM sends x <= threshold left, as these trees do."""
    depth = depth_of(state)
    inner, leaves = 2**depth - 1, 2**depth
    feature, threshold = state[FEATURE].long().numpy(), state[THRESHOLD].double().numpy()
    value, base = state[VALUE].double().numpy(), float(state[BASE][0])
    mean, std = list(mean or []), list(std or [])
    if not len(feature):  # no tree yet: one tree of two equal leaves holding the base margin
        feature, threshold, value = np.zeros((1, inner), int), np.full((1, inner), np.inf), np.zeros((1, leaves))
    big = np.finfo(np.float64).max

    @functools.cache
    def raw(j: int, t: float) -> float:
        if j < len(mean) and np.isfinite(t):  # beyond the clip: every raw value one way, as in the model
            return _raw_threshold(t, t * std[j] + mean[j], np.float32(mean[j]), np.float32(std[j]), value_clip)
        return float(t) if np.isfinite(t) else big

    def child(node: int) -> int:
        return node if node < inner else ~(node - inner)

    def numbers(values: list) -> str:
        return " ".join(repr(float(v)) if isinstance(v, float | np.floating) else str(int(v)) for v in values)

    trees = []
    for i in range(len(feature)):
        trees.append("\n".join([
            f"Tree={i}", f"num_leaves={leaves}", "num_cat=0",
            "split_feature=" + numbers([int(f) for f in feature[i]]),
            "split_gain=" + numbers([0.0] * inner),
            "threshold=" + numbers([raw(int(f), float(t)) for f, t in zip(feature[i], threshold[i])]),
            "decision_type=" + numbers([2] * inner),  # numerical, missing values as zero
            "left_child=" + numbers([child(2 * n + 1) for n in range(inner)]),
            "right_child=" + numbers([child(2 * n + 2) for n in range(inner)]),
            "leaf_value=" + numbers([float(v) + (base if i == 0 else 0.0) for v in value[i]]),
            "leaf_weight=" + numbers([0.0] * leaves), "leaf_count=" + numbers([0] * leaves),
            "internal_value=" + numbers([0.0] * inner), "internal_weight=" + numbers([0.0] * inner),
            "internal_count=" + numbers([0] * inner), "is_linear=0", "shrinkage=1"]) + "\n\n")
    header = ["tree", "version=v4", "num_class=1", "num_tree_per_iteration=1", "label_index=0",
              f"max_feature_idx={len(names) - 1}", "objective=binary sigmoid:1",
              "feature_names=" + " ".join(re.sub(r"[^0-9A-Za-z_]", "_", n) for n in names),  # LightGBM's charset
              "feature_infos=" + " ".join(["none"] * len(names))]
    return "\n".join(header) + "\n\n" + "".join(trees) + "end of trees\n\npandas_categorical:null\n"
