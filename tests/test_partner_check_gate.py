"""`partner check` as a gate (issue 13): a mapping of only an id and a label used to pass
the check and "complete" a run at AUC 0.500; now it lists the model features each mapping
feeds and gates on the thresholds, exiting 1 under --strict or a contract."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import tomli_w

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.data.quality import check_partner
from tests.test_reports import Cells, render

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"


def fedcrm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def id_and_label_only(config: Path, with_contract: bool = False) -> Path:
    """The partner's own config, its mapping cut down to the id and the label; the export
    is read where it is. (The insurance export of issue 13 came in like this.)"""
    raw = tomllib.loads(config.read_text())
    raw["customers"]["columns"] = {k: v for k, v in raw["customers"]["columns"].items() if k in ("customer_id", "churned")}
    raw["customers"]["path"] = str(config.parent / raw["customers"]["path"])
    raw.pop("transactions", None)
    raw.pop("interactions", None)
    out = config.parent / "partner-thin.toml"
    if with_contract:
        shutil.copyfile(CONTRACTS / "telecom.toml", config.parent / "contract.toml")
        raw = {"contract": "contract.toml", **raw}
    out.write_text(tomli_w.dumps(raw))
    return out


def test_a_mapping_that_feeds_no_feature_is_a_finding(fresh_demo: Path) -> None:
    config = FederationConfig.load(fresh_demo).members[0].config
    full = check_partner(PartnerConfig.load(config), "churn")
    assert full.features_mapped >= 10 and not any("model features are fed" in f for f in full.findings)
    fed = {f.feature for f in full.features if f.mapped}
    assert {"tenure_months", "monthly_spend", "contract", "recency_days"} <= fed  # signup date, purchases too

    thin = id_and_label_only(config)
    report = check_partner(PartnerConfig.load(thin), "churn")
    assert report.features_mapped == 0
    assert report.findings[0].startswith("0 model features are fed by this mapping")

    relaxed = fedcrm("partner", "check", "--config", str(thin), "--task", "churn")
    assert relaxed.returncode == 0 and "finding: 0 model features" in relaxed.stdout  # a warning
    strict = fedcrm("partner", "check", "--config", str(thin), "--task", "churn", "--strict")
    assert strict.returncode == 1 and "finding: 0 model features" in strict.stdout
    contract = fedcrm("partner", "check", "--config", str(id_and_label_only(config, with_contract=True)),
                      "--task", "churn")
    assert contract.returncode == 1 and "contract 'telecom'" in contract.stdout  # its thresholds gate


def test_check_writes_the_quarantine_and_a_page_without_a_run(fresh_demo: Path, tmp_path: Path) -> None:
    config = FederationConfig.load(fresh_demo).members[1].config
    quarantine, page = tmp_path / "quarantine.csv", tmp_path / "quality.html"
    proc = fedcrm("partner", "check", "--config", str(config), "--task", "churn", "--quarantine", str(quarantine),
                  "--html", str(page))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = check_partner(PartnerConfig.load(config), "churn")
    rows = pd.read_csv(quarantine, dtype=str)
    assert len(rows) == report.cleaning.rows_quarantined > 0
    assert report.cleaning.rows_in == report.cleaning.rows_clean + len(rows)  # rows in = kept + quarantined
    assert rows.columns[:2].tolist() == ["_row", "reason"] and rows["reason"].str.len().gt(0).all()
    for written in (quarantine, page):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600

    dom = render(page.resolve(), "data-quality.png", 1600)
    cells = Cells()
    cells.feed(dom)
    assert cells.by_id["features-fed"] == str(report.features_mapped)
    assert cells.cells[("rows", None, "rows_in")] == str(report.cleaning.rows_in)
    fed = dom.count('data-field="fed" class="ok"')
    assert fed == report.features_mapped
