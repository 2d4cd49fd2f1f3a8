"""The coordinator's aggregation rules on plain records."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict
from sklearn.metrics import roc_auc_score

from fedcrm.coordinator.aggregation import aggregate_evaluate_metrics, aggregate_train_metrics
from fedcrm.ml.evaluation import auc_from_histograms, binary_metrics, score_histograms
from fedcrm.protocol import EvaluateReply, TrainReply


def test_histogram_auc_matches_exact_auc() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(5000) < 0.3
    p = 1 / (1 + np.exp(-(rng.normal(size=5000) + 1.2 * y)))
    pos, neg = score_histograms(y, p)
    assert auc_from_histograms(pos, neg) == pytest.approx(roc_auc_score(y, p), abs=2e-3)
    assert auc_from_histograms(pos, [0] * len(neg)) is None


def test_hand_computed_auc_with_ties() -> None:
    # positives in bins 2 and 1, negatives in bins 0 and 1: pairs (2>0, 2>1, 1=1 tie, 1>0) → 3.5/4
    pos, neg = [0, 1, 1], [1, 1, 0]
    assert auc_from_histograms(pos, neg) == pytest.approx(3.5 / 4)


def _eval_record(y: np.ndarray, p: np.ndarray, pid: int) -> RecordDict:
    pos, neg = score_histograms(y, p)
    reply = EvaluateReply(num_examples=len(y), partner_id=pid, num_positives=int(np.sum(y)), score_hist_pos=pos,
                          score_hist_neg=neg, eval_seconds=0.0, **binary_metrics(y, p).model_dump())
    return RecordDict({"metrics": reply.record()})


def test_pooled_auc_sees_signal_between_partners() -> None:
    """Each partner alone ranks randomly; pooled, partner B's higher scores match its
    higher churn — the weighted mean of partner AUCs misses that, the pooled AUC does not."""
    rng = np.random.default_rng(0)
    ya, yb = rng.random(2000) < 0.1, rng.random(2000) < 0.6
    pa, pb = rng.uniform(0.05, 0.3, 2000), rng.uniform(0.5, 0.8, 2000)
    agg = aggregate_evaluate_metrics([_eval_record(ya, pa, 1), _eval_record(yb, pb, 2)])
    exact = roc_auc_score(np.concatenate([ya, yb]), np.concatenate([pa, pb]))
    assert agg["auc"] == pytest.approx(exact, abs=3e-3)
    assert agg["mean-partner-auc"] == pytest.approx(0.5, abs=0.05) and agg["auc"] > 0.7
    assert agg["num-examples"] == 4000


def test_train_aggregate_takes_max_epsilon_not_mean() -> None:
    recs = [RecordDict({"metrics": TrainReply(num_examples=n, train_loss=l, epsilon=e, partner_id=i, dp_enabled=1,
                                              local_steps=1, train_seconds=0.0).record()})
            for i, (n, l, e) in enumerate(((100, 0.5, 1.0), (300, 0.3, 2.5)))]
    agg = aggregate_train_metrics(recs)
    assert agg["max-epsilon"] == 2.5 and agg["train-loss"] == pytest.approx(0.35)


def test_a_partner_with_one_class_held_out_sends_the_same_keys() -> None:
    """Flower aggregates only records with identical keys: a small partner whose held-out
    rows are all non-churners sends NaN ranking metrics, which aggregation leaves out."""
    rng = np.random.default_rng(2)
    y_big, p_big = rng.random(500) < 0.3, rng.random(500)
    y_small, p_small = np.zeros(12, dtype=bool), rng.random(12)
    records = [_eval_record(y_big, p_big, 1), _eval_record(y_small, p_small, 2)]
    keys = [set(next(iter(r.metric_records.values())).keys()) for r in records]
    assert keys[0] == keys[1]
    assert np.isnan(binary_metrics(y_small, p_small).auc)
    out = aggregate_evaluate_metrics(records)
    assert out["mean-partner-auc"] == pytest.approx(roc_auc_score(y_big, p_big))  # the defined one only
    assert np.isfinite(out["auc"]) and out["num-examples"] == 512
    assert all(np.isnan(v) for v in binary_metrics(np.array([]), np.array([])).model_dump().values())


def test_a_superlink_error_reply_is_charged_to_the_partner_it_answers_for() -> None:
    """When a SuperNode stops heartbeating, the SuperLink answers its messages itself
    ("node unavailable", source = the SuperLink). The failure belongs to the partner the
    message was sent to, not to the SuperLink, and that partner is not also "silent"."""
    from flwr.app import Error, Message, Metadata
    from flwr.common.constant import SUPERLINK_NODE_ID

    from fedcrm.coordinator.strategy import reply_senders

    def metadata(message_id: str, src: int, dst: int, reply_to: str = "") -> Metadata:
        return Metadata(run_id=7, message_id=message_id, src_node_id=src, dst_node_id=dst,
                        reply_to_message_id=reply_to, group_id="1", created_at=0.0, ttl=60.0,
                        message_type="evaluate")

    sent = [Message(RecordDict(), metadata=metadata(f"m{node}", SUPERLINK_NODE_ID, node)) for node in (11, 22)]
    answered = Message(RecordDict(), metadata=metadata("r11", 11, SUPERLINK_NODE_ID, reply_to="m11"))
    # the SuperLink's own "node unavailable" reply, as linkstate/utils.py builds it
    unavailable = Message(error=Error(code=5, reason="Node Unavailable"),
                          metadata=metadata("r22", SUPERLINK_NODE_ID, SUPERLINK_NODE_ID, reply_to="m22"))
    assert reply_senders(sent, [unavailable, answered]) == [22, 11]
