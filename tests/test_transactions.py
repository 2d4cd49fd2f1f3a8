"""Purchases → RFM, trend, labels and marketing tags; on UCI Online Retail and small frames."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config.activity import ActivityConfig
from fedcrm.data.activity import (activity_features, churn_labels, marketing_tags, propensity_labels,
                             purchases)
from fedcrm.config import CleaningRules, PartnerConfig, TransactionMapping
from fedcrm.data.prepare import load_events, prepare
from fedcrm.sandbox.public_data import SHARED_DATASETS

RETAIL = SHARED_DATASETS / "online-retail" / "online_retail.csv.gz"


def tx_frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "tx_date", "tx_id", "amount"])
    df["tx_date"] = pd.to_datetime(df["tx_date"])
    return df


def shop_partner(folder: Path, body: str) -> Path:
    """A partner "shop" in `folder`: its key, and a config whose customers are
    customers.csv; `body` adds the column mapping and any further sections."""
    from fedcrm.data.secret import create_secret

    create_secret(folder / "secret.key")
    path = folder / "partner.toml"
    path.write_text('name = "shop"\npartner_id = 4\nwork_dir = "work"\nsecret_file = "secret.key"\n'
                    'as_of = "2026-06-30"\n[customers]\npath = "customers.csv"\n' + body)
    return path


def test_rfm_by_hand() -> None:
    tx = tx_frame([
        ("a", "2024-01-10", "o1", 10.0), ("a", "2024-01-10", "o1", 5.0),   # one order, two lines
        ("a", "2024-05-01", "o2", 20.0), ("b", "2023-02-01", "o3", 99.0),  # b: outside the 365-day window
        ("a", "2024-07-15", "o4", 1.0),                                    # after the cutoff: label only
    ])
    f = activity_features(purchases(tx), date(2024, 6, 30), ActivityConfig())
    assert f.loc["a", "recency_days"] == 60 and f.loc["a", "frequency"] == 2 and f.loc["a", "monetary"] == 35.0
    assert f.loc["b", "frequency"] == 0 and f.loc["b", "recency_days"] == (date(2024, 6, 30) - date(2023, 2, 1)).days
    # trend windows: (2024-04-01, 06-30] holds May; (2024-01-02, 04-01] holds 10 January
    assert f.loc["a", "freq_recent"] == 1 and f.loc["a", "freq_previous"] == 1
    assert f.loc["a", "activity_trend"] == 0.0
    y = churn_labels(purchases(tx), f.index, date(2024, 6, 30), 90)
    assert y.to_dict() == {"a": 0, "b": 1}


def test_empty_windows_with_many_customers() -> None:
    """300 customers whose last purchase is years before the cutoff: every window is empty
    (pandas 3.1 once failed reindexing an empty group-by over more than 127 categories)."""
    tx = tx_frame([(f"c{i:03d}", "2019-03-01", f"o{i}", 10.0 + i) for i in range(300)])
    f = activity_features(purchases(tx), date(2024, 6, 30), ActivityConfig())
    assert len(f) == 300 and (f[["frequency", "freq_recent", "freq_previous"]] == 0).all().all()
    assert (f["monetary"] == 0.0).all() and (f["activity_trend"] == 0.0).all()
    assert f.loc["c007", "recency_days"] == (date(2024, 6, 30) - date(2019, 3, 1)).days


def test_tags_follow_the_rules() -> None:
    cfg = ActivityConfig()
    f = pd.DataFrame({
        "recency_days": [5, 10, 200, 300, 400], "customer_days": [30, 400, 500, 600, 700],
        "frequency": [12, 6, 3, 1, 0], "monetary": [900.0, 300.0, 200.0, 20.0, 0.0],
        "freq_recent": [5, 1, 0, 0, 0], "freq_previous": [2, 4, 1, 0, 0],
    }, index=list("vwxyz"))
    t = marketing_tags(f, cfg)
    assert list(t["frequency_tier"]) == ["high", "mid", "low", "low", "dormant"]
    assert list(t["lifecycle"]) == ["new", "active", "dormant", "dormant", "lost"]
    assert list(t["churn_risk"]) == [False, True, True, False, False]  # w: 4 → 1, x: 1 → 0
    assert t.loc["v", "value_tier"] == "high-value" and t.loc["z", "value_tier"] == "low"
    assert sorted(t["r_score"]) == [1, 2, 3, 4, 5]
    inter_prev = pd.Series({"w": 4, "x": 2})
    inter_recent = pd.Series({"w": 1, "x": 2})  # x kept calling: not a churn risk with interactions
    t2 = marketing_tags(f, cfg, inter_recent, inter_prev)
    assert list(t2["churn_risk"]) == [False, True, False, False, False]


def test_propensity_label_from_category() -> None:
    tx = tx_frame([("a", "2024-07-01", "o1", 5.0), ("b", "2024-07-02", "o2", 5.0), ("b", "2024-01-02", "o3", 5.0)])
    tx["category"] = ["insurance", "phones", "insurance"]
    y = propensity_labels(tx, pd.Index(["a", "b"]), date(2024, 6, 30), 90, "insurance")
    assert y.to_dict() == {"a": 1, "b": 0}  # b bought insurance only before the cutoff


@pytest.mark.dataset
def test_online_retail_rfm_and_churn_labels() -> None:
    if not RETAIL.is_file():
        pytest.skip(f"UCI Online Retail not found at {RETAIL} (../shared/datasets/online-retail)")
    mapping = TransactionMapping(
        path=RETAIL, format="csv", date_formats=["%Y-%m-%d %H:%M:%S"],
        columns={"customer_id": "CustomerID", "tx_date": "InvoiceDate", "tx_id": "InvoiceNo",
                 "product": "StockCode", "quantity": "Quantity", "unit_price": "UnitPrice"})
    raw, cleaned = load_events(mapping, "uk-retailer", CleaningRules(outlier_spend_multiple=1000), date(2011, 12, 10))
    ids = raw["customer_id"].str.strip()
    assert ids[ids != ""].nunique() == 4372  # before cleaning
    rep = cleaned.report
    assert rep.rows_in == 541_909 == rep.rows_clean + rep.rows_quarantined
    assert rep.quarantined_by_reason["to be supplemented: customer_id missing or unreadable"] == 135_080
    assert rep.quarantined_by_reason["abnormal: negative quantity"] > 8_000  # cancellations and returns
    cfg = ActivityConfig(horizon_days=90)
    cutoff = date(2011, 9, 10)
    bought = purchases(cleaned.clean)
    f = activity_features(bought, cutoff, cfg)
    assert 3_000 < len(f) < 4_372
    y = churn_labels(bought, f.index, cutoff, cfg.horizon_days)
    assert 0.2 < y.mean() < 0.7
    tags = marketing_tags(f, cfg)
    for col in ("value_tier", "lifecycle"):
        assert tags[col].value_counts().min() > 100, tags[col].value_counts()
    assert set(tags["value_tier"]) == {"high-value", "potential", "at-risk", "low"}
    assert set(tags["frequency_tier"]) >= {"high", "mid", "low"}
    assert tags["r_score"].value_counts().min() == len(f) // 5  # quintiles all populated
    # recency separates churners: they bought less recently before the cutoff
    assert f.loc[y == 1, "recency_days"].median() > 2 * f.loc[y == 0, "recency_days"].median()


def test_partner_with_purchases_gets_rfm_features_derived_labels_and_pseudonymous_tags(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 400
    ids = [f"CUST-{i:05d}" for i in range(n)]
    pd.DataFrame({"id": ids, "name": [f"Name {i}" for i in range(n)],
                  "contract": rng.choice(["Month-to-month", "Two year"], n)}).to_csv(tmp_path / "customers.csv", index=False)
    rows = []
    for i, cid in enumerate(ids):
        stops = i % 3 == 0  # a third stop buying in April
        for d in pd.date_range("2025-06-01", "2026-06-20", freq=f"{10 + i % 20}D"):
            if stops and d > pd.Timestamp("2026-04-01"):
                break
            rows.append((cid, f"O{i}-{d:%Y%m%d}", d.strftime("%d.%m.%Y"), 1, 9.5))
    pd.DataFrame(rows, columns=["cid", "order", "day", "qty", "price"]).to_csv(tmp_path / "purchases.csv", index=False)
    shop_partner(tmp_path, '''
[customers.columns]
customer_id = "id"
full_name = "name"
contract = "contract"
[transactions]
path = "purchases.csv"
date_formats = ["%d.%m.%Y"]
[transactions.columns]
customer_id = "cid"
tx_id = "order"
tx_date = "day"
quantity = "qty"
unit_price = "price"
[activity]
cutoff = "2026-04-15"
horizon_days = 60
''')
    cfg = PartnerConfig.load(tmp_path / "partner.toml")
    data = prepare(cfg, "churn", test_fraction=0.25)
    y = np.concatenate([data.y_train, data.y_test])
    assert abs(y.mean() - 1 / 3) < 0.02  # derived from purchases: the third that stopped
    from fedcrm.data.layout import standard_layout

    col = standard_layout().names().index("frequency")
    assert data.x_train[:, col].std() > 0  # RFM features present, not the neutral 0
    tags = pd.read_parquet(cfg.work_dir / "tags.parquet")
    assert len(tags) == n and tags["pid"].str.len().eq(64).all()
    text = tags.to_csv()
    assert not any(cid in text for cid in ids) and "Name 1" not in text
    with pytest.raises(Exception, match="responded"):
        prepare(cfg, "propensity")  # no target category configured


def test_interactions_export_feeds_counts_and_the_churn_risk_flag(tmp_path: Path) -> None:
    """Both drops are needed for the flag: c1 buys less and calls less; c2 buys less but
    keeps calling; c3 buys as before."""
    pd.DataFrame({"id": ["c1", "c2", "c3"], "left": ["no", "no", "no"]}).to_csv(tmp_path / "customers.csv", index=False)
    buys = [(c, f"{c}-{d}", d) for c in ("c1", "c2", "c3") for d in ("2026-02-01", "2026-02-15", "2026-03-01")]
    buys += [("c3", "c3-x", "2026-05-01"), ("c3", "c3-y", "2026-05-15"), ("c3", "c3-z", "2026-06-01")]
    pd.DataFrame(buys, columns=["cid", "order", "day"]).assign(qty=1, price=10.0).to_csv(tmp_path / "buys.csv", index=False)
    calls = [(c, d, "phone") for c in ("c1", "c2") for d in ("2026-02-03", "2026-02-20")]
    calls += [("c2", "2026-05-03", "phone"), ("c2", "2026-05-20", "e-mail"), ("c1", "2031-01-01", "phone")]
    pd.DataFrame(calls, columns=["cid", "when", "via"]).to_csv(tmp_path / "calls.csv", index=False)
    shop_partner(tmp_path, '''
[customers.columns]
customer_id = "id"
churned = "left"
[transactions]
path = "buys.csv"
[transactions.columns]
customer_id = "cid"
tx_id = "order"
tx_date = "day"
quantity = "qty"
unit_price = "price"
[interactions]
path = "calls.csv"
[interactions.columns]
customer_id = "cid"
ix_date = "when"
channel = "via"
[activity]
cutoff = "2026-06-30"
''')
    cfg = PartnerConfig.load(tmp_path / "partner.toml")
    from fedcrm.data.quality import check_partner

    report = check_partner(cfg)
    assert report.interactions.rows_in == 7 and report.interactions.quarantined_by_reason == {
        "abnormal: ix_date in the future": 1}
    prepare(cfg, "churn", test_fraction=0.01)
    q = pd.read_parquet(cfg.work_dir / "quarantine_interactions.parquet")
    assert list(q["_row"]) == [7] and q.loc[0, "customer_id"] == "c1" and "future" in q.loc[0, "reason"]
    assert len(pd.read_parquet(cfg.work_dir / "quarantine_transactions.parquet")) == 0
    tags = pd.read_parquet(cfg.work_dir / "tags.parquet")
    lookup = pd.read_parquet(cfg.work_dir / "pseudonym_lookup.parquet")
    flags = dict(zip(tags.merge(lookup, on="pid")["customer_id"], tags.merge(lookup, on="pid")["churn_risk"]))
    assert flags == {"c1": True, "c2": False, "c3": False}
