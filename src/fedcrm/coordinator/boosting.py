"""The coordinator's strategy for boosted trees: FedAvg's sampling and evaluation, with
training rounds that grow trees instead of averaging weights.

Random splits: `configure_train` picks the round's batch of trees (seeded by the run's
seed and round, among thresholds fixed before the run) and `aggregate_train` turns the
summed leaf sums into leaf values. Histogram splits: a tree takes depth + 1 rounds; in
round k of a tree the partners send histograms of the nodes of level k (the tree as far
as it is decided travels with the ensemble, as `partial.*` arrays, so a checkpoint can
resume mid-tree) and the coordinator picks each node's best split; the last round sends
leaf sums. `fedcrm.ml.tree_rounds` holds the arithmetic. Everything else — who is asked,
how evaluations are combined, the recording and quorum around it — is FedAvg's and
`RecordingStrategy`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedcrm.config import TrainPlan
from fedcrm.data.layout import FeatureLayout
from fedcrm.ml.fedstats import FeatureStats
from fedcrm.ml.tree_ensemble import TREE_KEYS, depth_of
from fedcrm.ml.tree_rounds import (GROW_FEATURE, GROW_GRAD, GROW_HESS, GROW_THRESHOLD, HIST_GRAD, HIST_HESS,
                                   best_splits, candidate_thresholds, grow_request, leaf_values, random_splits,
                                   unsplit_tree, with_trees)
from fedcrm.protocol import ARRAYS

PARTIAL_FEATURE, PARTIAL_THRESHOLD = "partial.feature", "partial.threshold"  # the tree being grown


class FedBoost(FedAvg):
    """Boosting rounds (`plan.tree_splits`); `offset` numbers a resumed run's rounds on."""

    def __init__(self, plan: TrainPlan, layout: FeatureLayout, offset: int = 0, **fedavg: object) -> None:
        super().__init__(**fedavg)  # type: ignore[arg-type]
        self.plan, self.offset = plan, offset
        self.use_layout(layout)
        self.pending: dict[int, dict[str, torch.Tensor]] = {}  # round -> what it sent

    def use_layout(self, layout: FeatureLayout, stats: FeatureStats | None = None) -> None:
        """The run's columns and where they may split; a layout whose learned categories have
        no levels yet has none (`run_federation` gives the strategy the resolved layout and
        the federation's statistics, with their quantile cuts, before the first round)."""
        if layout.unresolved():
            return
        norm = stats.normalisation if stats is not None and stats.split_points is not None else None
        self.thresholds = candidate_thresholds(layout.n_numeric, layout.width, self.plan.gbdt_bins,
                                               stats.split_points if norm else None,
                                               norm.mean if norm else None, norm.std if norm else None)

    def level(self, server_round: int) -> int | None:
        """The tree level a histogram round asks about (None: a leaf-sums round)."""
        if self.plan.tree_splits != "histogram":
            return None
        step = (server_round + self.offset - 1) % self.plan.rounds_per_tree
        return step if step < self.plan.gbdt_depth else None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        state = arrays.to_torch_state_dict()
        ensemble = {k: state[k] for k in TREE_KEYS}
        depth = depth_of(ensemble)
        if self.plan.tree_splits == "random":
            rng = np.random.default_rng([self.plan.seed, server_round + self.offset, 0xB005])
            feature, threshold = random_splits(rng, self.plan.gbdt_trees_per_round, depth, self.thresholds)
            request = {**ensemble, **grow_request(feature, threshold)}
        else:
            level = self.level(server_round)
            feature, threshold = ((state[PARTIAL_FEATURE], state[PARTIAL_THRESHOLD])
                                  if PARTIAL_FEATURE in state and level != 0 else unsplit_tree(depth))
            request = {**ensemble, **grow_request(feature, threshold, level, self.thresholds, self.plan.gbdt_bins)}
        self.pending[server_round] = request
        return super().configure_train(server_round, ArrayRecord(request), config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        sent = self.pending.pop(server_round)
        valid = [m for m in replies if not m.has_error()]
        if not valid:
            return None, None
        keys = (HIST_GRAD, HIST_HESS) if HIST_GRAD in sent else (GROW_GRAD, GROW_HESS)
        grads, hess = (sum(m.content[ARRAYS].to_torch_state_dict()[k].double().numpy() for m in valid) for k in keys)
        ensemble = {k: sent[k] for k in TREE_KEYS}
        if HIST_GRAD in sent:  # a level of the tree: its nodes' best splits
            level = self.level(server_round)
            column, threshold = best_splits(grads, hess, self.thresholds, self.plan.gbdt_l2, self.plan.tree_min_hessian)
            feature, thresholds = sent[GROW_FEATURE].clone(), sent[GROW_THRESHOLD].clone()
            first = 2**level - 1
            feature[0, first:first + len(column)] = torch.as_tensor(column)
            thresholds[0, first:first + len(column)] = torch.as_tensor(threshold)
            out = {**ensemble, PARTIAL_FEATURE: feature, PARTIAL_THRESHOLD: thresholds}
        else:  # the leaves of the round's trees
            values = leaf_values(grads, hess, self.plan.tree_learning_rate, self.plan.gbdt_l2, self.plan.tree_min_hessian)
            out = with_trees(ensemble, sent[GROW_FEATURE], sent[GROW_THRESHOLD], values)
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord(out), metrics
