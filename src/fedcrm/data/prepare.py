"""The partner-side pipeline, end to end: raw export → training tensors, cached on the node.

load → map → standardise → clean → pseudonymise → generalise → features + labels → split.
Everything written here stays in the partner's work dir: the quarantine (with raw values,
so the partner can fix them), the pseudonym lookup, and the prepared arrays that later
rounds and runs reuse instead of redoing the work (`fedcrm.data.prepared`, which a node's
message reads without importing this module).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedcrm.config import CleaningRules, InteractionMapping, PartnerConfig, TransactionMapping
from fedcrm.config.activity import ActivityConfig
from fedcrm.contract.model import DEFAULT_LAPSE_DAYS
from fedcrm.data.activity import (activity_features, churn_labels, future_spend, interaction_counts, lapse_days_after,
                                  marketing_tags, propensity_labels,
                                  purchases)
from fedcrm.data.clean import REASON, Cleaned, Cleaner
from fedcrm.data.events_duckdb import PurchaseActivity, Unsupported, purchase_activity_duckdb
from fedcrm.data.ingest import ROW, apply_mapping, read_table
from fedcrm.data.layout import FeatureLayout
from fedcrm.data.prepared import (DERIVED_LABEL, PreparedData, PreparedSummary, as_of_date, cache_dir, dataset_fingerprint,
                                  label_field, load_cached, partner_layout, save_cached, task_of)
from fedcrm.data.pseudonymise import PID, pseudonymise, pseudonyms
from fedcrm.data.secret import load_secret
from fedcrm.data.standardise import standardise
from fedcrm.errors import ConfigError
from fedcrm.privatefiles import private_dir, private_replace

log = logging.getLogger(__name__)
BOUGHT_BY_CUTOFF = "_bought_by_cutoff"  # the customer had a purchase on or before the cutoff (`task_rows`)


def task_activity(cfg: PartnerConfig, task: str | None) -> ActivityConfig:
    """The partner's activity rules, with the label horizon of the task's derived label
    unless the partner set its own. A time-to-churn task's horizon and lapse are the
    contract's whatever the partner set: they fix the periods every partner's release
    counts customers by."""
    if task is None:
        return cfg.activity
    label = task_of(cfg, task).label
    if label.derived == "time-to-churn":
        scale = task_of(cfg, task).survival_scale()
        assert scale is not None
        return cfg.activity.model_copy(update={"horizon_days": scale.periods * scale.period_days,
                                               "lapse_days": label.lapse_days or DEFAULT_LAPSE_DAYS})
    if label.derived is None or "horizon_days" in cfg.activity.model_fields_set or label.horizon_days is None:
        return cfg.activity
    return cfg.activity.model_copy(update={"horizon_days": label.horizon_days})


def add_activity(cfg: PartnerConfig, customers: pd.DataFrame, task: str | None
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Join interaction counts and RFM/trend features (and, unless a label column is
    mapped, the derived label) from the event exports; returns the customers and, when
    there are purchases, their marketing tags."""
    if cfg.transactions is None and cfg.interactions is None:
        return customers, None
    as_of = as_of_date(cfg)
    activity = task_activity(cfg, task)
    cutoff = activity.cutoff_for(as_of)
    ids = pd.Index(customers["customer_id"].astype(str))
    out = customers.copy()
    ix_counts = None
    if cfg.interactions is not None:
        raw_ix, ix = load_events(cfg.interactions, cfg.name, cfg.cleaning, as_of)
        write_quarantine(cfg, "interactions", raw_ix, ix.quarantine)
        ix_counts = interaction_counts(ix.clean, cutoff, activity)
        if "interactions" not in cfg.customers.columns:
            out["interactions"] = ix_counts["interactions"].reindex(ids, fill_value=0).to_numpy()
    if cfg.transactions is None:
        return out, None
    label = task_of(cfg, task).label if task is not None else None
    derived = label.derived if label is not None and label_field(cfg, task) == DERIVED_LABEL else None
    target = (label.category or cfg.activity.target_category or "") if label is not None else ""
    bought = purchase_activity(cfg, activity, derived, target, ids)
    if derived == "time-to-churn":  # lapse days -> the period left in (`fedcrm.ml.survival`)
        from fedcrm.ml.survival import survival_label

        period = task_of(cfg, task).survival_scale().period_days  # type: ignore[union-attr]
        bought = replace(bought, label=pd.Series(survival_label(bought.label, activity.horizon_days, period),
                                                 index=ids, name="left_in_period"))
    write_quarantine_rows(cfg, "transactions", bought.quarantine)
    join_purchases(out, bought, ids, activity, derived is not None)
    recent, previous = (ix_counts["ix_recent"], ix_counts["ix_previous"]) if ix_counts is not None else (None, None)
    return out, marketing_tags(bought.features, activity, recent, previous)


