"""The demo consortium by `partner map`: drafted against the standard contract (the file in
the package that configs naming no contract map onto), each partner's mapping is the one its
hand-written demo config holds, so the demo's runs (tests/test_federation.py and others)
are runs of map → init → check → run → score configs. What map cannot place (south's own
contract spellings) is left as REVIEW lines, which the demo config fills in."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcrm.cli.partner import app as partner
from fedcrm.contract.model import normalise_token
from fedcrm.sandbox.demo_data import generate

STANDARD = Path(__file__).resolve().parents[1] / "src" / "fedcrm" / "contract" / "standard.toml"


@pytest.mark.parametrize(("member", "export"), [("north-telecom", "customers.csv"), ("east-mobile", "export.csv"),
                                                ("south-broadband", "customers.parquet")])
def test_partner_map_drafts_the_demo_configs(tmp_path: Path, member: str, export: str) -> None:
    demo = generate(tmp_path / "c").parent
    hand = tomllib.loads((demo / member / "partner.toml").read_text())
    out = tmp_path / f"{member}.toml"
    events = ["--events", str(demo / member / hand["transactions"]["path"])] if "transactions" in hand else []
    res = CliRunner().invoke(partner, ["map", "--contract", str(STANDARD), "--data", str(demo / member / export),
                                       "--name", member, "--partner-id", "1", "--out", str(out), *events])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    drafted = tomllib.loads(text)
    assert drafted["customers"]["columns"] == hand["customers"]["columns"]
    if events:  # north's top-ups export, a second file, onto the contract's purchases table
        assert Path(drafted["transactions"]["path"]).name == hand["transactions"]["path"]
        assert drafted["transactions"]["columns"] == hand["transactions"]["columns"]
    review = {normalise_token(m) for m in re.findall(r'^# "(.*)" = "\?"', text, flags=re.M)}  # left to the partner
    frame = (pd.read_parquet(demo / member / export) if export.endswith(".parquet")
             else pd.read_csv(demo / member / export, dtype=str, sep=hand["customers"].get("delimiter", ",")))
    for field, values in hand["customers"].get("values", {}).items():
        mapped = {normalise_token(k): v for k, v in drafted["customers"].get("values", {}).get(field, {}).items()}
        seen = {normalise_token(str(v)) for v in frame[hand["customers"]["columns"][field]].dropna().unique()}
        for raw, canonical in values.items():  # guessed the same, or left for the partner's review
            if normalise_token(raw) not in seen:
                continue  # the hand config also covers spellings this export does not hold
            assert mapped.get(normalise_token(raw)) == canonical or normalise_token(raw) in review, (field, raw)
    init = CliRunner().invoke(partner, ["init", "--config", str(out)])
    assert init.exit_code == 0, init.output
