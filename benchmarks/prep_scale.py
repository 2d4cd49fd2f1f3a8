"""Partner-side data pipeline at scale: 1M customers / 10M purchase lines, and 10M / 100M.

    .venv/bin/python benchmarks/prep_scale.py                                      # 1M / 10M; writes benchmarks/results/prep_scale.json
    .venv/bin/python benchmarks/prep_scale.py --sizes 1000000:10000000,10000000:100000000   # and 10M / 100M
    .venv/bin/python benchmarks/prep_scale.py --sizes 10000:100000 --output /tmp/p.json    # quick check

Generates a deterministic partner export (numpy default_rng, vectorised; Parquet via
pyarrow, the purchase lines written in row groups of 5M so that 100M lines fit Arrow's
string arrays) in a temporary directory under .work/, with ~1 % duplicate customer ids,
missing and unreadable values, negative quantities (returns), future dates and spend
outliers so the cleaning does real work. Next to it: a partner config TOML and an HMAC key.

Then, each in a fresh subprocess so that each peak RSS (ru_maxrss, via wait4) is the
stage's own, with its CPU seconds (user + system) beside the wall clock (the machine has two
cores and is shared: the load average before and after each stage is recorded):
  generate          the export (timed, not counted against the targets);
  prepare           `fedcrm.data.prepare.prepare(cfg, "churn", use_cache=False)`: load + validate
                    + clean + pseudonymise (HMAC) + RFM/trend features + labels + marketing tags,
                    the purchases export in DuckDB (`fedcrm.data.events_duckdb`, the default);
  prepare_pandas    the same with FEDCRM_EVENTS_ENGINE=pandas (the pipeline before DuckDB);
  duckdb_reference  a plain DuckDB query of the same purchases work (clean the lines, exact
                    medians as separate queries, lines -> purchases -> per-customer features
                    and the churn label), without the pipeline's exactness machinery: the
                    engine's own time;
  check             `fedcrm.data.quality.check_partner(cfg, "churn")` (its purchases report is
                    still the pandas path's);
  breakdown         `prepare` taken apart step by step (its functions in its order), seconds
                    and RSS per step, and the DuckDB path's own stage timings.
prepare_pandas and check need every purchase line in pandas: skipped above 20M lines unless
asked for (--stages).
Targets (issue): prepare <= 6 s and <= 2048 MB at 1M / 10M; at 10M / 100M prepare completes
(target <= 90 s, <= 12 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "prep_scale.json"
TARGETS = {(1_000_000, 10_000_000): {"prepare_seconds_max": 6.0, "prepare_peak_rss_mb_max": 2048.0},
           (10_000_000, 100_000_000): {"prepare_seconds_max": 90.0, "prepare_peak_rss_mb_max": 12288.0,
                                       "must_complete": True}}
PANDAS_MAX_LINES = 20_000_000  # prepare_pandas and check hold every line in pandas: skipped above
TX_ROW_GROUP = 5_000_000  # purchase lines built into Arrow arrays at a time
AS_OF = "2026-06-30"
SEED = 20260630

PARTNER_TOML = f'''name = "scale"
partner_id = 1
work_dir = "work"
secret_file = "secret.key"
as_of = "{AS_OF}"

[customers]
path = "customers.parquet"

[customers.columns]
customer_id = "cust_id"
full_name = "name"
email = "email"
signup_date = "signup"
contract = "contract"
monthly_spend = "monthly"
churned = "churn"

[transactions]
path = "transactions.parquet"

[transactions.columns]
customer_id = "cust_id"
tx_id = "order_no"
tx_date = "date"
quantity = "qty"
unit_price = "price"

[cleaning]
outlier_spend_multiple = 1000.0
'''


# ---------------------------------------------------------------- measuring helpers
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except OSError:
        return float("nan")


class Steps:
    """Seconds, peak RSS and current RSS after each step of a stage."""

    def __init__(self, path: Path | None = None) -> None:
        self.rows: list[dict] = []
        self.path = path  # the steps so far, rewritten after each: what a killed stage got through

    def __call__(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows.append({"step": name, "seconds": round(time.perf_counter() - t0, 3),
                          "peak_rss_mb": peak_rss_mb(), "rss_after_mb": current_rss_mb()})
        if self.path is not None:
            self.path.write_text(json.dumps(self.rows))
        return out

    def seconds(self, name: str) -> float:
        return next(r["seconds"] for r in self.rows if r["step"] == name)


def rss_cap(limit_mb: float) -> None:
    """Stop this stage (exit 3) when its resident set passes `limit_mb`: the machine is shared,
    and a stage that outgrows the target by that much has failed it anyway."""
    import threading

    def watch() -> None:
        while True:
            if current_rss_mb() > limit_mb:
                print(f"prep_scale: stage stopped at {current_rss_mb():.0f} MB resident (cap {limit_mb:.0f} MB, "
                      "PREP_SCALE_RSS_CAP_MB)", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def source_digest() -> str:
    """sha256 over the package's source files: which code a stage measured.

    The package is being edited while benchmarks run; each stage records the digest when
    it starts and ends, and the report flags a run whose stages saw different code."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "fedcrm").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 3)


