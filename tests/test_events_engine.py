"""The purchases export in DuckDB (`fedcrm.data.events_duckdb`) against the pandas path.

Both engines run on the same exports and must agree exactly: the quarantine (row, reason,
raw values as text), the cleaning report, the per-customer purchase features (integers
exactly, sums to 1e-9), the derived labels; rows in = rows kept + rows quarantined. On the
demo consortium, a generated prep_scale export, hand-made messy exports (CSV and typed
Parquet) and UCI Online Retail; and an export the DuckDB path does not cover falls back to
pandas with its reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import PartnerConfig
from fedcrm.config.activity import ActivityConfig
from fedcrm.data.activity import marketing_tags
from fedcrm.data.events_duckdb import PurchaseActivity, Unsupported, date_pattern, purchase_activity_duckdb
from fedcrm.data.prepare import as_of_date, load_and_clean, prepare, purchase_activity, task_activity
from fedcrm.data.quality import check_partner
from fedcrm.errors import ConfigError
from fedcrm.sandbox.demo_data import generate

ROOT = Path(__file__).resolve().parents[1]
INTEGERS = ("recency_days", "customer_days", "frequency", "freq_recent", "freq_previous")
FLOATS = ("monetary", "activity_trend")


def assert_same(d: PurchaseActivity, p: PurchaseActivity, tags: bool = True) -> None:
    """The engines agree: report (and its orders), quarantine, features, label (and the
    marketing tags ranked from the features)."""
    assert (d.engine, p.engine) == ("duckdb", "pandas")
    assert d.report == p.report
    for key in ("quarantined_by_reason", "unreadable_by_field", "filled_by_field", "completeness_pct"):
        assert list(getattr(d.report, key)) == list(getattr(p.report, key))  # same order too
    r = d.report
    assert r.rows_in == r.rows_clean + r.rows_quarantined == r.rows_clean + len(d.quarantine)
    pd.testing.assert_frame_equal(d.quarantine, p.quarantine)
    pd.testing.assert_index_equal(d.features.index, p.features.index)  # same customers, same order
    assert list(d.features.columns) == list(p.features.columns)
    for col in INTEGERS:
        np.testing.assert_array_equal(d.features[col].to_numpy(), p.features[col].to_numpy(), err_msg=col)
    for col in FLOATS:
        np.testing.assert_allclose(d.features[col].to_numpy(), p.features[col].to_numpy(), rtol=1e-9, atol=1e-9,
                                   err_msg=col)
    if p.label is None:
        assert d.label is None
    else:
        pd.testing.assert_series_equal(d.label, p.label)
    if tags:  # quintiles of ranks: equal sums must stay equal (they agree to the last bit here)
        pd.testing.assert_frame_equal(marketing_tags(d.features, ActivityConfig()),
                                      marketing_tags(p.features, ActivityConfig()))


def assert_label_spread(label: str, values: pd.Series) -> None:
    """Both classes of a 0/1 label; a value label with customers who spent nothing in the
    horizon and customers who spent more than one unit."""
    if label == "future-spend":
        assert (values == 0).any() and (values > 1).any() and (values >= 0).all(), values.describe()
    else:
        assert 0 < values.mean() < 1


def both(cfg: PartnerConfig, label: str | None = "no-purchase", target: str = "", ids: pd.Index | None = None,
         task: str | None = None, **duck) -> tuple[PurchaseActivity, PurchaseActivity]:  # noqa: ANN003
    activity = task_activity(cfg, task)
    if ids is None:
        ids = pd.Index(load_and_clean(cfg, key_fields=[])[1].clean["customer_id"].astype(str))
    if duck:
        d = purchase_activity_duckdb(cfg.transactions, cfg.cleaning, as_of_date(cfg), activity, cfg.work_dir, label,
                                     target, ids, **duck)
    else:
        d = purchase_activity(cfg, activity, label, target, ids, engine="duckdb")
    p = purchase_activity(cfg, activity, label, target, ids, engine="pandas")
    return d, p


# ---------------------------------------------------------------- the demo consortium
def test_demo_consortium_purchases_agree_and_prepare_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    federation = generate(tmp_path / "c")
    configs = sorted(federation.parent.glob("*/partner.toml"))
    with_purchases = [c for c in configs if PartnerConfig.load(c).transactions is not None]
    assert with_purchases
    for config in with_purchases:
        cfg = PartnerConfig.load(config)
        d, p = both(cfg)
        assert_same(d, p)
        assert d.report.rows_quarantined > 0 and len(d.features) > 100
        # the whole pipeline, once per engine on its own copy: the same arrays and files
        out = {}
        for engine in ("duckdb", "pandas"):
            folder = tmp_path / engine / config.parent.name
            shutil.copytree(config.parent, folder)
            monkeypatch.setenv("FEDCRM_EVENTS_ENGINE", engine)
            local = PartnerConfig.load(folder / "partner.toml")
            data = prepare(local, "churn", use_cache=False)
            out[engine] = (data, pd.read_parquet(local.work_dir / "quarantine_transactions.parquet"),
                           pd.read_parquet(local.work_dir / "tags.parquet"))
        (a, qa, ta), (b, qb, tb) = out["duckdb"], out["pandas"]
        for name in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert a.summary == b.summary
        pd.testing.assert_frame_equal(qa, qb)
        pd.testing.assert_frame_equal(ta, tb)
        # `partner check` reads its purchase lines through the same engine, with the same report
        checked = {}
        for engine in ("duckdb", "pandas"):
            monkeypatch.setenv("FEDCRM_EVENTS_ENGINE", engine)
            checked[engine] = check_partner(PartnerConfig.load(tmp_path / engine / config.parent.name / "partner.toml"),
                                            "churn").transactions
        assert checked["duckdb"] == checked["pandas"] == p.report and p.report.rows_in > 0


# ---------------------------------------------------------------- prep_scale's generated export
def _prep_scale():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("prep_scale", ROOT / "benchmarks" / "prep_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_scale_export_with_its_planted_problems(tmp_path: Path) -> None:
    _prep_scale().generate(tmp_path, 4_000, 60_000)
    cfg = PartnerConfig.load(tmp_path / "partner.toml")
    d, p = both(cfg)
    assert_same(d, p)
    reasons = d.report.quarantined_by_reason
    assert set(reasons) >= {"abnormal: negative quantity", "to be supplemented: customer_id missing or unreadable",
                            "to be supplemented: tx_date missing or unreadable"}
    assert d.report.filled_by_field  # missing quantities and prices filled with the clean medians
    # the high-cardinality readers (values DuckDB parses itself, the rest by pandas) agree too
    d2, _ = both(cfg, distinct_limit=0)
    assert_same(d2, p)


# ---------------------------------------------------------------- hand-made messy exports
def messy_lines(n: int = 6_000, seed: int = 5) -> pd.DataFrame:
    """Purchase lines with every spelling problem the standardiser knows."""
    rng = np.random.default_rng(seed)
    cust = np.array([f"K{i:04d}" for i in rng.integers(0, 400, n)], dtype=object)
    pad = rng.random(n)
    cust[pad < 0.03] = [f"  {c} " for c in cust[pad < 0.03]]
    cust[(pad >= 0.03) & (pad < 0.05)] = ["\xa0" + c + "\t" for c in cust[(pad >= 0.03) & (pad < 0.05)]]
    for k, token in enumerate(("", "N/A", " null ", "unknown", "UN\u212aNOWN", "-", "\u3000NaN\u2003")):
        cust[(pad >= 0.05 + 0.002 * k) & (pad < 0.052 + 0.002 * k)] = token
    days = pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 950, n), unit="D")
    day = np.array(days.strftime("%Y-%m-%d"), dtype=object)
    alt = rng.random(n)
    day[alt < 0.1] = days[alt < 0.1].strftime("%d.%m.%Y")  # the second format
    day[(alt >= 0.1) & (alt < 0.11)] = " " + day[(alt >= 0.1) & (alt < 0.11)] + " "
    day[(alt >= 0.11) & (alt < 0.115)] = "2025-02-30"  # unreadable
    day[(alt >= 0.115) & (alt < 0.12)] = "n/a"
    day[(alt >= 0.12) & (alt < 0.125)] = "2025-3-7"  # not zero-padded: pandas decides
    qty = np.array([str(q) for q in 1 + rng.poisson(1.0, n)], dtype=object)
    odd = rng.random(n)
    qty[odd < 0.02] = "-1"
    qty[(odd >= 0.02) & (odd < 0.03)] = ""
    qty[(odd >= 0.03) & (odd < 0.035)] = "two"
    qty[(odd >= 0.035) & (odd < 0.04)] = " 3 "
    price = np.array([f"{p:.2f}" for p in np.round(rng.lognormal(np.log(20), 0.7, n), 2)], dtype=object)
    odd = rng.random(n)
    price[odd < 0.02] = ["€" + p for p in price[odd < 0.02]]
    price[(odd >= 0.02) & (odd < 0.03)] = "1,234.50"
    price[(odd >= 0.03) & (odd < 0.035)] = "USD 7"
    price[(odd >= 0.035) & (odd < 0.04)] = "?"
    price[(odd >= 0.04) & (odd < 0.043)] = "99999"  # outlier
    price[(odd >= 0.043) & (odd < 0.046)] = "-0.50"
    price[(odd >= 0.046) & (odd < 0.05)] = "abc"
    cat = rng.choice(np.array(["Phones", " phones ", "Insurance", "INSURANCE", "ins", "", "Top_Up", "none"],
                              dtype=object), n)
    order = np.array([f"O{i}" for i in rng.integers(0, n // 2, n)], dtype=object)
    order[rng.random(n) < 0.03] = ""
    return pd.DataFrame({"cust": cust, "order": order, "day": day, "qty": qty, "price": price, "cat": cat,
                         "sku": [f"S{i}" for i in rng.integers(0, 50, n)]})


MESSY_TOML = '''name = "messy"
partner_id = 9
work_dir = "work"
secret_file = "secret.key"
as_of = "2026-06-30"

[customers]
path = "customers.csv"

[customers.columns]
customer_id = "id"

[transactions]
path = "{path}"
date_formats = ["%Y-%m-%d", "%d.%m.%Y"]
money_unit = "{unit}"

[transactions.columns]
customer_id = "cust"
tx_id = "order"
tx_date = "day"
quantity = "qty"
unit_price = "price"
category = "cat"
product = "sku"

[transactions.values.category]
"ins" = "insurance"

[activity]
cutoff = "2026-01-31"
target_category = "insurance"

[cleaning]
outlier_spend_multiple = 50.0
'''


def messy_partner(folder: Path, lines: pd.DataFrame, path: str = "lines.csv", unit: str = "units") -> PartnerConfig:
    from fedcrm.data.secret import create_secret

    folder.mkdir(parents=True, exist_ok=True)
    create_secret(folder / "secret.key")
    pd.DataFrame({"id": [f"K{i:04d}" for i in range(400)]}).to_csv(folder / "customers.csv", index=False)
    if path.endswith(".csv"):
        lines.to_csv(folder / path, index=False)
    else:
        lines.to_parquet(folder / path, index=False)
    (folder / "partner.toml").write_text(MESSY_TOML.format(path=path, unit=unit))
    return PartnerConfig.load(folder / "partner.toml")


@pytest.mark.parametrize("distinct_limit", [None, 0])
def test_messy_csv_export_agrees_for_both_labels(tmp_path: Path, distinct_limit: int | None) -> None:
    cfg = messy_partner(tmp_path, messy_lines())
    ids = pd.Index([f"K{i:04d}" for i in range(420)]).astype(str)  # some without any purchase
    extra = {} if distinct_limit is None else {"distinct_limit": distinct_limit}
    for label, target in (("no-purchase", ""), ("bought-category", "insurance"), ("future-spend", "")):
        d, p = both(cfg, label, target, ids, **extra)
        assert_same(d, p)
        assert_label_spread(label, p.label)
    reasons = d.report.quarantined_by_reason
    assert reasons["to be supplemented: customer_id missing or unreadable"] > 0
    assert reasons["to be supplemented: tx_date missing or unreadable"] > 0
    assert reasons["abnormal: tx_date in the future"] > 0 and reasons["abnormal: unit_price above 50x the median"] > 0
    assert d.report.unreadable_by_field["quantity"] > 0 and d.report.unreadable_by_field["unit_price"] > 0
    q = d.quarantine
    assert q["customer_id"].isin(["", "N/A", " null ", "unknown", "-"]).any()  # raw values, as text


@pytest.mark.parametrize("pandas_metadata", [True, False])
def test_typed_parquet_export_agrees(tmp_path: Path, pandas_metadata: bool) -> None:
    """Integer ids with gaps (without the file's pandas metadata pandas reads them as floats:
    '17.0'; with it, as nullable integers: '17'), timestamps, doubles with NaN, a money unit."""
    rng = np.random.default_rng(11)
    n = 5_000
    cust = pd.array(rng.integers(1, 300, n), dtype="Int64")
    cust[rng.random(n) < 0.02] = pd.NA
    when = pd.to_datetime("2024-03-01") + pd.to_timedelta(rng.integers(0, 900 * 24, n), unit="h")
    when = pd.Series(when).where(rng.random(n) > 0.01)
    price = np.round(rng.lognormal(np.log(900), 0.5, n), 0)
    price[rng.random(n) < 0.02] = np.nan
    price[rng.random(n) < 0.003] *= 1000
    qty = pd.array(1 + rng.poisson(0.7, n), dtype="Int64")
    qty[rng.random(n) < 0.02] = -2
    lines = pd.DataFrame({"cust": cust, "order": [f"T{i}" for i in rng.integers(0, 2000, n)], "day": when,
                          "qty": qty, "price": price, "cat": rng.choice(["ins", "phones"], n), "sku": "S"})
    cfg = messy_partner(tmp_path, lines, "lines.parquet", unit="cents")
    if not pandas_metadata:
        import pyarrow.parquet as pq

        table = pq.read_table(tmp_path / "lines.parquet")
        pq.write_table(table.replace_schema_metadata(None), tmp_path / "lines.parquet")
    suffix = "" if pandas_metadata else ".0"
    ids = pd.Index([f"{i}{suffix}" for i in range(1, 310)]).astype(str)
    for label, target in (("no-purchase", ""), ("bought-category", "insurance"), ("future-spend", "")):
        d, p = both(cfg, label, target, ids)
        assert_same(d, p)
        assert_label_spread(label, d.label)
    assert d.features.index[0].endswith(suffix) and "." not in d.features.index[0][:-len(suffix) or None]


# ---------------------------------------------------------------- UCI Online Retail
def test_uci_online_retail_on_the_retail_contract(tmp_path: Path) -> None:
    from fedcrm.data.secret import create_secret
    from fedcrm.sandbox.public_data import RETAIL_CSV

    if not RETAIL_CSV.is_file():
        pytest.skip(f"UCI Online Retail not found at {RETAIL_CSV} (../shared/datasets/online-retail)")
    create_secret(tmp_path / "secret.key")
    columns = ('customer_id = "CustomerID"\ntx_date = "InvoiceDate"\ntx_id = "InvoiceNo"\nproduct = "StockCode"\n'
               'description = "Description"\nquantity = "Quantity"\nunit_price = "UnitPrice"\n')
    (tmp_path / "partner.toml").write_text(f'''name = "uk-retailer"
partner_id = 1
work_dir = "work"
secret_file = "secret.key"
contract = "{ROOT / 'contracts' / 'retail.toml'}"
as_of = "2011-12-10"

[customers]
path = "{RETAIL_CSV}"
format = "csv"

[customers.columns]
customer_id = "CustomerID"
country = "Country"

[transactions]
path = "{RETAIL_CSV}"
format = "csv"
date_formats = ["%Y-%m-%d %H:%M:%S"]

[transactions.columns]
{columns}''')  # the mapping `partner map` writes for the log (a log only: customers are its ids)
    cfg = PartnerConfig.load(tmp_path / "partner.toml")
    d, p = both(cfg, task="churn-from-purchases")
    assert_same(d, p, tags=False)  # sums of many lines: equal to ~1e-12, not always to the last bit
    r = d.report
    assert r.rows_in == 541_909 == r.rows_clean + r.rows_quarantined
    assert r.quarantined_by_reason["to be supplemented: customer_id missing or unreadable"] == 135_080
    assert r.quarantined_by_reason["abnormal: negative quantity"] > 8_000
    assert 3_000 < len(d.features) < 4_372


# ---------------------------------------------------------------- what falls back, and why
def test_uncovered_options_fall_back_to_pandas_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    cfg = messy_partner(tmp_path, messy_lines(800))
    lower = cfg.model_copy(update={"transactions": cfg.transactions.model_copy(update={"id_case": "lower"})})
    ids = pd.Index([f"k{i:04d}" for i in range(400)]).astype(str)
    activity = task_activity(lower, None)
    with pytest.raises(Unsupported, match="id_case"):
        purchase_activity_duckdb(lower.transactions, lower.cleaning, as_of_date(lower), activity, lower.work_dir,
                                 "no-purchase", "", ids)
    with caplog.at_level("INFO", logger="fedcrm.data.prepare"):
        auto = purchase_activity(lower, activity, "no-purchase", "", ids, engine="auto")
    assert auto.engine == "pandas" and "id_case" in auto.fallback and "id_case" in caplog.text
    with pytest.raises(ConfigError, match="not covered by the DuckDB path"):
        purchase_activity(lower, activity, "no-purchase", "", ids, engine="duckdb")
    covered = purchase_activity(cfg, activity, "no-purchase", "", ids, engine="auto")
    assert covered.engine == "duckdb" and covered.fallback is None
    # a CSV DuckDB cannot read as pandas does (a row with a field too many): pandas names it
    (tmp_path / "lines.csv").write_text((tmp_path / "lines.csv").read_text() + "K0001,O1,2025-01-01,1,2.0,x,S1,extra\n")
    with pytest.raises(Unsupported, match="could not read"):
        purchase_activity_duckdb(cfg.transactions, cfg.cleaning, as_of_date(cfg), activity, cfg.work_dir)


def test_missing_tokens_lower_case_alike_in_both_engines() -> None:
    """The only non-ASCII characters Python lower-cases into ASCII: the Kelvin sign (to
    'k', as DuckDB does) and the dotted capital I (to 'i' and a combining dot: no token)."""
    import duckdb

    from fedcrm.data.standardise import MISSING_TOKENS

    into_ascii = [chr(c) for c in range(0x80, 0x110000) if any(o.isascii() for o in chr(c).lower())]
    assert into_ascii == ["\u0130", "\u212a"]
    con = duckdb.connect()
    for token in MISSING_TOKENS:
        for ch in into_ascii:
            for i, letter in enumerate(token):
                if letter == ch.lower()[0]:
                    spelt = token[:i] + ch + token[i + 1:]
                    duck = con.execute("SELECT lower(?)", [spelt]).fetchall()[0][0]
                    assert (duck in MISSING_TOKENS) == (spelt.lower() in MISSING_TOKENS), spelt


def test_date_patterns_only_for_directives_both_engines_read_alike() -> None:
    assert date_pattern("%Y-%m-%d %H:%M:%S") is not None and date_pattern("%d.%m.%Y") is not None
    for fmt in ("%d/%m/%y", "%b %d %Y", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d\t%H"):
        assert date_pattern(fmt) is None, fmt
