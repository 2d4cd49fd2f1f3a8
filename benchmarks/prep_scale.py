"""Partner-side data pipeline at scale: 1,000,000 customers and 10,000,000 purchase lines.

    .venv/bin/python benchmarks/prep_scale.py                                   # full size; writes benchmarks/results/prep_scale.json
    .venv/bin/python benchmarks/prep_scale.py --customers 10000 --transactions 100000   # quick check

Generates a deterministic partner export (numpy default_rng, vectorised; Parquet via
pyarrow) in a temporary directory under .work/, with ~1 % duplicate customer ids, missing
and unreadable values, negative quantities (returns), future dates and spend outliers so
the cleaning does real work. Next to it: a partner config TOML and an HMAC key.

Then, each in a fresh subprocess so that each peak RSS (ru_maxrss) is the stage's own:
  generate   the export (timed, not counted against the targets);
  check      `fedcrm.quality.check_partner(cfg, "churn")`, i.e. `fedcrm partner check`;
  prepare    `fedcrm.prepare.prepare(cfg, "churn", use_cache=False)`: load + validate +
             clean + pseudonymise (HMAC) + RFM/trend features + labels + marketing tags;
  breakdown  the same pipeline step by step (the stage functions `prepare` calls, in its
             order), with seconds and RSS per step and finer detail inside the heavy steps,
             so that maintainers see where the time and memory go.
Targets (whole prepare): <= 20 s and <= 4096 MB peak RSS.
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
TARGET_SECONDS = 20.0
TARGET_RSS_MB = 4096.0
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

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.rows.append({"step": name, "seconds": round(time.perf_counter() - t0, 3),
                          "peak_rss_mb": peak_rss_mb(), "rss_after_mb": current_rss_mb()})
        return out

    def seconds(self, name: str) -> float:
        return next(r["seconds"] for r in self.rows if r["step"] == name)


def source_digest() -> str:
    """sha256 over the package's source files: which code a stage measured.

    The package is being edited while benchmarks run; each stage records the digest when
    it starts and ends, and the report flags a run whose stages saw different code."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "fedcrm").glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
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

    from fedcrm.data.pseudonymise import create_secret

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
    m = len(line_order)
    qty = 1 + rng.poisson(0.8, m)
    qty[rng.random(m) < 0.01] *= -1  # returns
    price = np.round(rng.lognormal(np.log(25.0), 0.8, m), 2)
    price[rng.random(m) < 0.00005] *= 5000.0  # extreme amount
    tx = pa.table({
        "cust_id": pc.if_else(pa.array(rng.random(m) < 0.001), pa.scalar(None, pa.string()), _ids("C", line_cust, 7)),
        "order_no": _ids("O", line_order, 9),
        "date": _dates(line_day, mask=rng.random(m) < 0.001),
        "qty": pa.array(qty, mask=rng.random(m) < 0.002),
        "price": pa.array(price, mask=rng.random(m) < 0.002),
    })
    pq.write_table(tx, folder / "transactions.parquet")
    del tx

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


def stage_prepare(folder: Path, args: argparse.Namespace) -> dict:
    from fedcrm.config import PartnerConfig
    from fedcrm.data.prepare import prepare

    cfg = PartnerConfig.load(folder / "partner.toml")
    data, secs = timed(prepare, cfg, "churn", use_cache=False)
    s = data.summary
    tags = cfg.work_dir / "tags.parquet"
    return {"seconds": secs, "peak_rss_mb": peak_rss_mb(), "n_train": s.n_train, "n_test": s.n_test,
            "n_features": s.n_features, "label_rate_train": round(s.label_rate_train, 4),
            "tags_written": tags.is_file(),
            "tags_rows": _parquet_rows(tags) if tags.is_file() else None}


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _read_table_detail(mapping, total: float) -> dict:
    """read_table's share spent in pyarrow (read + to_pandas) vs the rest of read_table."""
    import pyarrow.parquet as pq

    _, t_read = timed(lambda: pq.read_table(mapping.path).to_pandas())
    return {"pyarrow_read+to_pandas (timed separately)": t_read,
            "rest of read_table (step total minus that)": round(total - t_read, 3)}


