"""`fedcrm partner init` and `fedcrm partner check`, run as a partner would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from fedcrm.data.anonymity import k_anonymity
from fedcrm.config import FederationConfig
from tests.test_config_and_mapping import write_partner


def fedcrm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120)


def test_init_writes_a_private_key_once_and_keeps_it(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, 'customer_id = "id"\nchurned = "left"', "id,left\n1,yes\n")
    (tmp_path / "secret.key").unlink()
    first = fedcrm("partner", "init", "--config", str(cfg))
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "work").is_dir()
    key = (tmp_path / "secret.key").read_text()
    again = fedcrm("partner", "init", "--config", str(cfg))  # re-running setup is a no-op
    assert again.returncode == 0 and "exists and is sound: kept" in again.stdout, again.stdout + again.stderr
    assert (tmp_path / "secret.key").read_text() == key  # never silently re-keyed
    (tmp_path / "secret.key").chmod(0o644)  # a key others can read is refused, not kept
    loose = fedcrm("partner", "init", "--config", str(cfg))
    assert loose.returncode == 2 and "secret.key" in loose.stdout, loose.stdout + loose.stderr
    assert (tmp_path / "secret.key").read_text() == key


def test_check_reports_quality_and_k_anonymity(demo_federation: Path, tmp_path: Path) -> None:
    cfg = FederationConfig.load(demo_federation).members[2].config
    out = tmp_path / "report.json"
    proc = fedcrm("partner", "check", "--config", str(cfg), "--task", "churn", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rows quarantined" in proc.stdout and "k-anonymity" in proc.stdout
    report = json.loads(out.read_text())
    c = report["cleaning"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] == 1530
    assert report["k_anonymity"]["quasi_identifiers"] == ["age_band", "signup_month"]
    assert report["k_anonymity"]["k"] >= 1 and 0 < report["label_rate"] < 1


def test_check_fails_clearly_on_a_bad_mapping(tmp_path: Path) -> None:
    cfg = write_partner(tmp_path, 'customer_id = "id"\nmonthly_spend = "Spend"', "id,spend\n1,10\n")
    proc = fedcrm("partner", "check", "--config", str(cfg))
    assert proc.returncode == 2
    text = " ".join(proc.stdout.split())
    assert "acme" in text and "data.csv" in text and "'Spend'" in text


def test_k_anonymity_is_the_smallest_group() -> None:
    qi = pd.DataFrame({"gender": ["f", "f", "f", "m", "m"], "age_band": ["18-27"] * 4 + ["28-37"]})
    rep = k_anonymity(qi, k_threshold=2)
    assert (rep.k, rep.groups, rep.rows_below_threshold) == (1, 3, 2)


def test_coarser_generalisation_raises_k(fresh_demo: Path) -> None:
    from fedcrm.config import PartnerConfig
    from fedcrm.data.quality import check_partner

    path = FederationConfig.load(fresh_demo).members[2].config
    fine = check_partner(PartnerConfig.load(path)).k_anonymity
    path.write_text(path.read_text() + '\n[generalisation]\nage_band_years = 20\ndate_granularity = "year"\nk_threshold = 10\n')
    coarse = check_partner(PartnerConfig.load(path)).k_anonymity
    assert coarse.quasi_identifiers == ["age_band", "signup_year"] and coarse.k_threshold == 10
    assert coarse.k >= fine.k and coarse.groups < fine.groups / 10  # a few very old customers stay rare
    assert coarse.rows_below_threshold < fine.rows_below_threshold


def test_a_field_the_mapping_cannot_read_fails_the_check(demo_federation: Path, tmp_path: Path) -> None:
    """A date column in another format than the mapping's reads as 0 %: that is a wrong
    mapping, not a data-quality note, so the check fails (exit 1) and names the field."""
    import pandas as pd

    from fedcrm.config import PartnerConfig
    from fedcrm.sandbox.demo_data import generate

    fed = generate(tmp_path / "consortium")
    cfg = PartnerConfig.load(FederationConfig.load(fed).members[0].config)
    frame = pd.read_csv(cfg.customers.path, dtype=str, keep_default_na=False)
    column = cfg.customers.columns["record_date"]
    frame[column] = pd.to_datetime(frame[column]).dt.strftime("%d.%m.%Y")
    frame.to_csv(cfg.customers.path, index=False)
    proc = fedcrm("partner", "check", "--config", str(cfg.source), "--json", str(tmp_path / "q.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["errors"] and "'record_date'" in report["errors"][0] and "100%" in report["errors"][0]
    assert "finding: field 'record_date'" in proc.stdout
    # without a task the labels are not checked, and the report says so instead of 'filled'
    assert "a label: not checked" in proc.stdout
