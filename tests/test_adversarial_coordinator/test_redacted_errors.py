"""Attack 10: an error reply leaves the node as a code and a redacted reason.

Through the real ClientApp object in process (mods applied, no Flower engine): a mapping
that names a missing column (on a file whose header line is missing, so the "columns" are a
customer's raw row) and a file path that does not exist. The coordinator may learn the
partner, file name and column; never an absolute path or a value from the file. The node's
own error log keeps the full text, readable by its owner only.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.data.layout import standard_layout
from fedcrm.ml.models import build_model

MAX_REASON = 400  # fedcrm.node.redact.MAX_REASON: a reason is a line, not a file
RUN_CONFIG = {"task": "churn", "model": "logistic", "num-server-rounds": 2, "dp-target-epsilon": 3.0}


def _ask(partner_config: Path, kind: str) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 78, 6, 1
    arrays = ArrayRecord(build_model("logistic", len(standard_layout().names())).state_dict())
    msg = Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": 1})}),
                  dst_node_id=6, message_type=kind)
    context = Context(run_id=78, node_id=6, node_config={"partner-config": str(partner_config)},
                      state=RecordDict(), run_config=RUN_CONFIG)
    return client_app(msg, context)


def _east_mobile(fresh_demo: Path) -> tuple[Path, PartnerConfig]:
    member = next(m for m in FederationConfig.load(fresh_demo).members if m.name == "east-mobile")
    return member.config, PartnerConfig.load(member.config)


def _assert_clean(reason: str, cfg: PartnerConfig, raw_values: list[str]) -> None:
    forbidden = ["/work", "/tmp", str(cfg.work_dir), str(cfg.work_dir.resolve()), str(cfg.customers.path),
                 str(cfg.customers.path.parent), str(Path.home())]
    assert not [f for f in forbidden if f in reason], reason
    assert "/" not in reason.replace("n/a", ""), reason  # no path of any kind
    leaked = [v for v in raw_values if len(v) >= 3 and v in reason]
    assert not leaked, f"raw values {leaked[:3]} in {reason!r}"
    assert len(reason) <= MAX_REASON


def _error_log(cfg: PartnerConfig) -> list[dict]:
    log = cfg.work_dir / "node-errors.jsonl"
    assert log.is_file(), "the node kept no record of the error"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("kind", [MessageType.TRAIN, MessageType.QUERY])
def test_missing_column_reason_names_no_path_and_no_value(fresh_demo: Path, kind: str) -> None:
    config, cfg = _east_mobile(fresh_demo)
    lines = cfg.customers.path.read_text().splitlines()
    first_row = lines[1].split(";")  # a real customer: id, name, phone, ...
    headerless = cfg.customers.path.with_name("export_noheader.csv")
    headerless.write_text("\n".join(lines[1:]) + "\n")  # the export lost its header: row 1 is read as one
    text = config.read_text().replace('path = "export.csv"', f'path = "{headerless}"')  # absolute, as deployed
    config.write_text(text.replace('monthly_spend = "monthly_fee_cents"', 'monthly_spend = "fee"'))
    cfg = PartnerConfig.load(config)

    reply = _ask(config, kind)
    assert reply.has_error()
    reason = reply.error.reason
    _assert_clean(reason, cfg, first_row)
    assert "east-mobile" in reason and "export_noheader.csv" in reason  # enough to act on
    entries = _error_log(cfg)
    full = entries[-1]["reason"]
    assert str(headerless) in full and first_row[1] in full  # the partner's own log has everything
    assert entries[-1]["sent_reason"] == reason


def test_wrong_file_path_reason_names_no_path(fresh_demo: Path) -> None:
    config, cfg = _east_mobile(fresh_demo)
    raw_row = cfg.customers.path.read_text().splitlines()[1].split(";")
    missing = cfg.customers.path.with_name("export_2026.csv")
    config.write_text(config.read_text().replace('path = "export.csv"', f'path = "{missing}"'))
    cfg = PartnerConfig.load(config)

    reply = _ask(config, MessageType.TRAIN)  # must be a reply, not an exception with the path in it
    assert reply.has_error()
    _assert_clean(reply.error.reason, cfg, raw_row)
    assert "export_2026.csv" in reply.error.reason
    assert str(missing) in _error_log(cfg)[-1]["reason"]