# ---------------------------------------------------------------- data generation
def _ids(prefix: str, numbers, width: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _dates(days, mask=None):
    """Days since 1970-01-01 → 'YYYY-MM-DD' strings (null where mask)."""
    import numpy as np
    import pyarrow as pa

    return pa.array(days.astype(np.int32), type=pa.date32(), mask=mask).cast(pa.string())


def _epoch_days(iso: str) -> int:
    return (date.fromisoformat(iso) - date(1970, 1, 1)).days


def generate(folder: Path, n_customers: int, n_lines: int, seed: int = SEED) -> dict:
    """Write customers.parquet, transactions.parquet, partner.toml and secret.key (with
    ~1 % of signup dates missing and a few unreadable ones among the other problems)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fedcrm.data.secret import create_secret

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    # customers: ~1 % of the rows repeat another row's id (an older/newer record)
    n = n_customers
    num = np.arange(1, n + 1, dtype=np.int64)
    dup = rng.random(n) < 0.01
    num_id = num.copy()
    num_id[dup] = rng.integers(1, n + 1, int(dup.sum()))
    cust_id = _ids("C", num_id, 7)
    cust_id = pc.if_else(pa.array(rng.random(n) < 0.001), pa.scalar(None, pa.string()), cust_id)  # no id
    name = pc.binary_join_element_wise("Customer ", pa.array(num).cast(pa.string()), "")
    email = pc.binary_join_element_wise(pc.binary_join_element_wise("c", pa.array(num).cast(pa.string()), ""),
                                        "@example.com", "")
    email = pc.if_else(pa.array(rng.random(n) < 0.02), pa.scalar(None, pa.string()), email)
    signup = _dates(rng.integers(_epoch_days("2012-01-01"), _epoch_days("2026-06-01"), n),
                    mask=rng.random(n) < 0.01)
    bad_dates = rng.random(n)
    signup = pc.if_else(pa.array(bad_dates < 0.002), "31/02/2020", signup)  # unreadable
    signup = pc.if_else(pa.array((bad_dates >= 0.002) & (bad_dates < 0.004)), "n/a", signup)  # missing token
    signup = pc.if_else(pa.array((bad_dates >= 0.004) & (bad_dates < 0.0045)), "2027-01-15", signup)  # future
    contract = np.array(["Month-to-month", "One year", "Two year"], dtype=object)[rng.choice(3, n, p=[0.55, 0.25, 0.20])]
    contract = pa.array(contract, mask=rng.random(n) < 0.005)
    monthly = np.round(rng.lognormal(np.log(60.0), 0.45, n), 2)
    weird = rng.random(n)
    monthly[weird < 0.0005] *= 5000.0  # outlier: > 1000x the median
    monthly[(weird >= 0.0005) & (weird < 0.001)] *= -1.0  # negative
    monthly = pa.array(monthly, mask=rng.random(n) < 0.01)
    churn = np.where(rng.random(n) < 0.26, "Yes", "No").astype(object)
    churn = pa.array(churn, mask=rng.random(n) < 0.003)  # key field missing → quarantined
    customers = pa.table({"cust_id": cust_id, "name": name, "email": email, "signup": signup,
                          "contract": contract, "monthly": monthly, "churn": churn})
    pq.write_table(customers, folder / "customers.parquet")
    del customers, cust_id, name, email, signup, contract, monthly, churn

    # transactions: orders of 1+Poisson(1.5) lines; activity skewed across customers
    sizes = 1 + rng.poisson(1.5, n_lines // 2 + 16)
    ends = np.cumsum(sizes)
    n_orders = int(np.searchsorted(ends, n_lines) + 1)
    sizes = sizes[:n_orders]
    sizes[-1] -= int(ends[n_orders - 1] - n_lines)
    weight = rng.gamma(0.8, 1.0, n)
    order_cust = rng.choice(num, n_orders, p=weight / weight.sum())
    order_day = rng.integers(_epoch_days("2024-01-01"), _epoch_days(AS_OF) + 1, n_orders)
    future = rng.random(n_orders) < 0.001
    order_day[future] += rng.integers(1, 60, int(future.sum()))
    line_order = np.repeat(np.arange(1, n_orders + 1, dtype=np.int64), sizes)
    line_cust = np.repeat(order_cust, sizes)
    line_day = np.repeat(order_day, sizes)
    del order_cust, order_day
    m = len(line_order)
    qty = 1 + rng.poisson(0.8, m)
    qty[rng.random(m) < 0.01] *= -1  # returns
    price = np.round(rng.lognormal(np.log(25.0), 0.8, m), 2)
    price[rng.random(m) < 0.00005] *= 5000.0  # extreme amount
    # the masks drawn in the order the one-table version drew them: the same export at every size
    no_cust, no_date = rng.random(m) < 0.001, rng.random(m) < 0.001
    no_qty, no_price = rng.random(m) < 0.002, rng.random(m) < 0.002
    schema = pa.schema([("cust_id", pa.string()), ("order_no", pa.string()), ("date", pa.string()),
                        ("qty", pa.int64()), ("price", pa.float64())])
    with pq.ParquetWriter(folder / "transactions.parquet", schema) as writer:
        for lo in range(0, m, TX_ROW_GROUP):  # strings built a part at a time (Arrow's 2 GB per array)
            part = slice(lo, min(m, lo + TX_ROW_GROUP))
            writer.write_table(pa.table({
                "cust_id": pc.if_else(pa.array(no_cust[part]), pa.scalar(None, pa.string()),
                                      _ids("C", line_cust[part], 7)),
                "order_no": _ids("O", line_order[part], 9),
                "date": _dates(line_day[part], mask=no_date[part]),
                "qty": pa.array(qty[part], mask=no_qty[part]),
                "price": pa.array(price[part], mask=no_price[part]),
            }, schema=schema), row_group_size=1 << 20)  # pyarrow's default row group, as before
    del line_order, line_cust, line_day, qty, price

    (folder / "partner.toml").write_text(PARTNER_TOML)
    create_secret(folder / "secret.key")
    return {
        "customers_rows": n, "customer_duplicate_id_rows": int(dup.sum()),
        "transaction_lines": int(m), "orders": n_orders,
        "customers_parquet_mb": round((folder / "customers.parquet").stat().st_size / 2**20, 1),
        "transactions_parquet_mb": round((folder / "transactions.parquet").stat().st_size / 2**20, 1),
    }


# ---------------------------------------------------------------- stages (each in its own process)
def stage_generate(folder: Path, args: argparse.Namespace) -> dict:
    info, secs = timed(generate, folder, args.customers, args.transactions)
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(), **info}


def stage_check(folder: Path, args: argparse.Namespace) -> dict:
    from fedcrm.config import PartnerConfig
    from fedcrm.data.quality import check_partner

    cfg = PartnerConfig.load(folder / "partner.toml")
    report, secs = timed(check_partner, cfg, "churn")
    c, t = report.cleaning, report.transactions
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(),
            "customers": {"rows_in": c.rows_in, "rows_clean": c.rows_clean, "rows_quarantined": c.rows_quarantined,
                          "duplicates": c.duplicates, "quarantined_by_reason": c.quarantined_by_reason},
            "transactions": None if t is None else {
                "rows_in": t.rows_in, "rows_clean": t.rows_clean, "rows_quarantined": t.rows_quarantined,
                "quarantined_by_reason": t.quarantined_by_reason},
            "k_anonymity": report.k_anonymity.k}


def _prepare(folder: Path, engine: str) -> dict:
    """`prepare(cfg, "churn", use_cache=False)` with the purchases in `engine`; records which
    engine did the purchases (and its own stage timings) through the one function it calls."""
    os.environ["FEDCRM_EVENTS_ENGINE"] = engine
    from fedcrm.config import PartnerConfig
    from fedcrm.data import prepare as prep

    seen: dict = {}
    inner = prep.purchase_activity

    def recorded(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = inner(*a, **k)
        seen.update(engine=out.engine, fallback=out.fallback, timings=out.timings,
                    lines=out.report.model_dump(include={"rows_in", "rows_clean", "rows_quarantined",
                                                         "quarantined_by_reason", "filled_by_field"}))
        return out

    prep.purchase_activity = recorded
    cfg = PartnerConfig.load(folder / "partner.toml")
    cfg = cfg.model_copy(update={"work_dir": cfg.work_dir.parent / f"work_{engine}"})
    data, secs = timed(prep.prepare, cfg, "churn", use_cache=False)
    s = data.summary
    tags = cfg.work_dir / "tags.parquet"
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(), "purchases": seen, "n_train": s.n_train,
            "n_test": s.n_test, "n_features": s.n_features, "label_rate_train": round(s.label_rate_train, 4),
            "tags_rows": _parquet_rows(tags) if tags.is_file() else None,
            "arrays_sha256": _arrays_digest(data)}


def stage_prepare(folder: Path, args: argparse.Namespace) -> dict:
    return _prepare(folder, "auto")


def stage_prepare_pandas(folder: Path, args: argparse.Namespace) -> dict:
    return _prepare(folder, "pandas")


def _arrays_digest(data) -> str:  # noqa: ANN001
    """sha256 of the prepared arrays: the engines' `prepare` outputs compared bit for bit."""
    import hashlib

    digest = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


REFERENCE_SQL = """
WITH lines AS (
  SELECT nullif(trim(cust_id), '') AS c, nullif(trim(order_no), '') AS o,
         CAST(try_strptime(trim(date), '%Y-%m-%d') AS DATE) AS d, CAST(qty AS DOUBLE) AS q, price AS p
  FROM read_parquet('{path}')
), clean AS (
  SELECT * FROM lines
  WHERE c IS NOT NULL AND d IS NOT NULL AND NOT coalesce(q < 0 OR p < 0 OR p > {threshold} OR d > DATE '{as_of}', false)
), bought AS (
  SELECT c, min(d) AS d, fsum(coalesce(q, {fill_q}) * coalesce(p, {fill_p})) AS value FROM clean GROUP BY o, c
)
SELECT c, date_diff('day', max(d) FILTER (d <= DATE '{cutoff}'), DATE '{cutoff}') AS recency_days,
       count(*) FILTER (d <= DATE '{cutoff}' AND d > DATE '{start}') AS frequency,
       fsum(value) FILTER (d <= DATE '{cutoff}' AND d > DATE '{start}') AS monetary,
       ln((count(*) FILTER (d <= DATE '{cutoff}' AND d > DATE '{recent}') + 1.0)
          / (count(*) FILTER (d <= DATE '{recent}' AND d > DATE '{previous}') + 1.0)) AS activity_trend,
       bool_or(d > DATE '{cutoff}' AND d <= DATE '{horizon}') AS bought_after
FROM bought GROUP BY c
"""


def stage_duckdb_reference(folder: Path, args: argparse.Namespace) -> dict:
    """The purchases work as one would write it straight in DuckDB (threads 2, the same
    memory limit and a spill folder): trimmed ids, one date format, the price outlier
    threshold and the two fill medians as separate exact queries, then lines -> purchases ->
    per-customer features and the churn flag, fetched as Arrow. No quarantine rows, no
    report, no pandas-equivalent parsing: the engine's own time for the same aggregation."""
    from datetime import timedelta

    import duckdb

    from fedcrm.config import PartnerConfig
    from fedcrm.data.events_duckdb import MEMORY_LIMIT, THREADS
    from fedcrm.data.prepare import as_of_date

    cfg = PartnerConfig.load(folder / "partner.toml")
    as_of, a = as_of_date(cfg), cfg.activity
    cutoff = a.cutoff_for(as_of)
    spill = folder / "reference_spill"
    t0 = time.perf_counter()
    con = duckdb.connect(config={"threads": THREADS, "memory_limit": MEMORY_LIMIT, "temp_directory": str(spill),
                                 "preserve_insertion_order": False})
    path = cfg.transactions.path
    alive = f"""FROM read_parquet('{path}') WHERE nullif(trim(cust_id), '') IS NOT NULL
                AND try_strptime(trim(date), '%Y-%m-%d') IS NOT NULL"""

    def median(expr: str, where: str) -> float:
        """Exact, from value counts (DuckDB's median() holds every value: out of memory at 100M)."""
        return con.sql(f"""WITH h AS (SELECT {expr} AS v, count(*) AS c {alive} AND {where} AND {expr} IS NOT NULL
                                      GROUP BY v),
                                r AS (SELECT v, sum(c) OVER (ORDER BY v) AS upto, sum(c) OVER () AS n FROM h)
                           SELECT (min(v) FILTER (upto >= (n + 1) // 2) + min(v) FILTER (upto >= n // 2 + 1)) / 2
                           FROM r""").fetchall()[0][0]

    threshold = cfg.cleaning.outlier_spend_multiple * median("price", "price > 0")
    clean = (f"NOT coalesce(qty < 0 OR price < 0 OR price > {threshold} "
             f"OR CAST(try_strptime(trim(date), '%Y-%m-%d') AS DATE) > DATE '{as_of}', false)")
    fill_q, fill_p = median("CAST(qty AS DOUBLE)", clean), median("price", clean)
    days = {"cutoff": cutoff, "start": cutoff - timedelta(days=a.window_days),
            "recent": cutoff - timedelta(days=a.trend_days), "previous": cutoff - timedelta(days=2 * a.trend_days),
            "horizon": cutoff + timedelta(days=a.horizon_days), "as_of": as_of}
    table = con.sql(REFERENCE_SQL.format(path=path, threshold=threshold, fill_q=fill_q, fill_p=fill_p,
                                         **{k: v.isoformat() for k, v in days.items()})).to_arrow_table()
    secs = round(time.perf_counter() - t0, 3)
    con.close()
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(), "customers_out": table.num_rows,
            "customers_with_purchases_before_cutoff": table.num_rows - table.column("recency_days").null_count,
            "memory_limit": MEMORY_LIMIT, "threads": THREADS}


