"""Where a value run's evaluations cut the predicted side of their joint histograms.

A node's value release counts its hold-out customers by (predicted bin, actual bin). The
actual side is fixed by the task's scale; the predicted side's edges travel with each
evaluate message (`RoundConfig.value_edges`). They start even over the scale and, after
every evaluation of a trained model, move to the deciles of that evaluation's pooled,
noised predicted margin (`fedcrm.ml.value.next_edges`): post-processing of releases the
partners already made and were charged for. The starting model's evaluation (round 0)
does not move them: its predictions say nothing of where a trained model's will fall.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ConfigRecord, Message

from fedcrm.ml.value import ValueScale, next_edges
from fedcrm.protocol import METRICS, RoundConfig, ValueEvaluateReply


class PredictedEdges:
    """The edges the next value evaluation is sent with, and what moves them."""

    def __init__(self, scale: ValueScale) -> None:
        self.scale = scale
        self.edges: list[float] = scale.even_edges()

    def config(self, config: ConfigRecord) -> ConfigRecord:
        return ConfigRecord({**dict(config.items()), RoundConfig.key("value_edges"): list(self.edges)})

    def update(self, job_round: int, replies: list[Message]) -> None:
        """After round `job_round`'s evaluation: the deciles of its pooled predicted margin."""
        hists = [ValueEvaluateReply.from_dict(m.content[METRICS]).value_hist for m in replies
                 if not m.has_error() and METRICS in m.content]
        if job_round < 1 or not hists:
            return
        pooled = np.sum([np.asarray(h, dtype=np.float64) for h in hists], axis=0)
        self.edges = next_edges(pooled, self.scale, self.scale.check_edges(self.edges))
