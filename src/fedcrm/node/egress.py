"""What may leave a partner node, checked on the node before every reply.

The policy is an allow-list, not a deny-list: a train reply carries exactly the arrays it
received (same names, shapes, float dtype) and numeric metrics with known keys; an
evaluate reply carries numeric metrics only. Anything else — a string, a config record,
an extra array, a metric key nobody declared — is refused on the node, so a bug upstream
cannot turn into a leak. Each reply's inventory (keys, shapes, types; never values) is
appended to the node's egress log for compliance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedcrm.ml.evaluation import HIST_BINS
from fedcrm.data.features import NUMERIC, feature_names

TRAIN_METRICS = frozenset({
    "num-examples", "unit-weight", "partner-id", "train-loss", "local-steps", "dp-enabled",
    "epsilon", "epsilon-prv", "epsilon-rdp", "epsilon-run", "epsilon-cap", "epsilon-remaining",
    "delta", "noise-multiplier", "sample-rate", "max-grad-norm",
    "ledger-entries", "ledger-ok", "ledger-head", "train-seconds",
})
EVAL_METRICS = frozenset({
    "num-examples", "unit-weight", "partner-id", "num-positives", "auc", "log-loss", "accuracy", "eval-seconds",
    "pr-auc", "brier", "ece", "lift-top-decile", "capture-top-decile",
    "score-hist-pos", "score-hist-neg",
})
QUERY_METRICS = frozenset({
    "partner-id", "num-examples", "stat-n", "stat-sum", "stat-sumsq", "stat-onehot",
    "epsilon", "delta", "ledger-entries", "ledger-ok", "ledger-head",
})
# the only lists that may leave, with their exact lengths
LIST_LENGTHS = {"score-hist-pos": HIST_BINS, "score-hist-neg": HIST_BINS,
                "stat-sum": len(NUMERIC), "stat-sumsq": len(NUMERIC),
                "stat-onehot": len(feature_names()) - len(NUMERIC)}


class EgressViolation(Exception):
    """A reply would carry something other than model arrays and aggregate metrics."""


def check_reply(kind: str, content: RecordDict, sent: ArrayRecord | None) -> dict[str, object]:
    """Validate a reply against the allow-list; return its value-free inventory."""
    allowed_metrics = {"train": TRAIN_METRICS, "query": QUERY_METRICS}.get(kind, EVAL_METRICS)
    inventory: dict[str, object] = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            if kind != "train" or name != "arrays":
                raise EgressViolation(f"{kind} reply may not carry array record {name!r}")
            inventory[name] = _check_arrays(record, sent)
        elif isinstance(record, MetricRecord):
            if name != "metrics":
                raise EgressViolation(f"unexpected metric record {name!r}")
            inventory[name] = _check_metrics(record, allowed_metrics)
        else:
            raise EgressViolation(f"{kind} reply may not carry {type(record).__name__} {name!r}")
    if "metrics" not in inventory:
        raise EgressViolation(f"{kind} reply without metrics")
    if kind == "train" and "arrays" not in inventory:
        raise EgressViolation("train reply without model arrays")
    return inventory


def _check_arrays(record: ArrayRecord, sent: ArrayRecord | None) -> dict[str, list[int]]:
    shapes = {k: list(a.shape) for k, a in record.items()}
    for k, a in record.items():
        if not a.dtype.startswith("float"):
            raise EgressViolation(f"array {k!r} has dtype {a.dtype}; only float model weights may leave")
    if sent is not None:
        expected = {k: list(a.shape) for k, a in sent.items()}
        if shapes != expected:
            raise EgressViolation(f"reply arrays {shapes} differ from the global model {expected}")
    return shapes


def _check_metrics(record: MetricRecord, allowed: frozenset[str]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for key, value in record.items():
        if key not in allowed:
            raise EgressViolation(f"metric {key!r} is not on the egress allow-list")
        if isinstance(value, list):
            if len(value) != LIST_LENGTHS.get(key, -1):
                raise EgressViolation(f"metric {key!r}: only score histograms ({HIST_BINS} bins) and feature "
                                      "sums (one per column) may be lists")
            kinds[key] = f"list[{len(value)}]"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            kinds[key] = type(value).__name__
        else:
            raise EgressViolation(f"metric {key!r} has non-numeric type {type(value).__name__}")
    return kinds


def received_inventory(content: RecordDict) -> dict[str, dict[str, object]]:
    """The coordinator's side of the same inventory: what actually arrived, without values."""
    out: dict[str, dict[str, object]] = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = {k: f"{a.dtype}{list(a.shape)}" for k, a in record.items()}
        elif isinstance(record, MetricRecord):
            out[name] = {k: f"list[{len(v)}]" if isinstance(v, list) else type(v).__name__ for k, v in record.items()}
        else:
            out[name] = {"<record>": type(record).__name__}
    return out


def log_egress(path: Path, entry: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps({"time": time.time(), **entry}, sort_keys=True) + "\n")