def stage_purchases(folder: Path, args: argparse.Namespace) -> dict:
    """The part built here alone: `prepare.purchase_activity` for the churn task (DuckDB),
    over the clean customers' ids, as `add_activity` calls it; the customers are cleaned
    first, outside the clock, in the same process (their memory counts in the peak)."""
    import pandas as pd

    from fedcrm.config import PartnerConfig
    from fedcrm.data import prepare as prep

    cfg = PartnerConfig.load(folder / "partner.toml")
    cfg = cfg.model_copy(update={"work_dir": cfg.work_dir.parent / "work_purchases"})
    if getattr(args, "without_customers", False):
        ids = pd.Index([], dtype=str)
    else:
        _, cleaned = prep.load_and_clean(cfg, key_fields=["churned"])
        ids = pd.Index(cleaned.clean["customer_id"].astype(str))
        del cleaned
    before = peak_rss_mb()
    out, secs = timed(prep.purchase_activity, cfg, prep.task_activity(cfg, "churn"), "no-purchase", "", ids)
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(), "peak_rss_mb_before_purchases": before,
            "engine": out.engine, "fallback": out.fallback, "stage_seconds": out.timings,
            "lines": out.report.model_dump(include={"rows_in", "rows_clean", "rows_quarantined",
                                                    "quarantined_by_reason"}),
            "customers_with_features": len(out.features), "quarantine_rows": len(out.quarantine)}


