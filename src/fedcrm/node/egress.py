"""What may leave a partner node, checked on the node before every reply.

The policy is an allow-list, not a deny-list: a train reply carries exactly the arrays it
received (same names, shapes, float dtype) and numeric metrics with the keys its protocol
record declares (`fedcrm.protocol`); an evaluate or query reply carries numeric metrics
only. Anything else (a string, a config record, an extra array, a metric key nobody
declared, a list of the wrong length) is refused on the node, so a bug upstream cannot
turn into a leak. Each reply's inventory (keys, shapes, types; never values) is appended
to the node's egress log for compliance.

Error replies pass the guard too: only their code and a redacted reason leave
(`fedcrm.node.redact`: no absolute paths, no file contents, bounded length), and an
exception the ClientApp did not turn into an error reply becomes one here instead of
reaching Flower with its full text. The full text goes to the node's error log
(`work/node-errors.jsonl`, 0600), never off the node.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode

from fedcrm.data.layout import MAX_LEVEL_CHARS, MAX_LEVELS, FeatureLayout, standard_layout
from fedcrm.ml.evaluation import HIST_BINS
from fedcrm.ml.sketch import CELLS as SKETCH_CELLS
from fedcrm.node.redact import redact_reason
from fedcrm.node.runtime import node_for_context
from fedcrm.privatefiles import private_append_line, private_dir
from fedcrm.protocol import (ARRAYS, BASELINE_MESSAGE, ERROR_EGRESS, METRICS, VOCABULARY, RoundConfig, TaskKind,
                             allowed_metrics, list_keys)



def list_lengths(layout: FeatureLayout | None = None, joint_cells: int | None = None) -> dict[str, int]:
    """The exact length of every list a reply may carry, by protocol field: histograms of
    `HIST_BINS`, feature sums of the node's own layout (numeric columns, then the columns
    it has before the federation's vocabulary is in), a value or time-to-churn task's joint
    histogram of `joint_cells`. `stat_vocab` has as many counts as the `vocabulary` record
    names values (-1 here: checked against that record)."""
    layout = (layout or standard_layout()).fixed_part()
    k, width = layout.n_numeric, layout.width
    return {"score_hist_pos": HIST_BINS, "score_hist_neg": HIST_BINS, "stat_sum": k, "stat_sumsq": k,
            "stat_onehot": width - k, "stat_vocab": -1, "stat_sketch": k * SKETCH_CELLS,
            "value_hist": joint_cells or 0, "survival_hist": joint_cells or 0}


def learned_features(layout: FeatureLayout | None) -> frozenset[str]:
    return frozenset(b.name for b in (layout.unresolved() if layout else []))

KINDS = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate", MessageType.QUERY: "query",
         BASELINE_MESSAGE: "baseline"}


class EgressViolation(Exception):
    """A reply would carry something other than model arrays and aggregate metrics."""


def check_reply(kind: str, content: RecordDict, sent: ArrayRecord | None,
                lengths: dict[str, int] | None = None, learned: frozenset[str] = frozenset(),
                task: TaskKind = "binary") -> dict[str, object]:
    """Validate a reply against the allow-list of a run whose task is of kind `task`;
    return its value-free inventory. `learned`: the node's learned categories, the only
    features a query reply may name values of."""
    inventory: dict[str, object] = {}
    lengths = dict(lengths or list_lengths())
    named = 0
    if kind == "query" and isinstance(content.get(VOCABULARY), ConfigRecord):
        named = _check_vocabulary(content[VOCABULARY], learned)
        inventory[VOCABULARY] = {"values": named}
    lengths["stat_vocab"] = named
    for name, record in content.items():
        if name == VOCABULARY and name in inventory:
            continue
        if isinstance(record, ArrayRecord):
            if kind != "train" or name != ARRAYS:
                raise EgressViolation(f"{kind} reply may not carry array record {name!r}")
            inventory[name] = _check_arrays(record, sent)
        elif isinstance(record, MetricRecord):
            if name != METRICS:
                raise EgressViolation(f"unexpected metric record {name!r}")
            inventory[name] = _check_metrics(record, kind, lengths, task)
        else:
            raise EgressViolation(f"{kind} reply may not carry {type(record).__name__} {name!r}")
    if METRICS not in inventory:
        raise EgressViolation(f"{kind} reply without metrics")
    if kind == "train" and ARRAYS not in inventory:
        raise EgressViolation("train reply without model arrays")
    return inventory


def _check_vocabulary(record: ConfigRecord, learned: frozenset[str]) -> int:
    """Spellings of values of the node's learned categories only: a bounded list of short
    strings per feature. Returns how many values it names."""
    named = 0
    for feature, values in record.items():
        if feature not in learned:
            raise EgressViolation(f"vocabulary names values of {feature!r}, not a learned category of this node")
        if not isinstance(values, list) or len(values) > MAX_LEVELS or any(
                not isinstance(v, str) or len(v) > MAX_LEVEL_CHARS for v in values):
            raise EgressViolation(f"vocabulary of {feature!r}: at most {MAX_LEVELS} spellings of at most "
                                  f"{MAX_LEVEL_CHARS} characters")
        named += len(values)
    return named


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


def _check_metrics(record: MetricRecord, kind: str, lengths: dict[str, int], task: TaskKind = "binary"
                   ) -> dict[str, str]:
    allowed, lists = allowed_metrics(kind, task), list_keys(kind, task)
    kinds: dict[str, str] = {}
    for key, value in record.items():
        if key not in allowed:
            raise EgressViolation(f"metric {key!r} is not on the egress allow-list")
        if isinstance(value, list):
            if key not in lists or len(value) != lengths[lists[key]]:
                raise EgressViolation(f"metric {key!r}: only score histograms ({HIST_BINS} bins), a value or "
                                      "time-to-churn task's joint histogram and feature sums (one per column) may "
                                      "be lists")
            kinds[key] = f"list[{len(value)}]"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            kinds[key] = type(value).__name__
        else:
            raise EgressViolation(f"metric {key!r} has non-numeric type {type(value).__name__}")
    return kinds


ERROR_LOG = "node-errors.jsonl"  # in the partner's work dir, beside the egress log
_log = logging.getLogger(__name__)


def log_egress(path: Path, entry: dict[str, object]) -> None:
    """Append one JSON line to a node log (0600 in the 0700 work dir)."""
    private_dir(path.parent)
    private_append_line(path, json.dumps({"time": time.time(), **entry}, sort_keys=True))


def egress_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: refuse any reply that carries more than the model and aggregate metrics,
    and let an error leave only as its code and a redacted reason."""
    try:
        reply = call_next(msg, context)
    except Exception as exc:  # noqa: BLE001 - Flower would send str(exc) unredacted
        detail = "".join(traceback.format_exception(exc)).rstrip()
        error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}")
        return redacted_error(msg, error, context, detail)
    if reply.has_error():
        return redacted_error(msg, reply.error, context)
    node = node_for_context(context)
    scale = node.scale
    return checked_reply(msg, reply, node.egress_log,
                         list_lengths(node.layout, scale.bins * scale.outcomes if scale else None),
                         learned_features(node.layout), task=node.task.kind)


