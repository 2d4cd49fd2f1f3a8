"""How the coordinator combines the partners' replies into one round's figures.

ε is never averaged: the train aggregate carries the largest ε any partner stated. The
federation's AUC is not a mean of partners' AUCs (in a non-IID consortium much of the
signal lies between partners): it is computed from the summed score histograms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
from flwr.app import MetricRecord, RecordDict

from fedcrm.ml.evaluation import pooled_from_histograms
from fedcrm.coordinator.value_edges import PredictedEdges
from fedcrm.ml import survival
from fedcrm.ml.value import metrics_from_joint
from fedcrm.protocol import (METRICS, EvaluateAggregate, EvaluateReply, SurvivalEvaluateReply, TrainAggregate,
                             TrainReply, ValueEvaluateReply, wire_key)

WEIGHT_KEY = wire_key("num_examples")  # FedAvg weighs updates by example count...
UNIT_WEIGHT_KEY = wire_key("unit_weight")  # ...or, under client-level DP, every partner alike


def _weighted(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if sum(weights) > 0 else float("nan")


def _weights(records: list[RecordDict], weight_key: str) -> list[float]:
    return [float(r[METRICS][weight_key]) for r in records]


def aggregate_train_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Weighted mean loss; ε is the *maximum* over partners (budgets never average)."""
    replies = [TrainReply.from_dict(r[METRICS]) for r in records]
    w = _weights(records, weight_key)
    eps = [r.epsilon for r in replies if r.epsilon is not None]
    return TrainAggregate(train_loss=_weighted([r.train_loss for r in replies], w), num_partners=len(replies),
                          num_examples=int(sum(w)), max_epsilon=max(eps) if eps else None).record()


def _finite_mean(replies: list[EvaluateReply] | list[ValueEvaluateReply] | list[SurvivalEvaluateReply],
                 w: list[float], field: str) -> float | None:
    """Weighted mean of `field` over the partners whose value is finite (NaN: undefined there)."""
    have = [(getattr(r, field), wi) for r, wi in zip(replies, w) if math.isfinite(getattr(r, field))]
    return _weighted([v for v, _ in have], [wi for _, wi in have]) if have else None


def aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Pooled ranking and calibration metrics from summed score histograms; example-weighted
    log-loss, Brier and accuracy; and the example-weighted mean of each partner's own
    ranking metrics, which ignores the signal between partners."""
    replies = [EvaluateReply.from_dict(r[METRICS]) for r in records]
    w = _weights(records, weight_key)
    values: dict[str, float | None] = {f: _finite_mean(replies, w, f) for f in EvaluateAggregate.EXAMPLE_MEANS}
    pos = np.sum([np.asarray(r.score_hist_pos) for r in replies], axis=0)
    neg = np.sum([np.asarray(r.score_hist_neg) for r in replies], axis=0)
    values.update(pooled_from_histograms(pos, neg))
    values.update({f"mean_partner_{f}": _finite_mean(replies, w, f) for f in EvaluateAggregate.PARTNER_MEANS})
    return EvaluateAggregate(num_examples=int(sum(w)), num_partners=len(replies), **values).record()


def aggregate_value_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY, *,
                            edges: PredictedEdges) -> MetricRecord:
    """A value task's round: its metrics pooled from the summed joint histograms (noised on
    every node, cut at the predicted-side `edges` the round was sent), and the
    example-weighted mean of each partner's own Spearman correlation."""
    replies = [ValueEvaluateReply.from_dict(r[METRICS]) for r in records]
    w = _weights(records, weight_key)
    joint = np.sum([np.asarray(r.value_hist, dtype=np.float64) for r in replies], axis=0)
    pooled = metrics_from_joint(joint, edges.scale, edges.scale.check_edges(edges.edges)).model_dump()
    values = {f: (v if math.isfinite(v) else None) for f, v in pooled.items()}
    return EvaluateAggregate(num_examples=int(sum(w)), num_partners=len(replies),
                             mean_partner_spearman=_finite_mean(replies, w, "spearman"), **values).record()


def aggregate_survival_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY, *,
                               edges: PredictedEdges) -> MetricRecord:
    """A time-to-churn task's round: concordance and integrated Brier pooled from the summed
    joint histograms (each risk bin at the curve of the model the round evaluated,
    `fedcrm.ml.survival.metrics_from_joint`), and the mean of each partner's own c-index."""
    replies = [SurvivalEvaluateReply.from_dict(r[METRICS]) for r in records]
    w = _weights(records, weight_key)
    scale = edges.scale
    assert isinstance(scale, survival.SurvivalScale)
    joint = np.sum([np.asarray(r.survival_hist, dtype=np.float64) for r in replies], axis=0)
    alpha = np.asarray(edges.alpha if edges.alpha is not None else [0.0] * scale.periods)
    pooled = survival.metrics_from_joint(joint, scale, scale.check_edges(edges.edges), alpha).model_dump()
    values = {f: (v if math.isfinite(v) else None) for f, v in pooled.items()}
    return EvaluateAggregate(num_examples=int(sum(w)), num_partners=len(replies),
                             mean_partner_c_index=_finite_mean(replies, w, "c_index"), **values).record()


def evaluate_aggregator(edges: PredictedEdges | None) -> Callable[[list[RecordDict], str], MetricRecord]:
    """The evaluate aggregation of a run: score histograms, or a value or time-to-churn
    task's joint ones."""
    if edges is None:
        return aggregate_evaluate_metrics
    if isinstance(edges.scale, survival.SurvivalScale):
        return partial(aggregate_survival_metrics, edges=edges)
    return partial(aggregate_value_metrics, edges=edges)
