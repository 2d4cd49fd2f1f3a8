"""The wire protocol has one owner: every key is declared once, in `fedcrm.protocol`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, RecordDict
from pydantic import ValidationError

from fedcrm import protocol
from fedcrm.protocol import (CONFIG, EvaluateReply, QueryReply, RoundConfig, TrainReply, WireModel, allowed_metrics,
                             list_keys)

ROOT = Path(__file__).resolve().parents[1]
MODELS = [m for m in vars(protocol).values() if isinstance(m, type) and issubclass(m, WireModel) and m is not WireModel]


def wire_keys() -> set[str]:
    return {k for m in MODELS for k in m.keys()}


def test_no_module_spells_a_wire_key() -> None:
    """A dash-spelled key as a string literal anywhere in the package or the Flower apps
    is a second owner of the protocol."""
    dashed = {k for k in wire_keys() if "-" in k}
    assert len(dashed) > 30  # the check below would pass vacuously without the models
    sources = [*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.html"), *(ROOT / "clients").rglob("*.py"),
               *(ROOT / "server").rglob("*.py")]
    # a key as a string ("epsilon-cap") or assigned inside one (f'partner-config="{path}"')
    found = [f"{f.relative_to(ROOT)}: {k}" for f in sources if f.name != "protocol.py" for k in dashed
             if re.search(r"[\"'][^\"'\n]*?(?<![\w-])" + re.escape(k) + r"[\"'=]", f.read_text())]
    assert not found, found


def test_allow_lists_are_the_reply_models() -> None:
    assert allowed_metrics("train") == TrainReply.keys() and "epsilon-cap" in allowed_metrics("train")
    assert allowed_metrics("evaluate") == EvaluateReply.keys() and "score-hist-pos" in allowed_metrics("evaluate")
    assert set(list_keys("query")) == {"stat-sum", "stat-sumsq", "stat-onehot", "stat-vocab", "stat-sketch"}
    assert set(list_keys("train")) == set()


def test_replies_round_trip_and_refuse_unknown_keys() -> None:
    reply = EvaluateReply(partner_id=3, num_examples=10, num_positives=4, score_hist_pos=[1, 2], score_hist_neg=[3, 4],
                          eval_seconds=0.1, auc=0.7)
    record = reply.record()
    assert record["partner-id"] == 3 and math.isnan(record["pr-auc"])  # every key sent, NaN where undefined
    assert EvaluateReply.from_dict(record).auc == 0.7
    with pytest.raises(ValidationError):
        TrainReply.from_dict({**TrainReply(partner_id=1, num_examples=1, dp_enabled=0, train_loss=0.1, local_steps=1,
                                           train_seconds=0.0).to_dict(), "customer-id": 7})
    query = QueryReply(partner_id=1, num_examples=2, stat_n=2.0, stat_sum=[1.0], stat_sumsq=[1.0], stat_onehot=[0.0])
    assert "epsilon" not in query.record()  # unset optional figures are not sent


def test_round_config_names_the_job_and_its_round() -> None:
    config = RoundConfig(job_id=18446744073709551615, round_offset=2).record()  # a 64-bit Flower run id
    config["server-round"] = 3  # as Flower's strategy sets it
    parsed = RoundConfig.of(RecordDict({CONFIG: config}))
    assert parsed.job_round(99) == ("18446744073709551615", 5)
    assert RoundConfig.of(RecordDict({CONFIG: ConfigRecord({"server-round": 1})})).job_round(77) == ("77", 1)
    assert RoundConfig.of(RecordDict({})).job_round(77) == ("77", 0)


def test_the_readme_lists_exactly_what_leaves_a_node() -> None:
    """The README's 'what leaves a node' is generated from the reply models: a field added to
    a reply and not to the README fails here (`scripts/readme_sync.py` rewrites it)."""
    import subprocess
    import sys
    from pathlib import Path

    from fedcrm.protocol import REPLIES, egress_markdown

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts" / "readme_sync.py"), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = egress_markdown()
    for model in REPLIES.values():
        assert all(f"`{key}`" in text for key in model.keys())
