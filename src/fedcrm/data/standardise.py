"""Turn mapped text columns into typed canonical columns, vectorised.

Each parser returns the typed values and a mask of values that were present but could
not be read. Cleaning decides what an unreadable value means (quarantine for key fields,
"unknown" for the rest); here we only standardise spellings, units and date formats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.config import MONEY_FACTORS, TableSpec
from fedcrm.contract.model import UNKNOWN, Kind
from fedcrm.contract.tables import spellings
from fedcrm.data.ingest import ROW

MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a", "unknown"})


@dataclass(frozen=True)
class Standardised:
    frame: pd.DataFrame  # typed canonical columns + ROW
    unreadable: pd.DataFrame  # bool per canonical column: present but not parseable


def missing_mask(text: pd.Series) -> pd.Series:
    stripped = text.astype("string").str.strip().str.lower()
    return stripped.isna() | stripped.isin(MISSING_TOKENS)


def normalise_token(text: pd.Series) -> pd.Series:
    """'  Month to Month ' → 'month-to-month': one spelling per category."""
    return (
        text.astype("string").str.strip().str.lower()
        .str.replace(r"[\s_]+", "-", regex=True)
        .str.replace(r"[()]", "", regex=True)
    )


def parse_dates(text: pd.Series, formats: list[str]) -> tuple[pd.Series, pd.Series]:
    missing = missing_mask(text)
    clean = text.astype("string").str.strip()
    out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns]")
    for fmt in formats:
        todo = out.isna() & ~missing
        if not todo.any():
            break
        out.loc[todo] = pd.to_datetime(clean[todo], format=fmt, errors="coerce")
    return out, out.isna() & ~missing


_NUMBER_JUNK = re.compile(r"[\s,¥$€£]|(?i:rmb|cny|eur|usd|gbp)")


def parse_numbers(text: pd.Series, factor: float = 1.0) -> tuple[pd.Series, pd.Series]:
    missing = missing_mask(text)
    clean = text.astype("string").str.replace(_NUMBER_JUNK, "", regex=True)
    values = pd.to_numeric(clean.where(~missing), errors="coerce").astype("float64") * factor
    return values, values.isna() & ~missing


def parse_bools(text: pd.Series, true_values: list[str], false_values: list[str]) -> tuple[pd.Series, pd.Series]:
    missing = missing_mask(text)
    token = text.astype("string").str.strip().str.lower()
    truthy = token.isin([v.lower() for v in true_values])
    falsy = token.isin([v.lower() for v in false_values])
    values = pd.Series(np.where(truthy, 1.0, np.where(falsy, 0.0, np.nan)), index=text.index)
    return values, values.isna() & ~missing


def parse_categories(text: pd.Series, vocabulary: tuple[str, ...], value_map: dict[str, str]) -> tuple[pd.Series, pd.Series]:
    token = normalise_token(text)
    if value_map:
        lookup = {normalise_token(pd.Series([k])).iloc[0]: v for k, v in value_map.items()}
        token = token.map(lambda t: lookup.get(t, t) if isinstance(t, str) else t)
    # 'none' is a real category value for some fields (no internet service): only a token
    # that is not a known spelling counts as missing.
    missing = missing_mask(text) & ~token.isin(vocabulary)
    token = token.where(~missing, UNKNOWN)
    if vocabulary:
        bad = ~token.isin([*vocabulary, UNKNOWN])
        return token.where(~bad, UNKNOWN).astype(object), bad
    return token.astype(object), pd.Series(False, index=text.index)


def _on_uniques(text: pd.Series, parse) -> tuple[pd.Series, pd.Series]:  # noqa: ANN001
    """Parse each distinct value once and spread the result back over the rows.

    Exports repeat themselves (dates, prices, categories, flags): parsing the distinct
    values and taking by code turns millions of string operations into thousands."""
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    distinct = pd.concat([pd.Series(uniques).astype("string"), pd.Series([pd.NA], dtype="string")],
                         ignore_index=True)
    values, invalid = parse(distinct)
    codes = np.where(codes < 0, len(distinct) - 1, codes)
    return (pd.Series(values.to_numpy()[codes], index=text.index, dtype=values.dtype),
            pd.Series(invalid.to_numpy()[codes], index=text.index, dtype=bool))


def parse_coded(text: pd.Series, codes: dict[str, float]) -> tuple[pd.Series, pd.Series]:
    """An ordinal code map first (case and spaces ignored), then plain numbers."""
    lookup = {k.strip().lower(): float(v) for k, v in codes.items()}
    coded = np.array([lookup.get(t.strip().lower(), np.nan) if isinstance(t, str) else np.nan
                      for t in text.astype(object).tolist()], dtype="float64")
    numbers, invalid = parse_numbers(text)
    known = ~np.isnan(coded)
    return (pd.Series(np.where(known, coded, numbers.to_numpy()), index=text.index, dtype="float64"),
            invalid & ~pd.Series(known, index=text.index))


def parse_ordinal(text: pd.Series, levels: dict[str, int], value_map: dict[str, str],
                  codes: dict[str, float]) -> tuple[pd.Series, pd.Series]:
    """An ordinal's spelling (after the partner's value map) -> the contract's code; the
    partner's own code map, then a plain number, for what is not a spelling."""
    token = normalise_token(text)
    if value_map:
        lookup = {normalise_token(pd.Series([k])).iloc[0]: v for k, v in value_map.items()}
        token = token.map(lambda t: lookup.get(t, t) if isinstance(t, str) else t)
    coded = token.map(lambda t: levels.get(t) if isinstance(t, str) else None).astype("float64")
    other, invalid = parse_coded(text, codes) if codes else parse_numbers(text)
    known = coded.notna()
    return coded.where(known, other), invalid & ~known