def _standardise_detail(raw, mapping) -> dict:
    """standardise() one mapped field at a time (same code, one-column mapping)."""
    from fedcrm.data.ingest import ROW
    from fedcrm.data.standardise import standardise

    out = {}
    for name in mapping.columns:
        one = mapping.model_copy(update={"columns": {name: mapping.columns[name]}})
        kind = mapping.SCHEMA[name].kind.value
        out[f"{name} ({kind})"] = timed(standardise, raw[[ROW, name]], one)[1]
    return out


def _cleaner_detail(frame, unreadable, cleaner, total: float) -> dict:
    """The Cleaner's rules in its order, on the same input; the rest is its bookkeeping/report."""
    from fedcrm.data.clean import abnormal_values, duplicates_by_id, fill_missing, missing_key_fields

    out = {}
    current = frame
    reasons, out["missing_key_fields"] = timed(missing_key_fields, current, unreadable, cleaner.key_fields)
    current = current.loc[reasons.isna()]
    if cleaner.dedupe:
        reasons, out["duplicates_by_id"] = timed(duplicates_by_id, current, cleaner.rules.dedupe_by)
        current = current.loc[reasons.isna()]
    reasons, out["abnormal_values"] = timed(abnormal_values, current, cleaner.rules, cleaner.as_of, cleaner.schema)
    current = current.loc[reasons.isna()]
    _, out["fill_missing"] = timed(fill_missing, current, unreadable.loc[current.index], cleaner.rules, cleaner.schema)
    out["quarantine+report (Cleaner total minus rules)"] = round(total - sum(out.values()), 3)
    return out