def stage_breakdown(folder: Path, args: argparse.Namespace) -> dict:
    """`prepare(cfg, "churn", use_cache=False)` taken apart, step by step in its order."""
    import numpy as np
    import pandas as pd

    from fedcrm.config import PartnerConfig
    from fedcrm.data import prepare as prep
    from fedcrm.data.activity import marketing_tags
    from fedcrm.data.clean import Cleaner
    from fedcrm.data.ingest import apply_mapping, read_table
    from fedcrm.data.pseudonymise import PID, pseudonymise
    from fedcrm.data.secret import load_secret
    from fedcrm.data.standardise import standardise

    cfg = PartnerConfig.load(folder / "partner.toml")
    cfg = cfg.model_copy(update={"work_dir": cfg.work_dir.parent / "work_breakdown"})
    step = Steps(folder / "_breakdown_partial.json")
    t_all = time.perf_counter()
    task = "churn"
    key = step("load_secret", load_secret, cfg.secret_file)
    layout = step("partner_layout + label_field", prep.partner_layout, cfg)
    target = prep.label_field(cfg, task)
    fingerprint = step("dataset_fingerprint (sha256 of both files)", prep.dataset_fingerprint, cfg)
    as_of = prep.as_of_date(cfg)

    # load_and_clean: the customers export (pandas)
    c_map = cfg.customers
    c_read = step("customers: read_table", read_table, c_map)
    raw = step("customers: apply_mapping", apply_mapping, c_read, c_map, cfg.name)
    del c_read
    typed = step("customers: standardise", standardise, raw, c_map)
    keys = [*c_map.schema.key_fields(), *([target] if target != prep.DERIVED_LABEL else [])]
    cleaner = Cleaner(cfg.cleaning, as_of, key_fields=keys, schema=c_map.schema, dedupe_by=cfg.dedupe_field)
    cleaned = step("customers: Cleaner", cleaner, typed.frame, typed.unreadable)
    del typed

    # add_activity: the purchases export (DuckDB), then the join and the tags (pandas)
    activity = prep.task_activity(cfg, task)
    ids = step("customer ids as text", lambda: pd.Index(cleaned.clean["customer_id"].astype(str)))
    label = prep.task_of(cfg, task).label
    derived = label.derived if target == prep.DERIVED_LABEL else None
    bought = step("purchases: purchase_activity (DuckDB: clean + aggregate)", prep.purchase_activity, cfg, activity,
                  derived, label.category or cfg.activity.target_category or "", ids)
    step("purchases: write the quarantine (parquet)", prep.write_quarantine_rows, cfg, "transactions", bought.quarantine)

    def join() -> pd.DataFrame:  # the rest of prepare.add_activity
        out = cleaned.clean.copy()
        prep.join_purchases(out, bought, ids, activity, derived is not None)
        return out

    with_activity = step("join features onto customers", join)
    tags = step("marketing_tags", marketing_tags, bought.features, activity)
    pseudo, lookup = step("pseudonymise (HMAC per customer)", pseudonymise, with_activity, key,
                          cfg.contract_model.identifiers())
    step("write_tags (parquet)", prep.write_tags, cfg, tags, key, lookup)
    x = step("layout matrix", layout.fixed_part().matrix, pseudo, as_of)
    y = pseudo[target].to_numpy(dtype=np.float32)
    test = step("test_mask", prep.test_mask, pseudo[PID], 0.2)
    step("write quarantine + pseudonym lookup (parquet)", prep._write_local_outputs, cfg, raw, cleaned.quarantine,
         lookup)

    def save() -> None:
        summary = prep.PreparedSummary(partner=cfg.name, task=task, dataset_fingerprint=fingerprint,
                                       as_of=as_of.isoformat(), n_train=int((~test).sum()), n_test=int(test.sum()),
                                       label_rate_train=float(y[~test].mean()), n_features=x.shape[1],
                                       features=layout.fixed_part().names(), cleaning=cleaned.report)
        prep._save(cfg.work_dir / "prepared" / "breakdown",
                   prep.PreparedData(x[~test], y[~test], x[test], y[test], summary))

    step("save arrays (npz)", save)
    total = round(time.perf_counter() - t_all, 3)
    customers = [r for r in step.rows if r["step"].startswith("customers:")]
    rest = [r for r in step.rows if not r["step"].startswith(("customers:", "purchases:"))]
    return {"seconds_total": total, "seconds_steps_sum": round(sum(r["seconds"] for r in step.rows), 3),
            "peak_rss_mb": peak_rss_mb(), "steps": step.rows,
            "top_steps_by_seconds": [r["step"] for r in sorted(step.rows, key=lambda r: -r["seconds"])[:5]],
            "seconds_by_part": {"customers (pandas)": round(sum(r["seconds"] for r in customers), 3),
                                "purchases (DuckDB + quarantine file)": round(sum(
                                    r["seconds"] for r in step.rows if r["step"].startswith("purchases:")), 3),
                                "join, tags, pseudonyms, matrix, files (pandas)": round(sum(
                                    r["seconds"] for r in rest), 3)},
            "purchases_engine": bought.engine, "purchases_fallback": bought.fallback,
            "purchases_stage_seconds": bought.timings}


