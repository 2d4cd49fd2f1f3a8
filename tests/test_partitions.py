"""How the utility benchmark cuts a public dataset into partners, and maps it onto the schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.data.layout import standard_layout
from fedcrm.data.prepare import prepare
from fedcrm.sandbox.public_data import BANK, BANK_CSV, BANK_MAPPING, TELCO, TELCO_CSV, assign_partners, split_public


def test_iid_and_label_skew_partitions() -> None:
    labels = pd.Series(np.where(np.random.default_rng(0).random(7000) < 0.27, "Yes", "No"))
    iid = assign_partners(labels, 5, "iid", seed=1)
    rates = [labels[iid == p].eq("Yes").mean() for p in range(5)]
    assert max(rates) - min(rates) < 0.05 and np.bincount(iid).min() > 1200
    skew = assign_partners(labels, 5, "label-skew", seed=1)
    rates = [labels[skew == p].eq("Yes").mean() for p in range(5)]
    assert max(rates) - min(rates) > 0.2 and np.bincount(skew, minlength=5).min() >= 300
    assert (assign_partners(labels, 5, "label-skew", seed=1) == skew).all()  # same seed, same split
    with pytest.raises(ValueError, match="unknown split"):
        assign_partners(labels, 5, "by-moon-phase", seed=1)


def test_bank_marketing_maps_onto_the_schema(tmp_path: Path) -> None:
    """UCI's contacts become partner exports: no row lost, `duration` never mapped, job
    titles and grades generalised into the schema's groups, 'unknown' treated as missing."""
    if not BANK_CSV.is_file():
        pytest.skip(f"UCI Bank Marketing not found at {BANK_CSV} (../shared/datasets/bank-marketing)")
    assert "duration" not in BANK_MAPPING
    fed = split_public(BANK, tmp_path / "bank", by="label-skew", partners=3, seed=4, keep=0.05)
    members = FederationConfig.load(fed).members
    raw_rows = 0
    for m in members:
        cfg = PartnerConfig.load(m.config)
        raw = pd.read_csv(cfg.customers.path, dtype=str)
        raw_rows += len(raw)
        assert "duration" in raw.columns and "duration" not in cfg.customers.columns.values()
        data = prepare(cfg, "propensity")
        report = data.summary.cleaning
        assert report.rows_in == len(raw) == report.rows_clean + report.rows_quarantined
        assert data.summary.n_train + data.summary.n_test == report.rows_clean
        # the raw file's 'unknown' spellings are gaps that were filled, not unreadable values
        assert report.unreadable_by_field == {}
        assert report.filled_by_field.get("credit_default", 0) == int((raw["default"] == "unknown").sum())
        x = np.vstack([data.x_train, data.x_test])
        names = standard_layout().names()
        col = {n: x[:, i] for i, n in enumerate(names)}
        employed = raw["job"].isin(["admin.", "blue-collar", "technician", "services", "management", "housemaid"])
        assert col["occupation=employed"].sum() == employed.sum()
        assert col["education=tertiary"].sum() == (raw["education"] == "university.degree").sum()
        assert col["previous_outcome=none"].sum() == (raw["poutcome"] == "nonexistent").sum()
        assert col["contact_channel=mobile"].sum() == (raw["contact"] == "cellular").sum()
    assert raw_rows == sum(round(n * 0.05) for n in np.bincount(
        assign_partners(pd.read_csv(BANK_CSV, sep=";", usecols=["y"])["y"], 3, "label-skew", seed=4)))
    rates = [prepare(PartnerConfig.load(m.config), "propensity").summary.label_rate_train for m in members]
    assert max(rates) - min(rates) > 0.05  # label skew survives the subsample


def test_seeded_keys_repeat_the_held_out_split(tmp_path: Path) -> None:
    """Benchmarks re-run to the same figures: keys derived from the seed give the same
    held-out split by keyed pseudonym; a partner's own key is random every time."""
    if not TELCO_CSV.is_file():
        pytest.skip(f"IBM Telco file not found at {TELCO_CSV} (../shared/datasets/telco-churn)")

    def held_out(folder: str, seeded: bool) -> np.ndarray:
        fed = split_public(TELCO, tmp_path / folder, by="iid", partners=2, seed=3, keep=0.2, seeded_keys=seeded)
        return prepare(PartnerConfig.load(FederationConfig.load(fed).members[0].config), "churn").x_test

    assert np.array_equal(held_out("a", True), held_out("b", True))
    assert not np.array_equal(held_out("c", False), held_out("d", False))
