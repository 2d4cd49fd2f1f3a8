"""Issue 13: pandas vs Polars vs DuckDB for the partner-side prep, measured side by side.

    .venv/bin/python benchmarks/engine_choice.py                      # 1M customers / 10M lines (+ 200k / 2M)
    .venv/bin/python benchmarks/engine_choice.py --sizes 10000:100000 --runs 1   # quick check
    ... --engines polars,duckdb --duckdb-memory-limit 1GB --duckdb-cte staged     # DuckDB under a hard limit

One unit of work, three implementations, same outputs:
  customers  read the export, parse/clean the typed columns (missing tokens, ids trimmed,
             dates, the churn flag), drop rows with a missing key field, dedupe by customer id
             (newest record = last in file order wins), drop abnormal rows (negative /
             >multiple x median spend, future signup) → the clean customers;
  purchases  read the line log, clean it (missing id/date, negative quantities or prices,
             price outliers, future dates; missing quantity/price filled with the clean
             median), lines of one order → one purchase (date = min, value = sum qty*price);
  features   per clean customer: recency_days / frequency / monetary / activity_trend over
             the RFM window before the cutoff, and the derived churn label (no purchase in
             (cutoff, cutoff + horizon]).
(a) pandas: the package's own functions (`load_and_clean`, `load_events`, `purchases`,
    `activity_features`, `churn_labels`, and the join of `prepare.add_activity`);
(b) Polars: lazy `scan_parquet`, `collect(engine="streaming")`;
(c) DuckDB: SQL over `read_parquet`, `SET threads=2`, `SET memory_limit`.

Data: prep_scale.py's own `generate` (same seed), in /work/tmp/engine-data (deleted at the
end). Each engine runs in its own fresh interpreter; peak RSS is that child's ru_maxrss
(os.wait4 on the child, and the child's own getrusage at the end of the compute); the
figures are the median of --runs runs. Agreement: customer counts equal, same customer ids,
and every feature/label equal within 1e-6 (all customers compared, not only a sample).
Results: benchmarks/results/engine_choice.json ("extra_runs" there: the single runs with other
sizes/options, each with its command). DuckDB modes (--duckdb-cte): default = one SQL query;
staged = the three exact medians (outlier threshold, fill values) as separate queries first,
then literals in the main query: the one-query form needed > 2 GB at 30M lines whatever
memory_limit said (exact medians cannot spill), the staged form stays near the limit.
Timings for DuckDB exclude the extra count query run after the clock (agreement bookkeeping).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "engine_choice.json"
DATA_ROOT = Path("/work/tmp/engine-data")
ENGINES = ("pandas", "polars", "duckdb")
FEATURES = ("recency_days", "frequency", "monetary", "activity_trend", "churn_derived")
TOL = 1e-6
DUCKDB_MEMORY_LIMIT = os.environ.get("ENGINE_CHOICE_DUCKDB_MEMORY_LIMIT", "4GB")  # default: prep_scale's RSS target


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# ---------------------------------------------------------------- the shared parameters
def _params(folder: Path) -> dict:
    """Everything the engines need from the partner config, read through the package."""
    from fedcrm.config import PartnerConfig
    from fedcrm.data.prepare import as_of_date
    from fedcrm.data.standardise import MISSING_TOKENS

    cfg = PartnerConfig.load(folder / "partner.toml")
    as_of = as_of_date(cfg)
    a = cfg.activity
    c, t = cfg.customers, cfg.transactions
    assert c.id_case == "keep" and t.id_case == "keep" and c.date_formats == ["%Y-%m-%d"] == t.date_formats
    assert c.money_unit == "units" == t.money_unit and not c.codes and not t.codes
    assert cfg.cleaning.dedupe_by == "customer_id" and not cfg.cleaning.defaults
    return {
        "cfg": cfg, "as_of": as_of, "cutoff": a.cutoff_for(as_of), "window": a.window_days, "trend": a.trend_days,
        "horizon": a.horizon_days, "multiple": cfg.cleaning.outlier_spend_multiple,
        "missing": sorted(MISSING_TOKENS), "true": [v.lower() for v in c.true_values],
        "false": [v.lower() for v in c.false_values],
        "c_path": str(c.path), "c": dict(c.columns), "t_path": str(t.path), "t": dict(t.columns),
    }


# ---------------------------------------------------------------- (a) pandas: today's code
def run_pandas(p: dict):
    import numpy as np
    import pandas as pd

    from fedcrm.data.activity import activity_features, churn_labels, purchases
    from fedcrm.data.prepare import load_and_clean, load_events

    cfg = p["cfg"]
    _raw, cleaned = load_and_clean(cfg, key_fields=["customer_id", "churned"])
    _raw_tx, tx = load_events(cfg.transactions, cfg.name, cfg.cleaning, p["as_of"])
    del _raw_tx
    bought = purchases(tx.clean)
    feats = activity_features(bought, p["cutoff"], cfg.activity)
    customers = cleaned.clean
    ids = pd.Index(customers["customer_id"].astype(str))  # prepare.add_activity, verbatim
    joined = feats.reindex(ids)
    joined["recency_days"] = joined["recency_days"].fillna(cfg.activity.window_days)
    joined = joined.fillna(0.0)
    label = churn_labels(bought, ids, p["cutoff"], cfg.activity.horizon_days)
    out = pd.DataFrame({"customer_id": ids.to_numpy(dtype=object)})
    for col in ("recency_days", "frequency", "monetary", "activity_trend"):
        out[col] = joined[col].to_numpy(dtype=np.float64)
    out["churn_derived"] = label.to_numpy().astype(np.float64)
    counts = {"customers_clean": len(customers), "customer_duplicates": cleaned.report.duplicates,
              "lines_clean": len(tx.clean), "purchases": len(bought), "customers_with_purchases": len(feats)}
    return out, counts


# ---------------------------------------------------------------- (b) Polars
def run_polars(p: dict):
    import polars as pl

    miss, c, t = p["missing"], p["c"], p["t"]

    def text(name: str) -> pl.Expr:  # ID/TEXT: trimmed, missing tokens → null
        v = pl.col(name).cast(pl.String).str.strip_chars()
        return pl.when(v.str.to_lowercase().is_in(miss)).then(None).otherwise(v)

    def day(name: str) -> pl.Expr:  # DATE: one format, strict; unreadable → null
        return text(name).str.strptime(pl.Date, "%Y-%m-%d", strict=False)

    def number(name: str) -> pl.Expr:  # typed Parquet numbers stay numbers
        return pl.col(name).cast(pl.Float64)

    as_of, cutoff = pl.lit(p["as_of"]), p["cutoff"]
    streaming = {"engine": "streaming"}

    # customers ------------------------------------------------------------------------
    token = pl.col(c["churned"]).cast(pl.String).str.strip_chars().str.to_lowercase()
    cust = (pl.scan_parquet(p["c_path"]).with_row_index("_row", offset=1)
            .select("_row", text(c["customer_id"]).alias("customer_id"),
                    day(c["signup_date"]).alias("signup_date"), number(c["monthly_spend"]).alias("monthly_spend"),
                    pl.when(token.is_in(p["true"])).then(1.0).when(token.is_in(p["false"])).then(0.0)
                    .otherwise(None).alias("churned"))
            .filter(pl.col("customer_id").is_not_null() & pl.col("churned").is_not_null()))
    keyed = cust.collect(**streaming)
    alive = keyed.group_by("customer_id").agg(pl.all().sort_by("_row").last())  # newest record wins
    duplicates = keyed.height - alive.height
    median = alive.filter(pl.col("monthly_spend") > 0)["monthly_spend"].median()
    spend = pl.col("monthly_spend")
    customers = alive.filter(~((spend < 0) | (spend > p["multiple"] * median) | (pl.col("signup_date") > as_of))
                             .fill_null(False)).select("customer_id")

    # purchase lines --------------------------------------------------------------------
    lines = (pl.scan_parquet(p["t_path"])
             .select(text(t["customer_id"]).alias("customer_id"), day(t["tx_date"]).alias("tx_date"),
                     text(t["tx_id"]).alias("tx_id"), number(t["quantity"]).alias("quantity"),
                     number(t["unit_price"]).alias("unit_price"))
             .filter(pl.col("customer_id").is_not_null() & pl.col("tx_date").is_not_null()))
    price_median = lines.filter(pl.col("unit_price") > 0).select(pl.col("unit_price").median()).collect(**streaming).item()
    q, u = pl.col("quantity"), pl.col("unit_price")
    clean = lines.filter(~((q < 0) | (u < 0) | (u > p["multiple"] * price_median) | (pl.col("tx_date") > as_of))
                         .fill_null(False))
    fills = clean.select(q.median().alias("q"), u.median().alias("u")).collect(**streaming).row(0, named=True)
    n_lines = clean.select(pl.len()).collect(**streaming).item()
    bought = (clean.group_by("tx_id", "customer_id")  # lines of one order → one purchase
              .agg(pl.col("tx_date").min().alias("date"), (q.fill_null(fills["q"]) * u.fill_null(fills["u"])).sum()
                   .alias("value")))

    end = pl.lit(cutoff)
    d = pl.col("date")
    days_before = (end - d).dt.total_days()
    agg = (bought.group_by("customer_id").agg(
        pl.len().alias("purchases"),
        days_before.filter(d <= end).min().alias("recency_days"),
        (d <= end).sum().alias("n_before"),
        ((d <= end) & (days_before < p["window"])).sum().alias("frequency"),
        pl.col("value").filter((d <= end) & (days_before < p["window"])).sum().alias("monetary"),
        ((d <= end) & (days_before < p["trend"])).sum().alias("freq_recent"),
        ((days_before >= p["trend"]) & (days_before < 2 * p["trend"])).sum().alias("freq_previous"),
        ((d > end) & ((d - end).dt.total_days() <= p["horizon"])).sum().alias("bought_after"),
    ).collect(**streaming))
    n_purchases = int(agg["purchases"].sum())
    n_with = agg.filter(pl.col("n_before") > 0).height
    out = (customers.join(agg, on="customer_id", how="left")
           .select("customer_id",
                   pl.col("recency_days").fill_null(p["window"]).cast(pl.Float64),
                   pl.col("frequency").fill_null(0).cast(pl.Float64),
                   pl.col("monetary").fill_null(0.0).cast(pl.Float64),
                   ((pl.col("freq_recent").fill_null(0) + 1) / (pl.col("freq_previous").fill_null(0) + 1)).log()
                   .alias("activity_trend"),
                   (pl.col("bought_after").fill_null(0) == 0).cast(pl.Float64).alias("churn_derived")))
    counts = {"customers_clean": out.height, "customer_duplicates": duplicates, "lines_clean": n_lines,
              "purchases": n_purchases, "customers_with_purchases": n_with}
    return out, counts


# ---------------------------------------------------------------- (c) DuckDB
def run_duckdb(p: dict, tmp: Path):
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{tmp / 'duckdb_spill'}'")
    con.execute("SET preserve_insertion_order = false")
    miss = ", ".join(f"'{m}'" for m in p["missing"])
    trues = ", ".join(f"'{v}'" for v in p["true"])
    falses = ", ".join(f"'{v}'" for v in p["false"])
    c, t = p["c"], p["t"]

    def text(col: str) -> str:  # ID/TEXT: trimmed, missing tokens → null
        v = f"trim(CAST(\"{col}\" AS VARCHAR))"
        return f"CASE WHEN lower({v}) IN ({miss}) THEN NULL ELSE {v} END"

    def day(col: str) -> str:
        return f"CAST(try_strptime({text(col)}, '%Y-%m-%d') AS DATE)"

    as_of, cutoff = p["as_of"].isoformat(), p["cutoff"].isoformat()
    mode = os.environ.get("ENGINE_CHOICE_DUCKDB_CTE", "default")
    nm = "NOT MATERIALIZED " if mode in ("inline", "staged") else ""
    sql = f"""
    WITH raw_c AS (
      SELECT file_row_number AS _row, {text(c['customer_id'])} AS customer_id,
             {day(c['signup_date'])} AS signup_date, CAST("{c['monthly_spend']}" AS DOUBLE) AS monthly_spend,
             CASE WHEN lower(trim(CAST("{c['churned']}" AS VARCHAR))) IN ({trues}) THEN 1.0
                  WHEN lower(trim(CAST("{c['churned']}" AS VARCHAR))) IN ({falses}) THEN 0.0 END AS churned
      FROM read_parquet('{p['c_path']}', file_row_number = true)
    ), keyed AS (
      SELECT * FROM raw_c WHERE customer_id IS NOT NULL AND churned IS NOT NULL
    ), alive AS (  -- newest record (last in the file) per id
      SELECT * FROM keyed QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY _row DESC) = 1
    ), spend AS (
      SELECT median(monthly_spend) AS m FROM alive WHERE monthly_spend > 0
    ), customers AS (
      SELECT customer_id FROM alive, spend
      WHERE NOT coalesce(monthly_spend < 0 OR monthly_spend > {p['multiple']} * spend.m
                         OR signup_date > DATE '{as_of}', false)
    ), lines AS {nm}(
      SELECT * FROM (
        SELECT {text(t['customer_id'])} AS customer_id, {day(t['tx_date'])} AS tx_date, {text(t['tx_id'])} AS tx_id,
               CAST("{t['quantity']}" AS DOUBLE) AS quantity, CAST("{t['unit_price']}" AS DOUBLE) AS unit_price
        FROM read_parquet('{p['t_path']}'))
      WHERE customer_id IS NOT NULL AND tx_date IS NOT NULL
    ), price AS (
      SELECT median(unit_price) AS m FROM lines WHERE unit_price > 0
    ), clean AS {nm}(
      SELECT lines.* FROM lines, price
      WHERE NOT coalesce(quantity < 0 OR unit_price < 0 OR unit_price > {p['multiple']} * price.m
                         OR tx_date > DATE '{as_of}', false)
    ), fills AS (
      SELECT median(quantity) AS q, median(unit_price) AS u, count(*) AS n FROM clean
    ), bought AS (  -- lines of one order → one purchase
      SELECT customer_id, min(tx_date) AS d, sum(coalesce(quantity, fills.q) * coalesce(unit_price, fills.u)) AS value
      FROM clean, fills GROUP BY tx_id, customer_id
    ), agg AS (
      SELECT customer_id, count(*) AS purchases, count(*) FILTER (d <= DATE '{cutoff}') AS n_before,
             min(DATE '{cutoff}' - d) FILTER (d <= DATE '{cutoff}') AS recency_days,
             count(*) FILTER (d <= DATE '{cutoff}' AND DATE '{cutoff}' - d < {p['window']}) AS frequency,
             sum(value) FILTER (d <= DATE '{cutoff}' AND DATE '{cutoff}' - d < {p['window']}) AS monetary,
             count(*) FILTER (d <= DATE '{cutoff}' AND DATE '{cutoff}' - d < {p['trend']}) AS freq_recent,
             count(*) FILTER (DATE '{cutoff}' - d >= {p['trend']} AND DATE '{cutoff}' - d < {2 * p['trend']})
               AS freq_previous,
             count(*) FILTER (d > DATE '{cutoff}' AND d - DATE '{cutoff}' <= {p['horizon']}) AS bought_after
      FROM bought GROUP BY customer_id
    )
    SELECT customers.customer_id,
           CAST(coalesce(recency_days, {p['window']}) AS DOUBLE) AS recency_days,
           CAST(coalesce(frequency, 0) AS DOUBLE) AS frequency,
           CAST(coalesce(monetary, 0.0) AS DOUBLE) AS monetary,
           ln((coalesce(freq_recent, 0) + 1.0) / (coalesce(freq_previous, 0) + 1.0)) AS activity_trend,
           CAST(coalesce(bought_after, 0) = 0 AS DOUBLE) AS churn_derived
    FROM customers LEFT JOIN agg USING (customer_id)
    """
    if mode == "staged":  # the three medians first, each its own query; then literals in the main query
        m = con.sql(sql.split("), price AS (")[0] + ") SELECT median(unit_price) FROM lines WHERE unit_price > 0").fetchall()[0][0]
        sql = sql.replace("SELECT median(unit_price) AS m FROM lines WHERE unit_price > 0", f"SELECT {m!r}::DOUBLE AS m")
        q, u, n = con.sql(sql.split("), fills AS (")[0] + ") SELECT median(quantity), median(unit_price), count(*) FROM clean").fetchall()[0]
        sql = sql.replace("SELECT median(quantity) AS q, median(unit_price) AS u, count(*) AS n FROM clean",
                          f"SELECT {q!r}::DOUBLE AS q, {u!r}::DOUBLE AS u, {n}::BIGINT AS n")
    out = con.sql(sql).to_arrow_table()
    return out, con, sql


def _duckdb_counts(p: dict, con, sql: str) -> dict:
    head = sql.rsplit("SELECT customers.customer_id", 1)[0]
    row = con.execute(head + """
    SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM keyed) - (SELECT count(*) FROM alive),
           (SELECT n FROM fills), (SELECT sum(purchases) FROM agg), (SELECT count(*) FROM agg WHERE n_before > 0)
    """).fetchone()
    return dict(zip(["customers_clean", "customer_duplicates", "lines_clean", "purchases", "customers_with_purchases"],
                    [int(v) for v in row]))


# ---------------------------------------------------------------- child: one engine, one run
def child(engine: str, folder: Path, out_file: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = _params(folder)
    t0 = time.perf_counter()
    if engine == "pandas":
        import pandas  # noqa: F401  (imports before the clock for every engine)
        t0 = time.perf_counter()
        frame, counts = run_pandas(p)
        seconds = time.perf_counter() - t0
        table = pa.Table.from_pandas(frame, preserve_index=False)
    elif engine == "polars":
        import polars  # noqa: F401
        t0 = time.perf_counter()
        frame, counts = run_polars(p)
        seconds = time.perf_counter() - t0
        table = frame.to_arrow()
    else:
        import duckdb  # noqa: F401
        t0 = time.perf_counter()
        table, con, sql = run_duckdb(p, folder)
        seconds = time.perf_counter() - t0
        counts = _duckdb_counts(p, con, sql)  # after the clock: bookkeeping for the agreement check
    peak = _peak_mb()
    pq.write_table(table, out_file.with_suffix(".parquet"))
    out_file.write_text(json.dumps({"seconds": round(seconds, 3), "peak_rss_mb": peak, "counts": counts}))


def run_child(engine: str, folder: Path, tag: str) -> dict:
    out = folder / f"_{engine}_{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--data", str(folder),
           "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stderr = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"exit {proc.returncode}", "stderr_tail": stderr[-3000:]}
    r = json.loads(out.read_text())
    r["process_wall_seconds"] = round(wall, 2)
    r["child_maxrss_mb_wait4"] = round(usage.ru_maxrss / 1024.0, 1)
    r["result_file"] = str(out.with_suffix(".parquet"))
    return r


# ---------------------------------------------------------------- agreement
def compare(files: dict[str, str], sample: int = 20000) -> dict:
    import numpy as np
    import pandas as pd

    frames = {e: pd.read_parquet(f).set_index("customer_id").sort_index() for e, f in files.items()}
    base_name = "pandas" if "pandas" in frames else next(iter(frames))
    base = frames[base_name]
    rng = np.random.default_rng(0)
    sample_ids = base.index[rng.choice(len(base), min(sample, len(base)), replace=False)]
    out = {}
    for engine, frame in frames.items():
        if engine == base_name:
            continue
        same_ids = frame.index.equals(base.index)
        row = {"compared_with": base_name, "rows": len(frame), "rows_base": len(base),
               "same_customer_ids": bool(same_ids)}
        if same_ids:
            diffs = {}
            for col in FEATURES:
                a, b = base[col].to_numpy(), frame[col].to_numpy()
                d = np.abs(a - b)
                bad = d > TOL * np.maximum(1.0, np.abs(a))
                diffs[col] = {"max_abs_diff": float(d.max()) if len(d) else 0.0, "rows_over_tol": int(bad.sum())}
                if bad.any():
                    diffs[col]["examples"] = [
                        {"customer_id": str(i), base_name: float(x), engine: float(y)}
                        for i, x, y in zip(base.index[bad][:5], a[bad][:5], b[bad][:5])]
            s = base.loc[sample_ids, list(FEATURES)].to_numpy() - frame.loc[sample_ids, list(FEATURES)].to_numpy()
            row["features_all_rows"] = diffs
            row["sample_rows"] = len(sample_ids)
            row["sample_max_abs_diff"] = float(np.abs(s).max())
            row["agree"] = all(v["rows_over_tol"] == 0 for v in diffs.values())
        else:
            row["only_in_base"] = [str(x) for x in base.index.difference(frame.index)[:10]]
            row["only_in_engine"] = [str(x) for x in frame.index.difference(base.index)[:10]]
            row["agree"] = False
        out[engine] = row
    return out


# ---------------------------------------------------------------- main
def _helper(*extra: str) -> None:
    """Generation and comparison run in children too: the parent stays small, because a
    child's ru_maxrss starts at the parent's RSS at fork time (Linux keeps the high-water
    mark of the forked image across execve), which would inflate small engines' peaks."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *extra], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"helper {extra} failed:\n{proc.stderr[-3000:]}")