def _node_paths(context: Context) -> tuple[Path | None, list[Path]]:
    """The node's work dir and the paths its reasons must not name (best effort: the
    error may be that the node cannot be built at all)."""
    try:
        cfg = node_for_context(context).cfg
    except Exception:  # noqa: BLE001 - e.g. the partner config itself is missing
        return None, [Path(str(v)) for v in context.node_config.values() if isinstance(v, str) and "/" in v]
    tables = [t.path for t in (cfg.customers, cfg.transactions, cfg.interactions) if t is not None]
    return cfg.work_dir, [*tables, cfg.secret_file, cfg.work_dir, cfg.privacy_dir, *{t.parent for t in tables}]


def redacted_error(msg: Message, error: Error, context: Context, detail: str | None = None) -> Message:
    """The error reply that may leave the node: same code, redacted reason. The full text
    (and a traceback, if any) goes to the node's error log."""
    work_dir, paths = _node_paths(context)
    reason = redact_reason(error.reason or "", paths)
    entry: dict[str, object] = {"kind": KINDS.get(msg.metadata.message_type, msg.metadata.message_type),
                                "flower_run_id": str(msg.metadata.run_id), "code": error.code,
                                "reason": error.reason, "sent_reason": reason}
    try:
        entry["run_id"], entry["server_round"] = RoundConfig.of(msg.content).job_round(msg.metadata.run_id)
    except Exception:  # noqa: BLE001 - a malformed message is itself a reason to refuse
        pass
    if detail:
        entry["traceback"] = detail
    try:
        if work_dir is None:
            raise OSError("no work dir")
        log_egress(work_dir / ERROR_LOG, entry)
    except Exception:  # noqa: BLE001 - the reply must still go out; the operator's log gets it
        _log.error("fedcrm node error (not sent): %s", json.dumps(entry, default=str))
    return Message(Error(code=error.code, reason=reason), reply_to=msg)


def checked_reply(msg: Message, reply: Message, log: Path, lengths: dict[str, int] | None = None,
                  learned: frozenset[str] = frozenset(), task: TaskKind = "binary") -> Message:
    """`reply` to `msg` if it passes the allow-list, else an error reply; logged either way."""
    kind = KINDS.get(msg.metadata.message_type, "evaluate")
    sent = msg.content.array_records.get(ARRAYS) if kind == "train" else None
    job_id, job_round = RoundConfig.of(msg.content).job_round(msg.metadata.run_id)
    entry = {"run_id": job_id, "flower_run_id": str(msg.metadata.run_id), "kind": kind, "server_round": job_round}
    try:
        inventory = check_reply(kind, reply.content, sent, lengths, learned, task)
    except EgressViolation as exc:
        log_egress(log, {**entry, "refused": str(exc)})
        return Message(Error(code=ERROR_EGRESS, reason=f"egress refused on node: {exc}"), reply_to=msg)
    log_egress(log, {**entry, "sent": inventory})
    return reply