def stage_breakdown(folder: Path, args: argparse.Namespace) -> dict:
    """`prepare(cfg, "churn", use_cache=False)` taken apart, step by step in its order."""
    import numpy as np
    import pandas as pd

    from fedcrm.data.activity import activity_features, marketing_tags, purchases
    from fedcrm.data.clean import Cleaner
    from fedcrm.config import PartnerConfig
    from fedcrm.data.features import build_matrix, derive_generalised
    from fedcrm.data.ingest import apply_mapping, read_table
    from fedcrm.data.prepare import (_save, _write_local_outputs, as_of_date, dataset_fingerprint, label_field,
                                test_mask, write_tags)
    from fedcrm.data.pseudonymise import PID, load_secret, pseudonymise
    from fedcrm.config.schema import LABEL_SOURCES, TX_BY_NAME
    from fedcrm.data.standardise import standardise

    cfg = PartnerConfig.load(folder / "partner.toml")
    cfg = cfg.model_copy(update={"work_dir": cfg.work_dir.parent / "work_breakdown"})
    step = Steps()
    detail: dict[str, dict] = {}
    t_all = time.perf_counter()

    key = step("load_secret+label_field", load_secret, cfg.secret_file)
    task = "churn"
    target = label_field(cfg, task)
    fingerprint = step("dataset_fingerprint (sha256 of both files)", dataset_fingerprint, cfg)
    as_of = as_of_date(cfg)

    # load_and_clean: customers
    c_map = cfg.customers
    c_read = step("customers: read_table", read_table, c_map)
    raw = step("customers: apply_mapping", apply_mapping, c_read, c_map, cfg.name)
    del c_read
    typed = step("customers: standardise", standardise, raw, c_map)
    cleaner = Cleaner(cfg.cleaning, as_of, key_fields=["customer_id", target])
    cleaned = step("customers: Cleaner", cleaner, typed.frame, typed.unreadable)
    if not args.no_detail:
        detail["customers: read_table"] = _read_table_detail(c_map, step.seconds("customers: read_table"))
        detail["customers: standardise"] = _standardise_detail(raw, c_map)
        detail["customers: Cleaner"] = _cleaner_detail(typed.frame, typed.unreadable, cleaner, step.seconds("customers: Cleaner"))
    del typed

    # add_activity: load_events + features + join + tags
    t_map = cfg.transactions
    cutoff = cfg.activity.cutoff_for(as_of)
    t_read = step("transactions: read_table", read_table, t_map)
    t_raw = step("transactions: apply_mapping", apply_mapping, t_read, t_map, cfg.name)
    del t_read
    t_typed = step("transactions: standardise", standardise, t_raw, t_map)
    t_cleaner = Cleaner(cfg.cleaning, as_of, key_fields=["customer_id", "tx_date"], schema=TX_BY_NAME, dedupe=False)
    tx = step("transactions: Cleaner", t_cleaner, t_typed.frame, t_typed.unreadable)
    if not args.no_detail:
        detail["transactions: read_table"] = _read_table_detail(t_map, step.seconds("transactions: read_table"))
        detail["transactions: standardise"] = _standardise_detail(t_raw, t_map)
        detail["transactions: Cleaner"] = _cleaner_detail(t_typed.frame, t_typed.unreadable, t_cleaner,
                                                          step.seconds("transactions: Cleaner"))
    del t_raw, t_typed
    feats = step("activity_features (purchases groupby + RFM/trend)",
                 lambda t: activity_features(purchases(t), cutoff, cfg.activity), tx.clean)

    def join() -> pd.DataFrame:  # the rest of prepare.add_activity, verbatim
        customers = cleaned.clean
        ids = pd.Index(customers["customer_id"].astype(str))
        feats.index = feats.index.astype(str)
        joined = feats.reindex(ids)
        joined["recency_days"] = joined["recency_days"].fillna(cfg.activity.window_days)
        joined = joined.fillna(0.0)
        out = customers.copy()
        for col in ("recency_days", "frequency", "monetary", "activity_trend"):
            out[col] = joined[col].to_numpy()
        if LABEL_SOURCES[task] not in cfg.customers.columns:
            raise AssertionError("this benchmark maps the churn label; derived labels are not timed here")
        return out

    with_activity = step("join activity onto customers", join)
    del tx
    tags = step("marketing_tags", marketing_tags, feats, cfg.activity)
    pseudo, lookup = step("pseudonymise (HMAC per customer)", pseudonymise, with_activity, key)
    step("write_tags (reuses the pseudonym lookup; parquet)", write_tags, cfg, tags, key, lookup)
    gen = getattr(cfg, "generalisation", None)  # newer configs: age band width is configurable
    general = step("derive_generalised", derive_generalised, pseudo, as_of,
                   *([gen.age_band_years] if gen is not None else []))
    x = step("build_matrix", build_matrix, general)
    y = general[target].to_numpy(dtype=np.float32)
    test = step("test_mask", test_mask, general[PID], 0.2)
    step("write quarantine + pseudonym lookup (parquet)", _write_local_outputs, cfg, raw, cleaned.quarantine, lookup)

    def save() -> None:
        from fedcrm.data.prepare import PreparedData, PreparedSummary

        summary = PreparedSummary(partner=cfg.name, task=task, dataset_fingerprint=fingerprint,
                                  as_of=as_of.isoformat(), n_train=int((~test).sum()), n_test=int(test.sum()),
                                  label_rate_train=float(y[~test].mean()), n_features=x.shape[1],
                                  cleaning=cleaned.report)
        _save(cfg.work_dir / "prepared" / "breakdown", PreparedData(x[~test], y[~test], x[test], y[test], summary))

    step("save arrays (npz)", save)
    total = round(time.perf_counter() - t_all, 3)
    return {"seconds_total_incl_detail": total,
            "seconds_steps_sum": round(sum(r["seconds"] for r in step.rows), 3),
            "peak_rss_mb": peak_rss_mb(), "steps": step.rows,
            "top_steps_by_seconds": [r["step"] for r in sorted(step.rows, key=lambda r: -r["seconds"])[:5]],
            "detail_seconds": detail}


STAGES = {"generate": stage_generate, "check": stage_check, "prepare": stage_prepare, "breakdown": stage_breakdown}


