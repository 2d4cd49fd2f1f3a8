"""Where a value or time-to-churn run's evaluations cut the predicted side of their joint
histograms.

A node's release counts its hold-out customers by (predicted bin, outcome). The outcome
side is fixed by the task's scale; the predicted side's edges travel with each evaluate
message (`RoundConfig.value_edges`). They start even over the scale and, after
every evaluation of a trained model, move to the deciles of that evaluation's pooled,
noised predicted margin (`fedcrm.ml.value.next_edges`): post-processing of releases the
partners already made and were charged for. The starting model's evaluation (round 0)
does not move them: its predictions say nothing of where a trained model's will fall.

A time-to-churn run's metrics also need the period intercepts of the model each round
evaluated (`fedcrm.ml.survival.bin_curves`): they are kept from the arrays sent.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from fedcrm.ml.survival import PERIODS_KEY, SurvivalScale
from fedcrm.ml.value import ValueScale
from fedcrm.protocol import METRICS, RoundConfig, SurvivalEvaluateReply, ValueEvaluateReply


class PredictedEdges:
    """The edges the next evaluation is sent with, and what moves them."""

    def __init__(self, scale: ValueScale | SurvivalScale) -> None:
        self.scale = scale
        self.edges: list[float] = scale.even_edges()
        self.alpha: list[float] | None = None  # a time-to-churn model's period intercepts, as last sent

    def config(self, config: ConfigRecord, arrays: ArrayRecord | None = None) -> ConfigRecord:
        if arrays is not None and PERIODS_KEY in arrays:
            self.alpha = [float(v) for v in arrays[PERIODS_KEY].numpy().ravel()]
        return ConfigRecord({**dict(config.items()), RoundConfig.key("value_edges"): list(self.edges)})

    def counts(self, record: RecordDict) -> list[int]:
        """The joint histogram of one reply."""
        if isinstance(self.scale, SurvivalScale):
            return SurvivalEvaluateReply.from_dict(record[METRICS]).survival_hist
        return ValueEvaluateReply.from_dict(record[METRICS]).value_hist

    def update(self, job_round: int, replies: list[Message]) -> None:
        """After round `job_round`'s evaluation: the deciles of its pooled predicted margin."""
        hists = [self.counts(m.content) for m in replies if not m.has_error() and METRICS in m.content]
        if job_round < 1 or not hists:
            return
        pooled = np.sum([np.asarray(h, dtype=np.float64) for h in hists], axis=0)
        self.edges = self.scale.next_edges(pooled, self.scale.check_edges(self.edges))
