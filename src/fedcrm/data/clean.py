"""Cleaning rules: each a small function from a typed canonical frame to a verdict.

A rule returns a `Verdict`: a reason per row it rejects (None for rows it keeps). The
`Cleaner` applies rules in order and moves rejected rows to the quarantine with their
reason, so every input row ends either clean or quarantined — never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import numpy as np

from fedcrm.config import CleaningRules
from fedcrm.contract.model import UNKNOWN, FieldSpec, Generalise, Kind
from fedcrm.contract.tables import TableSchema, standard_contract, table_schema
from fedcrm.data.cleaning_report import CleaningReport
from fedcrm.data.ingest import ROW


def _standard() -> TableSchema:
    return table_schema(standard_contract(), "customers")

REASON = "reason"


def _reasons(mask: pd.Series, reason: str | pd.Series) -> pd.Series:
    out = pd.Series(None, index=mask.index, dtype=object)
    if isinstance(reason, pd.Series):
        out[mask] = reason[mask]
    else:
        out[mask] = reason
    return out


class _FirstReason:
    """Collects one reason per row — the first rule that fires — in plain numpy arrays
    (millions of rows: no per-rule Series rebuilds)."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self.reasons = np.full(len(index), None, dtype=object)
        self.taken = np.zeros(len(index), dtype=bool)

    def flag(self, mask: pd.Series, why: str) -> None:
        hit = mask.to_numpy(dtype=bool, na_value=False) & ~self.taken
        self.reasons[hit] = why
        self.taken |= hit

    def take(self, reasons: pd.Series) -> None:
        """Adopt another rule's per-row reasons where no earlier rule fired."""
        values = reasons.to_numpy(dtype=object)
        hit = pd.notna(values) & ~self.taken
        self.reasons[hit] = values[hit]
        self.taken |= hit

    def series(self) -> pd.Series:
        return pd.Series(self.reasons, index=self.index, dtype=object)


def missing_key_fields(frame: pd.DataFrame, unreadable: pd.DataFrame, key_fields: list[str]) -> pd.Series:
    """Key field absent or unreadable → 'to be supplemented' (kept out of training)."""
    verdict = _FirstReason(frame.index)
    for name in key_fields:
        if name not in frame.columns:
            continue
        absent = frame[name].isna()
        if name in unreadable.columns:
            absent = absent | unreadable[name]
        verdict.flag(absent, f"to be supplemented: {name} missing or unreadable")
    return verdict.series()


def duplicates_by_id(frame: pd.DataFrame, id_field: str = "customer_id") -> pd.Series:
    """Keep the most recent record per id (record_date, then file order); flag the rest."""
    key = frame[id_field].astype("string")
    if "phone" in id_field:  # '+86 138-1234 5678' and '8613812345678' are one phone
        key = key.str.replace(r"\D", "", regex=True)
    elif "email" in id_field or "mail" in id_field:
        key = key.str.strip().str.casefold()
    key = key.where(key.str.len() > 0)
    order = [c for c in ("record_date", ROW) if c in frame.columns]
    ranked = frame.assign(_key=key).sort_values(order, na_position="first", kind="stable")
    keep_row = ranked.groupby("_key", sort=False)[ROW].transform("last")
    keep_row = keep_row.reindex(frame.index)
    is_dup = key.notna() & (frame[ROW] != keep_row)  # no id, no duplicate
    reason = "duplicate: superseded by row " + keep_row.astype("Int64").astype(str)
    return _reasons(is_dup, reason)


def bounds(spec: FieldSpec, rules: CleaningRules) -> tuple[float, float] | None:
    """A numeric field's plausible range: the contract's `clip`; an age (a field generalised
    to an age band) also within the partner's [min_age, max_age]: the narrower wins."""
    lo, hi = spec.clip if spec.clip is not None else (-np.inf, np.inf)
    if spec.generalise is Generalise.AGE_BAND and spec.kind is not Kind.DATE:
        lo, hi = max(lo, rules.min_age), min(hi, rules.max_age)
    return None if (lo, hi) == (-np.inf, np.inf) else (lo, hi)


def abnormal_values(frame: pd.DataFrame, rules: CleaningRules, as_of: date,
                    schema: TableSchema | None = None, alive: np.ndarray | None = None) -> pd.Series:
    """Values outside a field's range (negative amounts and counts by default), future
    dates, and amounts far above the median (of the rows in `alive`: rows an earlier rule
    rejected do not move the median). The contract's `outlier_median_multiple` for a field
    wins over the partner's `outlier_spend_multiple` (which covers money fields the contract
    leaves open)."""
    schema = schema or _standard()
    verdict = _FirstReason(frame.index)

    def flag(mask: pd.Series, why: str) -> None:
        verdict.flag(mask, f"abnormal: {why}")

    horizon = pd.Timestamp(as_of)
    for name in frame.columns:
        spec = schema.get(name)
        if spec is None:
            continue
        col = frame[name]
        shown = spec.name
        if spec.kind in (Kind.MONEY, Kind.COUNT, Kind.NUMBER):
            rng = bounds(spec, rules)
            if rng is not None:
                lo, hi = rng
                if lo == 0 and hi == np.inf:
                    flag(col < 0, f"negative {shown}")
                elif hi == np.inf:
                    flag(col < lo, f"{shown} below {lo:g}")
                elif lo == -np.inf:
                    flag(col > hi, f"{shown} above {hi:g}")
                else:
                    flag((col < lo) | (col > hi), f"{shown} outside [{lo:g}, {hi:g}]")
            multiple = spec.outlier_median_multiple or (rules.outlier_spend_multiple if spec.kind is Kind.MONEY else None)
            if multiple:
                median = col[(col > 0) if alive is None else (col > 0) & alive].median()
                if pd.notna(median):
                    flag(col > multiple * median, f"{shown} above {multiple:g}x the median ({median:.2f})")
        if spec.kind is Kind.DATE:
            flag(col > horizon, f"{shown} in the future (after {as_of.isoformat()})")
    return verdict.series()


