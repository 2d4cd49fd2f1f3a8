"""The partner pipeline on messy exports: nothing lost, ids pseudonymised, layouts agree."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.errors import ConfigError
from fedcrm.data.layout import standard_layout
from fedcrm.data.prepare import prepare
from fedcrm.data.pseudonymise import pseudonyms
from fedcrm.data.secret import create_secret, load_secret
from tests.test_config_and_mapping import write_partner


def partners(fed: Path) -> list[PartnerConfig]:
    return [PartnerConfig.load(m.config) for m in FederationConfig.load(fed).members]


def test_rows_in_equal_kept_plus_quarantined(demo_federation: Path) -> None:
    for cfg in partners(demo_federation):
        data = prepare(cfg, "churn")
        rep = data.summary.cleaning
        assert rep.rows_in == rep.rows_clean + rep.rows_quarantined
        assert rep.rows_clean == data.summary.n_train + data.summary.n_test
        quarantine = pd.read_parquet(cfg.work_dir / "quarantine.parquet")
        assert len(quarantine) == rep.rows_quarantined
        assert quarantine["reason"].notna().all()
        # the generator planted duplicates, negative and huge spends, future dates, missing labels
        reasons = " | ".join(quarantine["reason"])
        for planted in ("duplicate", "negative monthly_spend", "in the future", "above 20x", "churned missing"):
            assert planted in reasons, (cfg.name, planted)


def test_every_partner_yields_the_same_feature_layout(demo_federation: Path) -> None:
    shapes = {cfg.name: prepare(cfg, "churn").x_train.shape[1] for cfg in partners(demo_federation)}
    assert set(shapes.values()) == {len(standard_layout().names())}
    for cfg in partners(demo_federation):
        data = prepare(cfg, "churn")
        assert 0.1 < data.summary.label_rate_train < 0.7
        assert set(np.unique(data.y_train)) == {0.0, 1.0}


def test_units_and_spellings_are_standardised(demo_federation: Path) -> None:
    """east-mobile bills in cents with 'M2M'/'fibre'; south in thousands with 'MONTHLY'."""
    names = standard_layout().names()
    spend = {cfg.name: prepare(cfg, "churn").x_train[:, names.index("monthly_spend")].mean()
             for cfg in partners(demo_federation)}
    assert max(spend.values()) - min(spend.values()) < 0.6  # same scale after unit conversion
    for cfg in partners(demo_federation):
        x = prepare(cfg, "churn").x_train
        for cat in ("contract", "internet_service"):
            unknown = x[:, names.index(f"{cat}=unknown")].mean()
            assert unknown < 0.01, (cfg.name, cat, unknown)  # 'none', 'fibre', '1Y' all understood


def test_duplicates_keep_the_most_recent_record(tmp_path: Path) -> None:
    csv = ("id,spend,left,updated\n"
           "A,10,yes,2025-01-01\n"
           "A,99,no,2025-06-01\n"
           "B,20,no,2025-02-01\n"
           "A,50,yes,2024-12-01\n")
    cfg = write_partner(tmp_path, 'customer_id = "id"\nmonthly_spend = "spend"\nchurned = "left"\nrecord_date = "updated"', csv)
    data = prepare(PartnerConfig.load(cfg), "churn", test_fraction=0.01)
    rep = data.summary.cleaning
    assert (rep.rows_in, rep.rows_clean, rep.duplicates) == (4, 2, 2)
    q = pd.read_parquet(PartnerConfig.load(cfg).work_dir / "quarantine.parquet")
    assert sorted(q["_row"]) == [1, 4] and set(q["reason"]) == {"duplicate: superseded by row 2"}


def test_secret_must_be_private(tmp_path: Path) -> None:
    key = create_secret(tmp_path / "k")
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert len(load_secret(key)) == 32
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_secret(key)
    with pytest.raises(ConfigError, match="exists"):
        create_secret(key)


def test_pseudonyms_are_keyed() -> None:
    ids = pd.Series(["NT-000001", "NT-000002"])
    a, b = pseudonyms(ids, b"a" * 32), pseudonyms(ids, b"b" * 32)
    assert (a != b).all() and a.str.len().eq(64).all()
    assert (pseudonyms(ids, b"a" * 32) == a).all()


def test_prepared_data_is_cached_on_the_node(fresh_demo: Path) -> None:
    cfg = partners(fresh_demo)[0]
    first = prepare(cfg, "churn")
    cache = list((cfg.work_dir / "prepared").glob("*/summary.json"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = prepare(cfg, "churn")
    assert cache[0].stat().st_mtime_ns == stamp  # served from the cache, not rewritten
    assert np.array_equal(first.x_train, again.x_train)


def test_nothing_identifying_in_what_the_node_prepares(demo_federation: Path) -> None:
    """Raw ids, names and emails stay in the raw layer and the partner's own lookup."""
    cfg = partners(demo_federation)[0]
    data = prepare(cfg, "churn")
    raw = pd.read_csv(cfg.customers.path, dtype=str)
    text = data.summary.model_dump_json()
    for value in [*raw["CustomerID"].head(50), *raw["FullName"].head(50), *raw["Email"].head(50)]:
        assert value not in text
    assert data.x_train.dtype == np.float32
    lookup = pd.read_parquet(cfg.work_dir / "pseudonym_lookup.parquet")
    assert set(lookup.columns) == {"pid", "customer_id"} and lookup["pid"].is_unique