def gen_child(folder: Path, n_customers: int, n_lines: int) -> None:
    from prep_scale import generate  # prep_scale's own generator (same seed, same data)

    t0 = time.perf_counter()
    info = generate(folder, n_customers, n_lines)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    (folder / "_generate.json").write_text(json.dumps(info))


def measure_size(n_customers: int, n_lines: int, runs: int, engines: list[str], deadline: float | None) -> dict:
    folder = DATA_ROOT / f"{n_customers}_{n_lines}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    _helper("--gen", f"{n_customers}:{n_lines}", "--data", str(folder))
    info = json.loads((folder / "_generate.json").read_text())
    gen_s = info.pop("seconds")
    print(f"[engine_choice] generated {n_customers}/{n_lines} in {gen_s} s", file=sys.stderr, flush=True)
    per_engine: dict[str, list[dict]] = {e: [] for e in engines}
    stopped = None
    for i in range(runs):  # interleaved: engine order rotates, so drift hits all alike
        order = engines[i % len(engines):] + engines[:i % len(engines)]
        for engine in order:
            if deadline is not None and time.time() > deadline:
                stopped = f"deadline reached before run {i + 1} of {engine}"
                break
            r = run_child(engine, folder, f"run{i}")
            per_engine[engine].append(r)
            print(f"[engine_choice] {n_customers}/{n_lines} {engine} run {i + 1}: "
                  f"{r.get('seconds', r.get('error'))} s, peak {r.get('peak_rss_mb')} MB", file=sys.stderr, flush=True)
        if stopped:
            break
    summary = {}
    first_files = {}
    for engine, rs in per_engine.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            summary[engine] = {"error": rs[0] if rs else "not run"}
            continue
        first_files[engine] = ok[0]["result_file"]
        summary[engine] = {
            "runs": len(ok),
            "seconds_median": round(statistics.median(r["seconds"] for r in ok), 3),
            "peak_rss_mb_median": round(statistics.median(r["peak_rss_mb"] for r in ok), 1),
            "child_maxrss_mb_wait4_median": round(statistics.median(r["child_maxrss_mb_wait4"] for r in ok), 1),
            "process_wall_seconds_median": round(statistics.median(r["process_wall_seconds"] for r in ok), 2),
            "seconds_all": [r["seconds"] for r in ok], "peak_rss_mb_all": [r["peak_rss_mb"] for r in ok],
            "counts": ok[0]["counts"],
            "counts_stable_across_runs": all(r["counts"] == ok[0]["counts"] for r in ok),
        }
    agreement = {}
    if len(first_files) > 1:
        (folder / "_files.json").write_text(json.dumps(first_files))
        _helper("--compare", "--data", str(folder))
        agreement = json.loads((folder / "_agreement.json").read_text())
    counts_equal = len({json.dumps(v.get("counts"), sort_keys=True) for v in summary.values()}) == 1
    return {"customers": n_customers, "transaction_lines": n_lines, "generate_seconds": gen_s, "data": info,
            "engines": summary, "agreement": agreement, "counts_equal_across_engines": counts_equal,
            "stopped_early": stopped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000:10000000,200000:2000000",
                        help="comma-separated customers:lines pairs, largest first")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--deadline-utc", help="HH:MM: start no new run after this (UTC, today)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--duckdb-cte", choices=["default", "inline", "staged"], default="default",
                        help="inline: the line-level CTEs NOT MATERIALIZED (re-scanned, not buffered); "
                             "staged: inline + the medians computed by separate queries first")
    parser.add_argument("--duckdb-memory-limit", default=DUCKDB_MEMORY_LIMIT,
                        help="DuckDB SET memory_limit (e.g. 1GB to force spilling)")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gen", help=argparse.SUPPRESS)
    parser.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.out)
        return
    if args.gen:
        n_c, n_l = (int(x) for x in args.gen.split(":"))
        gen_child(args.data, n_c, n_l)
        return
    if args.compare:
        files = json.loads((args.data / "_files.json").read_text())
        (args.data / "_agreement.json").write_text(json.dumps(compare(files)))
        return

    os.environ["ENGINE_CHOICE_DUCKDB_MEMORY_LIMIT"] = args.duckdb_memory_limit  # inherited by the children
    os.environ["ENGINE_CHOICE_DUCKDB_CTE"] = args.duckdb_cte
    deadline = None
    if args.deadline_utc:
        import calendar

        hh, mm = (int(x) for x in args.deadline_utc.split(":"))
        now = time.gmtime()
        deadline = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0))
    from importlib.metadata import version  # no engine imported here: the parent stays small

    out = {
        "benchmark": "issue 13: prep engine choice (pandas vs Polars vs DuckDB)",
        "command": " ".join([".venv/bin/python", "benchmarks/engine_choice.py", *sys.argv[1:]]),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "versions": {k: version(k) for k in ("pandas", "polars", "duckdb", "pyarrow", "numpy")},
        "settings": {"runs": args.runs, "duckdb": {"threads": 2, "memory_limit": args.duckdb_memory_limit, "cte": args.duckdb_cte,
                                                   "preserve_insertion_order": False},
                     "polars": {"engine": "streaming", "max_threads": os.environ.get("POLARS_MAX_THREADS",
                                                                                    f"default = {os.cpu_count()}")},
                     "tolerance": f"|a-b| <= {TOL} * max(1, |a|), all customers compared"},
        "timing_note": "seconds = the unit of work inside a fresh interpreter, after imports and config load; "
                       "peak_rss_mb = the child's ru_maxrss at the end of the work (its whole life, incl. imports); "
                       "medians of the runs; engine order rotated between runs",
        "parent_rss_mb_before_runs": None,
        "sizes": [],
    }
    out["parent_rss_mb_before_runs"] = _peak_mb()  # what a child's ru_maxrss could inherit at most
    t_all = time.perf_counter()
    try:
        for pair in args.sizes.split(","):
            n_c, n_l = (int(x) for x in pair.split(":"))
            if deadline is not None and time.time() > deadline:
                out["sizes"].append({"customers": n_c, "transaction_lines": n_l, "skipped": "deadline"})
                continue
            out["sizes"].append(measure_size(n_c, n_l, args.runs, args.engines.split(","), deadline))
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=2) + "\n")  # partial results survive a stop
    finally:
        if not args.keep_data and DATA_ROOT.exists():
            shutil.rmtree(DATA_ROOT)
    out["total_seconds"] = round(time.perf_counter() - t_all, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