@dataclass
class Cleaned:
    clean: pd.DataFrame
    quarantine: pd.DataFrame  # ROW + REASON
    report: CleaningReport
    fills: dict[str, object] = field(default_factory=dict)


def fill_missing(frame: pd.DataFrame, unreadable: pd.DataFrame, rules: CleaningRules,
                 schema: TableSchema | None = None) -> tuple[pd.DataFrame, dict[str, int], dict[str, object]]:
    """Non-key gaps, by the contract's missing-value rule: 'unknown' (categories), the
    partner's median, zero, or a literal. A partner's own `cleaning.defaults` entry for a
    field wins: it knows what a blank means in its export."""
    schema = schema or _standard()
    out = frame.copy(deep=False)  # columns are replaced, never written in place
    counts: dict[str, int] = {}
    fills: dict[str, object] = {}
    for name in frame.columns:
        spec = schema.get(name)
        if spec is None or spec.key or spec.kind in (Kind.ID, Kind.TEXT, Kind.DATE):
            continue
        col = out[name]
        if name in unreadable.columns:
            col = col.where(~unreadable[name].reindex(col.index, fill_value=False))
        gap = col.isna() | (col == UNKNOWN) if spec.kind is Kind.CATEGORY else col.isna()
        counts[name] = int(gap.sum())
        rule = spec.missing
        default = rules.defaults.get(spec.name, rules.defaults.get(name))
        if default is not None:
            value: object = default
        elif spec.kind is Kind.CATEGORY:
            value = rule if isinstance(rule, str) else UNKNOWN
        elif rule == "zero":
            value = 0.0
        elif spec.kind is Kind.ORDINAL and isinstance(rule, str) and rule in (spec.levels or {}):
            value = float((spec.levels or {})[rule])
        elif isinstance(rule, bool | int | float):
            value = float(rule)
        else:
            median = col.median()
            value = float(median) if pd.notna(median) else 0.0
        fills[name] = value
        out[name] = col.where(~gap, value)
    return out, counts, fills


class Cleaner:
    """Applies the rules in order: key fields, duplicates, abnormal values; then fills gaps.

    Customers are one row per id (`dedupe=True`); transactions are many rows per id and
    are not deduplicated by id."""

    def __init__(self, rules: CleaningRules, as_of: date, key_fields: list[str],
                 schema: TableSchema | None = None, dedupe: bool = True, dedupe_by: str = "customer_id") -> None:
        self.rules, self.as_of, self.key_fields = rules, as_of, key_fields
        self.schema, self.dedupe, self.dedupe_by = schema or _standard(), dedupe, dedupe_by

    def __call__(self, frame: pd.DataFrame, unreadable: pd.DataFrame) -> Cleaned:
        rows_in = len(frame)
        # One verdict over the whole table, first rule wins; rows are filtered once at the
        # end (millions of purchase lines: no table copy per rule).
        verdict = _FirstReason(frame.index)
        verdict.take(missing_key_fields(frame, unreadable, self.key_fields))
        duplicates = 0
        if self.dedupe:
            alive = frame.loc[~verdict.taken]
            dup = duplicates_by_id(alive, self.dedupe_by).reindex(frame.index)
            duplicates = int(dup.notna().sum())
            verdict.take(dup)
        verdict.take(abnormal_values(frame, self.rules, self.as_of, self.schema, alive=~verdict.taken))
        keep = ~verdict.taken
        clean, filled, fills = fill_missing(frame.loc[keep], unreadable.loc[keep], self.rules, self.schema)
        quarantine = pd.DataFrame({ROW: frame[ROW].to_numpy()[verdict.taken].astype("int64"),
                                   REASON: pd.Series(verdict.reasons[verdict.taken], dtype=object)})
        counts = quarantine[REASON].value_counts()  # group the distinct reasons, then their counts
        families = counts.index.str.replace(r" \(.*\)$", "", regex=True).str.replace(r"row \d+", "a later row", regex=True)
        by_reason = counts.groupby(families, sort=False).sum().sort_values(ascending=False, kind="stable")
        present = frame.drop(columns=[ROW]).notna()
        for name in present.columns:
            if self.schema[name].kind is Kind.CATEGORY:
                present[name] = frame[name] != UNKNOWN
            if name in unreadable.columns:
                present[name] &= ~unreadable[name]
        report = CleaningReport(
            rows_in=rows_in,
            rows_clean=len(clean),
            rows_quarantined=len(quarantine),
            quarantined_by_reason={str(k): int(v) for k, v in by_reason.items()},
            duplicates=duplicates,
            unreadable_by_field={k: int(v) for k, v in unreadable.sum().items() if v},
            filled_by_field={k: v for k, v in filled.items() if v},
            completeness_pct={k: round(float(v) * 100, 2) for k, v in (present.mean() if rows_in else present.sum()).items()},
        )
        if report.rows_clean + report.rows_quarantined != rows_in:  # the invariant, checked every time
            raise AssertionError(f"rows lost in cleaning: {rows_in} in, {len(clean)} clean, {len(quarantine)} quarantined")
        return Cleaned(clean=clean.reset_index(drop=True), quarantine=quarantine.reset_index(drop=True), report=report, fills=fills)


__all__ = ["Cleaner", "Cleaned", "CleaningReport", "missing_key_fields", "duplicates_by_id", "abnormal_values", "fill_missing"]