def join_purchases(out: pd.DataFrame, bought: PurchaseActivity, ids: pd.Index, activity: ActivityConfig,
                   label: bool) -> None:
    """Each customer's purchase features (and the derived label, if `label`) into `out`,
    whose rows are the customers `ids`: a customer without purchases before the cutoff
    gets the window as its recency and 0 for the rest. By row positions (`positions`),
    not by reindexing a frame on a million text ids: the same values, a third of the time."""
    feats = bought.features
    rows = positions(ids, feats.index)
    fills = {"recency_days": float(activity.window_days), "frequency": 0.0, "monetary": 0.0, "activity_trend": 0.0}
    for col, fill in fills.items():
        out[col] = taken(feats[col], rows, fill)
    out[BOUGHT_BY_CUTOFF] = rows >= 0  # the features are of customers with a purchase by the cutoff
    if label:
        out[DERIVED_LABEL] = bought.label.to_numpy().astype("float64")


def positions(ids: pd.Index | pd.Series, index: pd.Index | pd.Series) -> np.ndarray:
    """The row in `index` of each of `ids` (the first, if `index` repeats it; -1 where
    none). Arrow's hash lookup: at a million text ids about twice as fast as
    `Index.get_indexer`, and it takes an index with repeats."""
    found = pc.index_in(pa.array(ids, type=pa.large_string()), value_set=pa.array(index, type=pa.large_string()))
    return found.fill_null(-1).to_numpy().astype(np.int64)


def taken(values: pd.Series, rows: np.ndarray, fill: float) -> np.ndarray:
    """`values` at `rows` as float64, `fill` where a row is -1 or the value missing: what
    `values.reindex(...).fillna(fill)` gives, by positions."""
    out = np.full(len(rows), fill, dtype=np.float64)
    hit = rows >= 0
    out[hit] = values.to_numpy(dtype=np.float64)[rows[hit]]
    out[np.isnan(out)] = fill
    return out


def events_engine() -> str:
    """Which engine cleans and aggregates a purchases export: FEDCRM_EVENTS_ENGINE =
    'auto' (default: DuckDB where it covers the export and the options, else pandas),
    'duckdb' (no fallback: an uncovered export is an error) or 'pandas'."""
    engine = os.environ.get("FEDCRM_EVENTS_ENGINE", "auto").strip().lower() or "auto"
    if engine not in ("auto", "duckdb", "pandas"):
        raise ConfigError(f"FEDCRM_EVENTS_ENGINE={engine!r}: use auto, duckdb or pandas")
    return engine