STAGES = {"generate": stage_generate, "prepare": stage_prepare, "prepare_pandas": stage_prepare_pandas,
          "purchases": stage_purchases, "duckdb_reference": stage_duckdb_reference, "check": stage_check,
          "breakdown": stage_breakdown}
DEFAULT_STAGES = "prepare,purchases,duckdb_reference,prepare_pandas,check,breakdown"


def run_stage(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run one stage in a fresh interpreter; its result comes back through a JSON file, its
    peak RSS and CPU seconds from wait4 (the child's own, whatever it reports)."""
    out = folder / f"_{name}.json"
    for stale in (out, folder / f"_{name}_partial.json"):  # a reused folder: no earlier run's result
        stale.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--data", str(folder),
           "--customers", str(args.customers), "--transactions", str(args.transactions)]
    print(f"[prep_scale] {args.customers}/{args.transactions} {name} ...", file=sys.stderr, flush=True)
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])})
    _, stderr = proc.communicate()
    wall = round(time.perf_counter() - t0, 1)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # cumulative: the difference is this child's
    cpu = round(usage.ru_utime + usage.ru_stime - run_stage.cpu_so_far, 1)
    run_stage.cpu_so_far = usage.ru_utime + usage.ru_stime
    context = {"process_wall_seconds": wall, "process_cpu_seconds": cpu, "load_average_1min_before": load_before,
               "load_average_1min_after": round(os.getloadavg()[0], 2)}
    if proc.returncode != 0 or not out.is_file():
        err = {"error": f"stage {name} exited with {proc.returncode}"
                        + (" (killed: out of memory?)" if proc.returncode in (-9, 137) else "")
                        + (" (stopped at the RSS cap)" if proc.returncode == 3 else ""),
               "stderr_tail": stderr[-3000:], **context}
        partial = folder / f"_{name}_partial.json"
        if partial.is_file():
            err["steps_before_it_stopped"] = json.loads(partial.read_text())
        print(f"[prep_scale] {name} FAILED: {err['error']}\n{err['stderr_tail']}", file=sys.stderr, flush=True)
        return err
    result = json.loads(out.read_text())
    result.update(context)
    print(f"[prep_scale] {name}: {result.get('seconds', result.get('seconds_total'))} s, "
          f"peak {result.get('peak_rss_mb')} MB, cpu {cpu} s", file=sys.stderr, flush=True)
    return result