def run_stage(name: str, folder: Path, args: argparse.Namespace) -> dict:
    """Run one stage in a fresh interpreter; its result comes back through a JSON file."""
    out = folder / f"_{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--data", str(folder),
           "--customers", str(args.customers), "--transactions", str(args.transactions)]
    if args.no_detail:
        cmd.append("--no-detail")
    print(f"[prep_scale] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0 or not out.is_file():
        err = {"error": f"stage {name} exited with {proc.returncode}"
                        + (" (killed: out of memory?)" if proc.returncode in (-9, 137) else ""),
               "stderr_tail": proc.stderr[-3000:], "wall_seconds": wall}
        print(f"[prep_scale] {name} FAILED: {err['error']}\n{err['stderr_tail']}", file=sys.stderr, flush=True)
        return err
    result = json.loads(out.read_text())
    result["process_wall_seconds"] = wall
    print(f"[prep_scale] {name}: {result.get('seconds')} s, peak {result.get('peak_rss_mb')} MB", file=sys.stderr,
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=10_000_000, help="purchase lines")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the step-by-step breakdown")
    parser.add_argument("--no-detail", action="store_true", help="breakdown without the finer detail timings")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child process: one stage, result to <data>/_<stage>.json
        before = source_digest()
        result = STAGES[args.stage](args.data, args)
        after = source_digest()
        result["source_sha256"] = before if before == after else f"{before} -> {after} (edited during the stage)"
        (args.data / f"_{args.stage}.json").write_text(json.dumps(result))
        return

    command = " ".join([".venv/bin/python", "benchmarks/prep_scale.py", *sys.argv[1:]])
    parent = ROOT / ".work"
    parent.mkdir(exist_ok=True)
    out: dict = {
        "benchmark": "partner-side prepare at scale",
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": {"customers": args.customers, "transaction_lines": args.transactions},
        "targets": {"prepare_seconds_max": TARGET_SECONDS, "prepare_peak_rss_mb_max": TARGET_RSS_MB},
    }
    try:
        import numpy, pandas, pyarrow  # noqa: E401

        out["machine"]["versions"] = {"numpy": numpy.__version__, "pandas": pandas.__version__,
                                      "pyarrow": pyarrow.__version__}
    except ImportError:
        pass
    stages: dict[str, dict] = {}
    source_start = source_digest()
    with tempfile.TemporaryDirectory(dir=parent, prefix="prep_scale-") as tmp:
        folder = Path(tmp) / "partner"
        folder.mkdir()
        stages["generate"] = run_stage("generate", folder, args)
        if "error" not in stages["generate"]:
            stages["check"] = run_stage("check", folder, args)
            stages["prepare"] = run_stage("prepare", folder, args)
            if not args.no_breakdown:
                stages["breakdown"] = run_stage("breakdown", folder, args)
    breakdown = stages.pop("breakdown", None)
    out["data"] = {k: v for k, v in stages["generate"].items() if k not in ("seconds", "peak_rss_mb")}
    out["seconds"] = {k: v.get("seconds") for k, v in stages.items()}
    out["peak_rss_mb"] = {k: v.get("peak_rss_mb") for k, v in stages.items()}
    out["seconds_note"] = "generate is not counted against the targets; each stage ran in its own process"
    prep = stages.get("prepare", {})
    if "error" in prep or not prep:
        out["targets_met"] = {"seconds": False, "peak_rss": False, "all": False}
    else:
        s_ok, m_ok = prep["seconds"] <= TARGET_SECONDS, prep["peak_rss_mb"] <= TARGET_RSS_MB
        out["targets_met"] = {"seconds": s_ok, "peak_rss": m_ok, "all": s_ok and m_ok}
    out["stages"] = stages
    seen = {v.get("source_sha256") for v in [*stages.values(), breakdown or {}] if v.get("source_sha256")}
    out["package_source"] = {"sha256_at_start": source_start, "sha256_at_end": source_digest(),
                             "stages_saw_one_version": len(seen) == 1 and source_start in seen}
    if breakdown is not None:
        out["breakdown"] = breakdown
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