def purchase_activity(cfg: PartnerConfig, activity: ActivityConfig, label: str | None, target_category: str,
                      ids: pd.Index, engine: str | None = None) -> PurchaseActivity:
    """The purchases export → its quarantine and cleaning report, the per-customer purchase
    features (`activity_features`) and the label derived from purchases (`label`:
    'no-purchase' or 'bought-category', over the customers `ids`). DuckDB does the work
    where it covers the export (`fedcrm.data.events_duckdb`); else pandas, with the reason
    logged and kept in `PurchaseActivity.fallback`. Both give the same results."""
    engine = engine or events_engine()
    fallback = None
    if engine != "pandas":
        try:
            return purchase_activity_duckdb(cfg.transactions, cfg.cleaning, as_of_date(cfg), activity, cfg.work_dir,
                                            label, target_category, ids)
        except Unsupported as why:
            if engine == "duckdb":
                raise ConfigError(f"{cfg.name}: the purchases export is not covered by the DuckDB path: {why}") from None
            fallback = str(why)
            log.info("%s: purchases prepared with pandas, not DuckDB: %s", cfg.name, fallback)
    return purchase_activity_pandas(cfg.transactions, cfg.name, cfg.cleaning, as_of_date(cfg), activity, label,
                                    target_category, ids, fallback)


def purchase_activity_pandas(mapping: TransactionMapping, partner: str, rules: CleaningRules, as_of: date,
                             activity: ActivityConfig, label: str | None, target_category: str, ids: pd.Index,
                             fallback: str | None = None) -> PurchaseActivity:
    """`purchase_activity` in pandas: every line in memory (the reference the DuckDB path matches)."""
    cutoff = activity.cutoff_for(as_of)
    raw_tx, tx = load_events(mapping, partner, rules, as_of)
    quarantine = quarantine_rows(raw_tx, tx.quarantine)
    del raw_tx
    bought = purchases(tx.clean)  # lines → purchases once, for features and the label
    feats = activity_features(bought, cutoff, activity)
    derived = None
    if label == "no-purchase":
        derived = churn_labels(bought, ids, cutoff, activity.horizon_days)
    elif label == "future-spend":
        derived = future_spend(bought, ids, cutoff, activity.horizon_days)
    elif label == "time-to-churn":
        derived = lapse_days_after(bought, ids, cutoff, activity.horizon_days, activity.lapse_days)
    elif label is not None:
        tx_clean = tx.clean.assign(customer_id=tx.clean["customer_id"].astype(str))
        derived = propensity_labels(tx_clean, ids, cutoff, activity.horizon_days, target_category)
    return PurchaseActivity(report=tx.report, quarantine=quarantine, features=feats, label=derived, engine="pandas",
                            fallback=fallback)


def test_mask(pids: pd.Series, fraction: float) -> np.ndarray:
    """Hold-out by pseudonym: stable across runs, independent of file order."""
    prefix = "".join(pids.str.slice(0, 8).tolist())  # 32 bits of each pseudonym, parsed at once
    bucket = np.frombuffer(bytes.fromhex(prefix), dtype=">u4").astype(np.float64) / float(16**8)
    return bucket < fraction


def load_and_clean(cfg: PartnerConfig, key_fields: list[str]) -> tuple[pd.DataFrame, Cleaned]:
    """Read, map, standardise and clean the customers export; returns the mapped raw text too."""
    raw = apply_mapping(read_table(cfg.customers), cfg.customers, cfg.name)
    if customers_from_log(cfg):
        raw = distinct_customers(raw)
    typed = standardise(raw, cfg.customers)
    keys = [*cfg.customers.schema.key_fields(), *(k for k in key_fields if k not in cfg.customers.schema.key_fields())]
    cleaner = Cleaner(cfg.cleaning, as_of_date(cfg), key_fields=keys, schema=cfg.customers.schema,
                      dedupe_by=cfg.dedupe_field)
    return raw, cleaner(typed.frame, typed.unreadable)


def customers_from_log(cfg: PartnerConfig) -> bool:
    """A partner whose only export is a purchase log maps its customers table onto the same
    file: its customers are the log's distinct ids."""
    return cfg.transactions is not None and cfg.customers.path == cfg.transactions.path