run_stage.cpu_so_far = 0.0


def measure_size(n_customers: int, n_lines: int, stages: list[str], args: argparse.Namespace) -> dict:
    args.customers, args.transactions = n_customers, n_lines
    target = TARGETS.get((n_customers, n_lines), {})
    out: dict = {"customers": n_customers, "transaction_lines": n_lines, "targets": target}
    parent = ROOT / ".work"
    parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix="prep_scale-") as tmp:
        folder = Path(tmp) / "partner"
        if args.data_dir is not None:  # kept, and reused when already generated
            folder = args.data_dir / f"{n_customers}_{n_lines}"
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "_generate.json").is_file() and (folder / "transactions.parquet").is_file():
            results = {"generate": {**json.loads((folder / "_generate.json").read_text()), "reused": str(folder)}}
        else:
            results = {"generate": run_stage("generate", folder, args)}
        if "error" not in results["generate"]:
            for name in stages:
                if name in ("prepare_pandas", "check") and n_lines > PANDAS_MAX_LINES and not args.stages:
                    results[name] = {"skipped": f"every purchase line in pandas: above {PANDAS_MAX_LINES} lines "
                                                "only when asked for (--stages)"}
                    continue
                results[name] = run_stage(name, folder, args)
    breakdown = results.pop("breakdown", None)
    gen = results["generate"]
    out["data"] = {k: v for k, v in gen.items() if k not in ("seconds", "peak_rss_mb", "source_sha256")}
    out["seconds"] = {k: v.get("seconds") for k, v in results.items()}
    out["cpu_seconds"] = {k: v.get("process_cpu_seconds") for k, v in results.items()}
    out["peak_rss_mb"] = {k: v.get("peak_rss_mb") for k, v in results.items()}
    prep = results.get("prepare", {})
    if "error" in prep or "seconds" not in prep:
        out["targets_met"] = {"completes": False, "seconds": False, "peak_rss": False, "all": False}
    else:
        s_ok = prep["seconds"] <= target.get("prepare_seconds_max", float("inf"))
        m_ok = prep["peak_rss_mb"] <= target.get("prepare_peak_rss_mb_max", float("inf"))
        out["targets_met"] = {"completes": True, "seconds": s_ok, "peak_rss": m_ok, "all": s_ok and m_ok}
    both = [results.get(k, {}).get("arrays_sha256") for k in ("prepare", "prepare_pandas")]
    if all(both):
        out["prepare_arrays_equal_across_engines"] = both[0] == both[1]
    out["stages"] = results
    if breakdown is not None:
        out["breakdown"] = breakdown
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000:10000000", help="customers:lines pairs, comma-separated")
    parser.add_argument("--stages", help=f"comma-separated, default {DEFAULT_STAGES} (generate always runs)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--data-dir", type=Path, help="keep the generated exports here (and reuse them)")
    parser.add_argument("--merge", action="store_true", help="keep the output's other sizes (re-measure some only)")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--customers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--transactions", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child process: one stage, result to <data>/_<stage>.json
        rss_cap(float(os.environ.get("PREP_SCALE_RSS_CAP_MB", "15000")))
        before = source_digest()
        result = STAGES[args.stage](args.data, args)
        after = source_digest()
        result["source_sha256"] = before if before == after else f"{before} -> {after} (edited during the stage)"
        (args.data / f"_{args.stage}.json").write_text(json.dumps(result))
        return

    from importlib.metadata import version  # nothing heavy imported here: the children's peaks are their own

    stages = (args.stages or DEFAULT_STAGES).split(",")
    out: dict = {
        "benchmark": "partner-side prepare at scale (purchases in DuckDB)",
        "command": " ".join([".venv/bin/python", "benchmarks/prep_scale.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "versions": {k: version(k) for k in ("numpy", "pandas", "pyarrow", "duckdb")}},
        "targets": {f"{c}:{n}": t for (c, n), t in TARGETS.items()},
        "timing_note": "seconds: inside the stage's own interpreter, after imports and config load; peak_rss_mb: "
                       "the stage process's ru_maxrss; cpu_seconds: user + system of the stage process (2 cores: "
                       "DuckDB runs 2 threads); the machine is shared, see each stage's load averages",
        "sizes": [],
    }
    source_start = source_digest()
    kept = []
    if args.merge and args.output.is_file():  # the other sizes of an earlier run stay, with their command
        earlier = json.loads(args.output.read_text())
        kept = [dict(s, command=s.get("command", earlier.get("command")), date=s.get("date", earlier.get("date")))
                for s in earlier.get("sizes", [])]
    measured = []
    for pair in args.sizes.split(","):
        n_c, n_l = (int(x) for x in pair.split(":"))
        kept = [s for s in kept if (s["customers"], s["transaction_lines"]) != (n_c, n_l)]
        measured.append(measure_size(n_c, n_l, stages, args))
        measured[-1].update(command=out["command"], date=time.strftime("%Y-%m-%d %H:%M:%S"))
        out["sizes"] = sorted(kept + measured, key=lambda s: (s["customers"], s["transaction_lines"]))
        out["package_source"] = {"sha256_at_start": source_start, "sha256_at_end": source_digest()}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(out, indent=2) + "\n")  # partial results survive a stop
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