def test_dedupe_by_phone_across_spellings(tmp_path: Path) -> None:
    csv = ("id,phone,spend,left\n"
           "1,+86 138-1234 5678,10,yes\n"
           "2,8613812345678,20,no\n"
           "3,,30,no\n"
           "4,,40,yes\n")
    cfg = write_partner(tmp_path, 'customer_id = "id"\nphone = "phone"\nmonthly_spend = "spend"\nchurned = "left"',
                        csv, extra="")
    text = cfg.read_text() + '\n[cleaning]\ndedupe_by = "phone"\n'
    cfg.write_text(text)
    data = prepare(PartnerConfig.load(cfg), "churn", test_fraction=0.01)
    rep = data.summary.cleaning
    assert (rep.rows_clean, rep.duplicates) == (3, 1)  # rows without a phone are never duplicates
    cfg.write_text(text.replace('phone = "phone"\n', ""))
    with pytest.raises(ConfigError, match="dedupe_by"):
        PartnerConfig.load(cfg)


def test_no_outgoing_file_carries_raw_identifiers(fresh_demo: Path) -> None:
    """Everything meant to leave the node (prepared features, summary, marketing tags)
    is searched byte by byte for every raw id, name, phone and email of the input."""
    for cfg in partners(fresh_demo):
        prepare(cfg, "churn")
        raw = pd.read_parquet(cfg.customers.path) if cfg.customers.file_format == "parquet" else \
            pd.read_csv(cfg.customers.path, dtype=str, sep=cfg.customers.delimiter)
        cols = [cfg.customers.columns[f] for f in ("customer_id", "full_name", "phone", "email")
                if f in cfg.customers.columns]
        needles = {str(v).encode() for c in cols for v in raw[c].dropna().unique() if len(str(v)) >= 5}
        outgoing = [*(cfg.work_dir / "prepared").rglob("*.*")]
        if (cfg.work_dir / "tags.parquet").exists():
            outgoing.append(cfg.work_dir / "tags.parquet")
        assert outgoing
        # A numeric id is looked for as a whole number: "500488" inside the float
        # 0.29922914505004883 is a digit collision, not a leaked id. So it is looked up
        # among the file's maximal runs of digits; any other needle as bytes anywhere.
        numbers = {n for n in needles if n.isdigit()}
        texts = needles - numbers
        for path in outgoing:
            blob = path.read_bytes()
            hits = sorted(numbers & set(re.findall(rb"[0-9]+", blob))) + [n for n in texts if n in blob]
            assert not hits, (cfg.name, path.name, hits[:3])