def distinct_customers(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per customer id of a purchase log: its latest line (the customers fields a
    log repeats on every line, such as a country, as of the last purchase). Lines without
    an id are the purchases table's to quarantine ('to be supplemented'), not customers."""
    ids = raw["customer_id"].astype("string").str.strip()
    keep = ids.notna() & (ids != "")
    last = ~ids[keep].duplicated(keep="last")
    return raw.loc[keep].loc[last.to_numpy()]


def load_events(mapping: TransactionMapping | InteractionMapping, partner: str, rules: CleaningRules,
                as_of: date) -> tuple[pd.DataFrame, Cleaned]:
    """A purchases or interactions export, cleaned: missing id/date → to be supplemented;
    negative quantities (returns, cancellations), future dates, extreme amounts → abnormal.
    Many rows per customer, so no deduplication by id."""
    raw = apply_mapping(read_table(mapping), mapping, partner)
    typed = standardise(raw, mapping)
    cleaner = Cleaner(rules, as_of, key_fields=mapping.schema.key_fields(), schema=mapping.schema, dedupe=False)
    return raw, cleaner(typed.frame, typed.unreadable)


def task_rows(cfg: PartnerConfig, task: str, general: pd.DataFrame) -> np.ndarray:
    """Which customers of `general` (`prepared_frame`) the task learns from and is
    evaluated on: its label's population. Under 'bought-by-cutoff' a label derived from
    purchases is the customers who had bought by the cutoff; a customer first seen after
    it was not the partner's then, and its label (it spent, it did not leave) only says
    that it arrived. An explicit label field keeps every customer."""
    label = task_of(cfg, task).label
    if label.population == "bought-by-cutoff" and label_field(cfg, task) == DERIVED_LABEL:
        return general[BOUGHT_BY_CUTOFF].to_numpy(dtype=bool)
    return np.ones(len(general), dtype=bool)


def prepare(cfg: PartnerConfig, task: str, test_fraction: float = 0.2, use_cache: bool = True,
            layout: FeatureLayout | None = None) -> PreparedData:
    """Run (or reuse) the whole pipeline for one partner and task, into `layout` (default:
    the partner contract's). Learned blocks still waiting for their levels are left out of
    the matrix; their values are counted over the training rows instead (`learned_counts`)."""
    key = load_secret(cfg.secret_file)
    layout = layout or partner_layout(cfg)
    target = label_field(cfg, task)
    fingerprint = dataset_fingerprint(cfg)
    folder = cache_dir(cfg, task, test_fraction, layout, fingerprint, key)
    if use_cache and (folder / "summary.json").is_file():
        return load_cached(folder, layout)

    as_of = as_of_date(cfg)
    general, raw, cleaned, lookup = prepared_frame(cfg, task, target, key)
    rows = task_rows(cfg, task, general)
    general = general.loc[rows]
    x = layout.fixed_part().matrix(general, as_of)
    y = general[target].to_numpy(dtype=np.float32)
    test = test_mask(general[PID], test_fraction)
    counts = layout.learned_counts(general.loc[~test], as_of) if layout.unresolved() else {}

    summary = PreparedSummary(
        partner=cfg.name, task=task, dataset_fingerprint=fingerprint, as_of=as_of.isoformat(),
        n_train=int((~test).sum()), n_test=int(test.sum()),
        label_rate_train=float(y[~test].mean()) if (~test).any() else 0.0,
        n_features=x.shape[1], features=layout.fixed_part().names(), cleaning=cleaned.report,
        outside_population=int((~rows).sum()),
    )
    data = PreparedData(x[~test], y[~test], x[test], y[test], summary, counts)
    _write_local_outputs(cfg, raw, cleaned.quarantine, lookup)
    save_cached(folder, data)
    return data


def prepared_frame(cfg: PartnerConfig, task: str | None, target: str | None, key: bytes, tags: bool = True
                   ) -> tuple[pd.DataFrame, pd.DataFrame, Cleaned, pd.DataFrame]:
    """Cleaned, joined with activity (and the derived label), pseudonymised: what the
    layout reads features from. Also writes the marketing tags."""
    raw, cleaned = load_and_clean(cfg, key_fields=[target] if target and target != DERIVED_LABEL else [])
    with_activity, tagged = add_activity(cfg, cleaned.clean, task)
    pseudo, lookup = pseudonymise(with_activity, key, cfg.contract_model.identifiers())
    if tags and tagged is not None:
        write_tags(cfg, tagged, key, lookup)
    return pseudo, raw, cleaned, lookup


def write_tags(cfg: PartnerConfig, tags: pd.DataFrame, key: bytes, lookup: pd.DataFrame | None = None) -> Path:
    """Marketing tags keyed by pseudonym: the file marketing may take off the node.

    Pseudonyms already computed for the customers table are reused from `lookup` (found
    by `positions`, kept as Arrow text: no Python string per customer); only buyers
    missing from it (e.g. quarantined customers) are hashed here."""
    ids = pd.Series(tags.index.astype(str))
    if lookup is None:
        pid = pa.array(pseudonyms(ids, key), type=pa.large_string())
    else:
        rows = positions(ids, lookup["customer_id"])  # same id, same pseudonym
        known = pa.array(lookup[PID], type=pa.large_string())
        pid = known.take(pa.array(rows, mask=rows < 0))
        if (rows < 0).any():
            fresh = pa.array(pseudonyms(ids[rows < 0], key), type=pa.large_string())
            pid = pc.replace_with_mask(pid, pa.array(rows < 0), fresh)
    out = tags.reset_index(drop=True)
    out.insert(0, PID, pid.to_pandas())
    path = cfg.work_dir / "tags.parquet"
    _write_parquet(cfg, path, out)
    return path


def at_rows(raw: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """The raw rows with these file row numbers (`ROW`, 1-based); positional when the
    table is the whole file, by number when it is a part (customers of a purchase log)."""
    if len(raw) and int(raw[ROW].iloc[-1]) == len(raw):
        return raw.iloc[rows - 1]
    return raw.set_index(ROW, drop=False).loc[rows]


def quarantine_rows(raw: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """Each quarantined row's file row number, reason and raw (mapped) values, as text."""
    rows = at_rows(raw, quarantine[ROW].to_numpy())
    rows = rows.drop(columns=[ROW]).astype("string").reset_index(drop=True)
    return pd.concat([quarantine[[ROW, REASON]].reset_index(drop=True), rows], axis=1)


def write_quarantine(cfg: PartnerConfig, table: str, raw: pd.DataFrame, quarantine: pd.DataFrame) -> Path:
    """Quarantined rows with their reason and raw values, for the partner to fix; stays on the node."""
    return write_quarantine_rows(cfg, table, quarantine_rows(raw, quarantine))


def write_quarantine_rows(cfg: PartnerConfig, table: str, rows: pd.DataFrame) -> Path:
    """`quarantine_rows`' frame (row number, reason, raw values) to the table's quarantine file."""
    path = cfg.work_dir / ("quarantine.parquet" if table == "customers" else f"quarantine_{table}.parquet")
    _write_parquet(cfg, path, rows)
    return path


def _write_parquet(cfg: PartnerConfig, path: Path, frame: pd.DataFrame) -> None:
    """Raw values or linkage: 0600 in the node's 0700 work dir, from creation."""
    private_dir(cfg.work_dir)
    with private_replace(path, "wb") as fh:  # whole: two nodes preparing at once never mix
        frame.to_parquet(fh, index=False)


def _write_local_outputs(cfg: PartnerConfig, raw: pd.DataFrame, quarantine: pd.DataFrame, lookup: pd.DataFrame) -> None:
    """Quarantine (raw values + reason) and pseudonym lookup: for the partner's eyes only."""
    write_quarantine(cfg, "customers", raw, quarantine)
    _write_parquet(cfg, cfg.work_dir / "pseudonym_lookup.parquet", lookup)
