"""Only model arrays and aggregate metrics leave a node: the real ClientApp, in process."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.node.egress import EgressViolation, check_reply
from fedcrm.ml.evaluation import HIST_BINS
from fedcrm.data.layout import standard_layout
from fedcrm.ml.models import build_model
from fedcrm.protocol import ERROR_EGRESS

RUN_CONFIG = {"task": "churn", "model": "logistic", "num-server-rounds": 2, "dp-target-epsilon": 3.0}


def _message(kind: str, arrays: ArrayRecord) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 77, 5, 1
    return Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                   dst_node_id=5, message_type=kind)


def _context(partner_config: Path) -> Context:
    return Context(run_id=77, node_id=5, node_config={"partner-config": str(partner_config)},
                   state=RecordDict(), run_config=RUN_CONFIG)


def test_client_replies_carry_no_identifier(fresh_demo: Path) -> None:
    member = FederationConfig.load(fresh_demo).members[0]
    cfg = PartnerConfig.load(member.config)
    arrays = ArrayRecord(build_model("logistic", len(standard_layout().names())).state_dict())
    replies = {kind: client_app(_message(kind, arrays), _context(member.config))
               for kind in (MessageType.TRAIN, MessageType.EVALUATE)}

    raw = pd.read_csv(cfg.customers.path, dtype=str)
    lookup = pd.read_parquet(cfg.work_dir / "pseudonym_lookup.parquet")
    secrets = [*raw["CustomerID"], *raw["FullName"], *raw["Email"], *lookup["pid"],
               cfg.secret_file.read_text().strip()]
    for kind, reply in replies.items():
        assert not reply.has_error(), reply.error
        content = reply.content
        assert set(content.keys()) == ({"arrays", "metrics"} if kind == MessageType.TRAIN else {"metrics"})
        assert not content.config_records
        for value in content["metrics"].values():
            assert isinstance(value, (int, float)) or (isinstance(value, list) and len(value) == HIST_BINS)
        if kind == MessageType.TRAIN:
            shapes = {k: tuple(a.shape) for k, a in content["arrays"].items()}
            assert shapes == {k: tuple(a.shape) for k, a in arrays.items()}
        wire = recorddict_to_proto(content).SerializeToString()
        leaked = [s for s in secrets if s and s.encode() in wire]
        assert not leaked, f"{kind} reply carries {leaked[:3]}"
    log = (cfg.work_dir / "egress.jsonl").read_text().splitlines()
    assert len(log) == 2 and all('"sent"' in line for line in log)


def test_guard_refuses_anything_else() -> None:
    arrays = ArrayRecord(build_model("logistic", len(standard_layout().names())).state_dict())
    ok = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10, "epsilon": 1.0})})
    check_reply("train", ok, arrays)
    bad_cases = [
        RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10, "customer": 123456})}),
        RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 10}), "config": ConfigRecord({"id": "NT-1"})}),
        RecordDict({"arrays": ArrayRecord(build_model("mlp", len(standard_layout().names())).state_dict()),
                    "metrics": MetricRecord({"num-examples": 10})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 10, "score-hist-pos": [1, 2, 3]})}),
    ]
    for content in bad_cases:
        with pytest.raises(EgressViolation):
            check_reply("train", content, arrays)
    with pytest.raises(EgressViolation, match="array"):
        check_reply("evaluate", ok, None)
    # a gbdt run's grid counts: exactly CELLS per numeric column of the node's layout, no more
    from fedcrm.ml.sketch import CELLS

    k = standard_layout().n_numeric
    for cells, fine in ((k * CELLS, True), (k * CELLS + 1, False)):
        sketch = RecordDict({"metrics": MetricRecord({"num-examples": 10, "stat-sketch": [0.0] * cells})})
        if fine:
            check_reply("query", sketch, None)
        else:
            with pytest.raises(EgressViolation, match="stat-sketch"):
                check_reply("query", sketch, None)


def test_a_violating_reply_becomes_an_error_on_the_node(fresh_demo: Path) -> None:
    """Wire the real guard around a handler that tries to smuggle a config record out."""
    from clients.client_app import egress_guard

    member = FederationConfig.load(fresh_demo).members[0]
    arrays = ArrayRecord(build_model("logistic", len(standard_layout().names())).state_dict())
    msg = _message(MessageType.EVALUATE, arrays)

    def leaky(m: Message, ctx: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1}),
                                   "rows": ConfigRecord({"customer_id": "NT-000001"})}), reply_to=m)

    reply = egress_guard(msg, _context(member.config), leaky)
    assert reply.has_error() and reply.error.code == ERROR_EGRESS
    log = (PartnerConfig.load(member.config).work_dir / "egress.jsonl").read_text()
    assert "refused" in log and "NT-000001" not in log