def standardise(frame: pd.DataFrame, mapping: TableSpec) -> Standardised:
    """Parse every mapped column by its contract kind (`frame` has pipeline names)."""
    typed: dict[str, pd.Series] = {ROW: frame[ROW]}
    bad: dict[str, pd.Series] = {}
    schema = mapping.schema
    for name in frame.columns:
        if name == ROW:
            continue
        spec = schema[name]
        text = frame[name]
        if spec.kind in (Kind.ID, Kind.TEXT):
            values = text.astype("string").str.strip()
            if spec.kind is Kind.ID and mapping.id_case != "keep":
                values = values.str.lower() if mapping.id_case == "lower" else values.str.upper()
            values = values.where(~missing_mask(values))
            invalid = pd.Series(False, index=text.index)
        elif spec.kind is Kind.DATE and pd.api.types.is_datetime64_any_dtype(text):
            values, invalid = text.astype("datetime64[ns]"), pd.Series(False, index=text.index)
        elif spec.kind is Kind.DATE:
            values, invalid = _on_uniques(text, lambda t: parse_dates(t, mapping.date_formats))
        elif spec.kind is Kind.MONEY:
            values, invalid = _on_uniques(text, lambda t: parse_numbers(t, MONEY_FACTORS[mapping.money_unit]))
        elif spec.kind in (Kind.COUNT, Kind.NUMBER) and spec.name in mapping.codes:
            values, invalid = _on_uniques(text, lambda t, codes=mapping.codes[spec.name]: parse_coded(t, codes))
        elif spec.kind in (Kind.COUNT, Kind.NUMBER):
            values, invalid = _on_uniques(text, parse_numbers)
        elif spec.kind is Kind.BOOL:
            values, invalid = _on_uniques(text, lambda t: parse_bools(t, mapping.true_values, mapping.false_values))
        elif spec.kind is Kind.ORDINAL:
            values, invalid = _on_uniques(text, lambda t, s=spec: parse_ordinal(
                t, dict(s.levels or {}), mapping.values.get(s.name, {}), mapping.codes.get(s.name, {})))
        else:
            values, invalid = _on_uniques(text, lambda t, s=spec: parse_categories(
                t, spellings(s), mapping.values.get(s.name, {})))
        typed[name], bad[name] = values, invalid
    return Standardised(pd.DataFrame(typed), pd.DataFrame(bad, index=frame.index))
