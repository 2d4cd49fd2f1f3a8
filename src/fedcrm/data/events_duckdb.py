"""The purchases export cleaned and aggregated in DuckDB, with the pandas path's results.

A purchases export is by far the largest thing a partner prepares (ten purchase lines per
customer and more); pandas holds every line, typed, several times over. Here DuckDB reads
the export where it lies (Parquet directly, CSV through `read_csv` with every column as
text), with two threads (FEDCRM_DUCKDB_THREADS), a memory limit (FEDCRM_DUCKDB_MEMORY_LIMIT;
default a quarter of the machine's memory, at least 1 GB) and a spill folder in the
partner's work dir, and only what `prepare.add_activity` needs comes back into pandas:

  - the quarantined lines: file row, reason and the raw mapped values as text, exactly as
    `prepare.quarantine_rows` writes them (same reasons, same first-rule-wins order);
  - the `CleaningReport` of `Cleaner(..., dedupe=False)` over the lines;
  - the per-customer purchase features of `activity.activity_features` (same rows, order
    and columns) and the derived labels (`churn_labels`, `propensity_labels`).

Results are the pandas path's, not an approximation of it. Values are parsed the way
`fedcrm.data.standardise` parses them: a value DuckDB can read only in a form on which both
agree (ids and text trimmed, ISO-like dates and plain decimals in a canonical spelling,
typed Parquet numbers and timestamps) is read natively; every other distinct raw value is
parsed by `standardise` itself, in pandas, and joined back. Medians (outlier thresholds,
missing-value fills) are exact: taken from value counts, not from an interpolating
quantile. Sums are Kahan sums, as pandas' group-by sums are; they may differ from pandas' in
the last bits where the order of summation differs (features agree to ~1e-12 relative;
where two customers' sums tie in pandas, the marketing tags' rank may then break the tie
the other way: 4 of 744,230 customers' tags at 1M customers / 10M lines).

Query results are streamed out in Arrow batches (a result DuckDB had to hold whole would
count against its memory limit). Running out of that limit raises `DuckDBOutOfMemory`: the
pandas path would need far more. What this path does not cover raises `Unsupported` with
the reason, and the caller runs the pandas path instead (`prepare.purchase_activity`): ids
case-folded (`id_case`), CSV delimiters other than one character, encodings other than
UTF-8, compressions other than gzip, Parquet column types other than text, integers,
doubles, booleans, dates and timestamps without a time zone, and any file DuckDB cannot
read the way pandas does (the pandas path then names the problem, as before).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from fedcrm.config import MONEY_FACTORS, CleaningRules, TransactionMapping
from fedcrm.config.activity import ActivityConfig
from fedcrm.contract.model import UNKNOWN, FieldSpec, Kind
from fedcrm.data.clean import REASON, CleaningReport, bounds
from fedcrm.data.ingest import ROW
from fedcrm.data.standardise import MISSING_TOKENS, standardise
from fedcrm.privatefiles import private_dir

CUSTOMER = "customer_id"
WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())  # what str.strip() removes
DISTINCT_LIMIT = int(os.environ.get("FEDCRM_DUCKDB_DISTINCT_LIMIT", "500000"))  # values parsed in pandas, per field


def _default_memory_limit() -> str:
    """A quarter of the machine's memory, at least 1 GB: 10M purchase lines need ~0.5 GB,
    100M did not finish under 1 GB (aggregating 40M orders) and took 4.5 GB under 4 GB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return "1GB"
    return f"{max(1024, total // 4 // 2**20)}MB"


MEMORY_LIMIT = os.environ.get("FEDCRM_DUCKDB_MEMORY_LIMIT") or _default_memory_limit()
THREADS = int(os.environ.get("FEDCRM_DUCKDB_THREADS", "2"))
HISTOGRAM_LIMIT = 5_000_000  # distinct values above which a median is taken by quantile instead
REST_LIMIT = 1_000_000  # distinct values a native reading may leave to pandas
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
# date directives whose zero-padded spelling DuckDB's strptime reads exactly as pandas does
_DATE_PARTS = {"%Y": "(19|20|21)[0-9][0-9]", "%m": "(0[1-9]|1[0-2])", "%d": "(0[1-9]|[12][0-9]|3[01])",
               "%H": "([01][0-9]|2[0-3])", "%M": "[0-5][0-9]", "%S": "[0-5][0-9]"}
_NUMBER = r"-?[0-9]{1,15}(\.[0-9]+)?"  # at most 15 digits (checked by length): both parsers round alike


class Unsupported(Exception):
    """This export or option is not covered by the DuckDB path: the pandas path runs instead."""


class DuckDBOutOfMemory(MemoryError):
    """DuckDB could not finish within its memory limit. Not a case for the pandas path (it
    holds every line, several times over): the partner raises the limit instead."""


@dataclass
class PurchaseActivity:
    """What `prepare.add_activity` takes from a purchases export, whichever engine made it."""

    report: CleaningReport
    quarantine: pd.DataFrame  # ROW, REASON, the raw mapped values as text (`prepare.quarantine_rows`)
    features: pd.DataFrame  # `activity.activity_features`, index customer_id (str)
    label: pd.Series | None = None  # the derived label over the customers asked for, when asked
    engine: Literal["duckdb", "pandas"] = "duckdb"
    fallback: str | None = None  # why the pandas path ran, when DuckDB was asked for
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- SQL helpers
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _double(x: float) -> str:
    return f"CAST({_lit(repr(float(x)))} AS DOUBLE)"


def _ts(day: date) -> str:
    return f"TIMESTAMP_NS '{day.isoformat()} 00:00:00'"


def _day(day: date) -> str:
    return f"DATE '{day.isoformat()}'"


_TOKENS = ", ".join(_lit(t) for t in sorted(MISSING_TOKENS))


def _stripped(t: str) -> str:
    """Python's str.strip(): a plain value (printable ASCII at both ends) as it is, anything
    else trimmed of every character str.isspace() knows (slow in DuckDB: only those rows;
    spelt unlike `_missing_raw`'s trim, so that common-subexpression hoisting, which would
    evaluate it on every row, finds nothing to share)."""
    return (f"CASE WHEN ascii({t}) BETWEEN 33 AND 126 AND ascii(right({t}, 1)) BETWEEN 33 AND 126 "
            f"THEN {t} ELSE ltrim(rtrim({t}, {_lit(WHITESPACE)}), {_lit(WHITESPACE)}) END")


_TOKEN_STARTS = ", ".join(str(ord(c)) for c in sorted({t[0] for t in MISSING_TOKENS if t}
                                                       | {t[0].upper() for t in MISSING_TOKENS if t}))


def _missing_raw(t: str) -> str:
    """`standardise.missing_mask` of a raw text: NULL, or a missing token once stripped and
    lower-cased. A value that starts with a printable ASCII character no token starts with
    is present without more ado; the others are stripped and compared (the tokens are
    ASCII; the only non-ASCII letter that lower-cases into one, the Kelvin sign, does so in
    both engines)."""
    # CASE, not AND/OR: DuckDB short-circuits a CASE in a projection, not a conjunction
    return (f"CASE WHEN {t} IS NULL THEN true WHEN ascii({t}) BETWEEN 33 AND 126 AND ascii({t}) NOT IN "
            f"({_TOKEN_STARTS}) THEN false ELSE lower(trim({t}, {_lit(WHITESPACE)})) IN ({_TOKENS}) END")


def date_pattern(fmt: str) -> str | None:
    """A regex of the zero-padded spelling of `fmt` (years 1900-2199), or None when `fmt`
    has a directive outside %Y %m %d %H %M %S."""
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%":
            part = _DATE_PARTS.get(fmt[i:i + 2])
            if part is None:
                return None
            out.append(part)
            i += 2
        else:
            if fmt[i].isspace() and fmt[i] != " ":
                return None
            out.append(re.escape(fmt[i]))
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- the plan of one field
@dataclass
class _Field:
    name: str  # pipeline name
    spec: FieldSpec
    raw: str  # alias of the raw column in `src`: r0, r1, ...
    sqltype: str  # DuckDB type of the raw column
    text: str = ""  # SQL: pandas' text of the raw value (NULL where pandas has NaN)
    native: str | None = None  # SQL: the value where DuckDB reads it as pandas would, else NULL
    native_total: bool = False  # `native` decides every row (typed columns, ids and text)
    lookup: str | None = None  # table of the other distinct texts, parsed by `standardise`
    distinct: int = 0  # approximate distinct raw values
    int_nulls: bool = False  # an integer column with gaps that pandas reads as floats ('17.0')
    pandas_dtype: object = None  # what `read_table` makes of a Parquet column before any row (its metadata)
    value: str = ""  # SQL over `src` + lookups: the standardised value
    bad: str = "false"  # SQL: present but unreadable
    absent: str = ""  # SQL: missing or unreadable (a key field's "to be supplemented")

    @property
    def numeric(self) -> bool:
        return self.spec.kind in (Kind.MONEY, Kind.COUNT, Kind.NUMBER)


def _value_type(spec: FieldSpec) -> str:
    if spec.kind is Kind.DATE:
        return "TIMESTAMP_NS"
    if spec.kind in (Kind.ID, Kind.TEXT, Kind.CATEGORY):
        return "VARCHAR"
    return "DOUBLE"


def _null_value(spec: FieldSpec) -> str:
    """What `standardise` makes of a missing value (NaN in pandas) of a parsed kind."""
    return _lit(UNKNOWN) if spec.kind is Kind.CATEGORY else "NULL"


# ---------------------------------------------------------------- the engine
class _Engine:
    """One DuckDB connection over one purchases export: its fields planned, typed as
    `standardise` types them (the view `typed`)."""

    def __init__(self, mapping: TransactionMapping, rules: CleaningRules, as_of: date, spill: Path,
                 memory_limit: str, threads: int, distinct_limit: int) -> None:
        import duckdb

        self.mapping, self.rules, self.as_of = mapping, rules, as_of
        self.schema = mapping.schema
        self.distinct_limit = distinct_limit
        self.memory_limit = memory_limit
        self.con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit,
                                          "temp_directory": str(spill), "preserve_insertion_order": False})
        self.fields: dict[str, _Field] = {}
        self.n_rows = 0

    def rows(self, sql: str) -> list[tuple]:
        return self.con.sql(sql).fetchall()

    def table(self, sql: str) -> pa.Table:
        """A query's result streamed out in Arrow batches: a result DuckDB had to hold whole
        (millions of customers) would count against its memory limit, and it cannot spill."""
        return self.con.sql(sql).to_arrow_reader(1 << 17).read_all()

    # ------------------------------------------------------------ reading
    def source(self) -> None:
        """The view `src`: _row (1-based file row), r0.. (the mapped raw columns)."""
        m = self.mapping
        path = m.path
        if not path.is_file() or path.stat().st_size == 0:
            raise Unsupported(f"{path} is missing or empty")
        columns = m.pipeline_columns()
        try:
            if m.file_format == "parquet":
                reader = f"read_parquet({_lit(str(path))}, file_row_number = true)"
                import pyarrow.parquet as pq

                # the file's pandas metadata decides some of pandas' types (Int64 stays integers)
                dtypes = pq.read_schema(path).empty_table().to_pandas().dtypes
                names = [(r[0], r[1]) for r in self.rows(f"DESCRIBE SELECT * FROM {reader}")
                         if r[0] != "file_row_number"]
                by_name = self._by_stripped_name([n for n, _ in names])
                types = dict(names)
                select = [f"file_row_number + 1 AS {ROW}"]
                for i, (name, raw) in enumerate(columns.items()):
                    actual = by_name.get(raw)
                    if actual is None:
                        raise Unsupported(f"column {raw!r} is not in {path.name}")
                    select.append(f"{_ident(actual)} AS r{i}")
                    self.fields[name] = _Field(name, self.schema[name], f"r{i}", types[actual],
                                               pandas_dtype=dtypes.get(actual))
                self.con.execute(f"CREATE TEMP VIEW src AS SELECT {', '.join(select)} FROM {reader}")
            else:
                header = self._csv_header()
                by_name = self._by_stripped_name(header)
                spec = ", ".join(f"{_lit(f'c{i}')}: 'VARCHAR'" for i in range(len(header)))
                reader = (f"read_csv({_lit(str(path))}, header = true, auto_detect = false, columns = {{{spec}}}, "
                          f"delim = {_lit(m.delimiter)}, quote = '\"', escape = '\"', strict_mode = true, "
                          f"null_padding = false, ignore_errors = false)")
                select = []
                for i, (name, raw) in enumerate(columns.items()):
                    if raw not in by_name:
                        raise Unsupported(f"column {raw!r} is not in {path.name}")
                    # pandas reads an empty field as '' (keep_default_na=False), DuckDB as NULL
                    select.append(f"coalesce(c{header.index(by_name[raw])}, '') AS r{i}")
                    self.fields[name] = _Field(name, self.schema[name], f"r{i}", "VARCHAR")
                # CSV has no row number in DuckDB: the mapped columns are copied once, in file order
                self.con.execute("SET preserve_insertion_order = true")
                self.con.execute(f"CREATE TEMP TABLE csv_lines AS SELECT {', '.join(select)} FROM {reader}")
                self.con.execute("SET preserve_insertion_order = false")
                cols = ", ".join(f"r{i}" for i in range(len(columns)))
                self.con.execute(f"CREATE TEMP VIEW src AS SELECT rowid + 1 AS {ROW}, {cols} FROM csv_lines")
            self.n_rows = self.rows("SELECT count(*) FROM src")[0][0]
        except Unsupported:
            raise
        except Exception as exc:  # duckdb raises several types; the pandas path names the problem
            raise Unsupported(f"DuckDB could not read {path.name} as pandas does ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]})") from None
        if self.n_rows == 0:
            raise Unsupported(f"{path.name} has no data rows")

    @staticmethod
    def _by_stripped_name(names: list[str]) -> dict[str, str]:
        stripped = [str(n).strip() for n in names]  # read_table strips column names
        if len(set(stripped)) != len(stripped):
            raise Unsupported("the file has repeated column names")
        return dict(zip(stripped, names))

    def _csv_header(self) -> list[str]:
        m = self.mapping
        try:
            if codecs.lookup(m.encoding).name != "utf-8":
                raise Unsupported(f"encoding {m.encoding!r} (DuckDB reads UTF-8 here)")
        except LookupError:
            raise Unsupported(f"unknown encoding {m.encoding!r}") from None
        if m.delimiter == "whitespace" or len(m.delimiter) != 1 or m.delimiter in ('"', "\n", "\r"):
            raise Unsupported(f"delimiter {m.delimiter!r} (one character only)")
        name = m.path.name.lower()
        if name.endswith((".bz2", ".zip", ".xz", ".tar", ".zst", ".zstd", ".lzma", ".tar.gz", ".tgz")):
            raise Unsupported(f"compression of {m.path.name}")
        opener = gzip.open if name.endswith(".gz") else open
        with opener(m.path, "rt", encoding="utf-8-sig", newline="") as fh:  # pandas drops a BOM too
            first = fh.readline()
            if not first.strip("\r\n"):
                raise Unsupported("the file starts with a blank line")
            fh.seek(0)
            return next(csv.reader(fh, delimiter=m.delimiter, quotechar='"', doublequote=True))

    # ------------------------------------------------------------ typing (standardise)
    def plan(self, counted: set[str]) -> None:
        """How each field is read; `counted`: numeric fields whose distinct values are
        wanted too (exact medians from value counts)."""
        m = self.mapping
        if m.id_case != "keep":
            raise Unsupported(f"id_case = {m.id_case!r} (Unicode case folding differs between the engines)")
        # one look at the raw columns: gaps of integer columns read as text (pandas reads
        # them as floats: '17850.0'), ranges of typed dates, distinct counts
        probes: list[tuple[_Field, str, str]] = []
        for f in self.fields.values():
            t = f.sqltype
            if t in INTEGER_TYPES:
                probes.append((f, "nulls", f"count(*) - count({f.raw})"))
                if not f.numeric:
                    probes.append((f, "maxabs", f"max(abs(CAST({f.raw} AS DOUBLE)))"))
            if f.spec.kind is Kind.DATE and (t == "DATE" or t.startswith("TIMESTAMP")):
                probes += [(f, "min", f"min({f.raw})"), (f, "max", f"max({f.raw})")]
            if not self._typed_native(f) or f.name in counted:
                probes.append((f, "distinct", f"approx_count_distinct({f.raw})"))
        seen: dict[tuple[str, str], object] = {}
        if probes:
            row = self.rows("SELECT " + ", ".join(sql for _, _, sql in probes) + " FROM src")[0]
            seen = {(f.name, what): v for (f, what, _), v in zip(probes, row)}
        for f in self.fields.values():
            f.int_nulls = bool(seen.get((f.name, "nulls"))) and isinstance(f.pandas_dtype, np.dtype)
            if f.int_nulls and (seen.get((f.name, "maxabs")) or 0) >= 1e15:
                raise Unsupported(f"the integer column of {f.name!r} has gaps and values above 1e15")
            lo, hi = seen.get((f.name, "min")), seen.get((f.name, "max"))
            if lo is not None and not (pd.Timestamp("1900-01-01") <= pd.Timestamp(lo) and
                                       pd.Timestamp(hi) < pd.Timestamp("2200-01-01")):
                raise Unsupported(f"dates of {f.name!r} outside 1900-2199")
            f.distinct = int(seen.get((f.name, "distinct")) or 0)
            self._plan_field(f)
        for f in self.fields.values():
            if f.native_total:
                f.value, f.bad = f.native, "false"
            else:
                if f.distinct <= self.distinct_limit:
                    f.native = None  # few distinct values: all parsed by pandas, joined back
                self._lookup(f)  # the values `native` leaves (all of them without one), up to REST_LIMIT
                lk = f.lookup
                if f.native is None:
                    f.value, f.bad = f"{lk}.v", f"coalesce({lk}.bad, false)"
                elif lk is None:
                    f.value, f.bad = f"CASE WHEN {f.text} IS NULL THEN {_null_value(f.spec)} ELSE {f.native} END", "false"
                else:
                    f.value = (f"CASE WHEN {f.text} IS NULL THEN {_null_value(f.spec)} "
                               f"ELSE coalesce({f.native}, {lk}.v) END")
                    f.bad = f"({f.text} IS NOT NULL AND {f.native} IS NULL AND coalesce({lk}.bad, false))"
            if f.spec.kind in (Kind.ID, Kind.TEXT):
                f.absent = _missing_raw(f.text)
            else:
                f.absent = f"({f.value} IS NULL OR {f.bad})"

    def _typed_native(self, f: _Field) -> bool:
        """Read natively on every row: ids and text, typed numbers, timestamps."""
        coded = f.spec.name in self.mapping.codes or f.name in self.mapping.codes
        return (f.spec.kind in (Kind.ID, Kind.TEXT) or f.spec.kind is Kind.DATE and f.sqltype.startswith("TIMESTAMP")
                or f.numeric and f.sqltype not in ("VARCHAR", "BOOLEAN") and not coded)

    def _plan_field(self, f: _Field) -> None:
        kind, t, m = f.spec.kind, f.sqltype, self.mapping
        factor = MONEY_FACTORS[m.money_unit] if kind is Kind.MONEY else 1.0
        scale = f" * {_double(factor)}" if factor != 1.0 else ""
        coded = f.spec.name in m.codes or f.name in m.codes
        # pandas' text of the raw value
        if t == "VARCHAR":
            f.text = f.raw
        elif t in INTEGER_TYPES:
            f.text = f"(CAST({f.raw} AS VARCHAR) || '.0')" if f.int_nulls else f"CAST({f.raw} AS VARCHAR)"
        elif t == "BOOLEAN":
            f.text = f"CASE WHEN {f.raw} THEN 'True' WHEN NOT {f.raw} THEN 'False' END"
        elif t == "DOUBLE" and f.numeric and not coded:
            f.text = f.raw
        elif t == "DATE" and kind is Kind.DATE:
            f.text = f"strftime({f.raw}, '%Y-%m-%d')"
        elif t in ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S") and kind is Kind.DATE:
            f.text = f.raw
        else:
            raise Unsupported(f"the column of {f.name!r} has type {t} (pandas reads it as {kind.value} its own way)")
        # the native reading
        if kind in (Kind.ID, Kind.TEXT):
            f.native = f"CASE WHEN {_missing_raw(f.text)} THEN NULL ELSE {_stripped(f.text)} END"
            f.native_total = True
        elif kind is Kind.DATE and t.startswith("TIMESTAMP"):
            f.native, f.native_total = f"CAST({f.raw} AS TIMESTAMP_NS)", True
        elif kind is Kind.DATE:
            fmt = m.date_formats[0] if m.date_formats else None
            pattern = date_pattern(fmt) if fmt else None
            if pattern is not None:
                f.native = (f"CASE WHEN regexp_full_match({f.text}, {_lit(pattern)}) "
                            f"THEN CAST(try_strptime({f.text}, {_lit(fmt)}) AS TIMESTAMP_NS) END")
        elif f.numeric and t not in ("VARCHAR", "BOOLEAN") and not coded:
            x = f"CAST({f.raw} AS DOUBLE)"
            f.native = f"CASE WHEN isnan({x}) THEN NULL ELSE {x}{scale} END"  # NaN: missing to pandas
            f.native_total = True
        elif f.numeric and t == "VARCHAR" and not coded:
            f.native = (f"CASE WHEN strlen({f.text}) <= 16 AND NOT starts_with({f.text}, '-0') AND "
                        f"regexp_full_match({f.text}, {_lit(_NUMBER)}) THEN CAST({f.text} AS DOUBLE){scale} END")

    def _lookup(self, f: _Field) -> None:
        """The distinct texts `native` leaves undecided, parsed by `standardise` in pandas."""
        where = "" if f.native is None else f"WHERE {f.text} IS NOT NULL AND ({f.native}) IS NULL"
        limit = max(self.distinct_limit, REST_LIMIT)
        texts = self.table(f"SELECT DISTINCT {f.text} AS t FROM src {where} LIMIT {limit + 1}")
        if texts.num_rows > limit:
            raise Unsupported(f"{f.name!r}: more than {limit} distinct values that DuckDB cannot read as pandas does "
                              f"({f.spec.kind.value}, formats {self.mapping.date_formats})")
        if texts.num_rows == 0:
            return
        values = texts.column("t").to_pandas()
        frame = pd.DataFrame({ROW: np.arange(1, len(values) + 1), f.name: values.astype(object)})
        typed = standardise(frame, self.mapping)
        parsed = typed.frame[f.name]
        if f.spec.kind is Kind.DATE:
            v = pa.array(parsed.astype("datetime64[ns]").to_numpy(), type=pa.timestamp("ns"),
                         mask=parsed.isna().to_numpy())
        elif f.spec.kind is Kind.CATEGORY:
            v = pa.array(parsed.astype(object).where(parsed.notna(), None).tolist(), type=pa.string())
        else:
            v = pa.array(parsed.to_numpy(dtype="float64", na_value=np.nan), type=pa.float64(), from_pandas=True)
        table = pa.table({"t": texts.column("t").cast(pa.string()), "v": v,
                          "bad": pa.array(typed.unreadable[f.name].to_numpy(dtype=bool))})
        f.lookup = f"lk_{f.raw}"
        self.con.register(f.lookup, table)

    def typed_view(self) -> None:
        """The view `typed`: _row, r0.. (raw), and per field v_ (value), b_ (unreadable),
        k_ (missing or unreadable)."""
        cols = [f"src.{ROW}"] + [f"src.{f.raw}" for f in self.fields.values()]
        joins = []
        for f in self.fields.values():
            cols += [f"CAST({f.value} AS {_value_type(f.spec)}) AS {_ident('v_' + f.name)}",
                     f"{f.bad} AS {_ident('b_' + f.name)}", f"{f.absent} AS {_ident('k_' + f.name)}"]
            if f.spec.kind in (Kind.ID, Kind.TEXT):
                cols.append(f"{f.text} AS {_ident('t_' + f.name)}")
            if f.lookup is not None:
                joins.append(f"LEFT JOIN {f.lookup} ON {f.text} IS NOT DISTINCT FROM {f.lookup}.t")
        self.con.execute(f"CREATE TEMP VIEW typed AS SELECT {', '.join(cols)} FROM src {' '.join(joins)}")


# ---------------------------------------------------------------- medians, as pandas takes them
def _median_from_counts(values: np.ndarray, counts: np.ndarray) -> float:
    """`Series.median()` from value counts: the middle element, or the mean of the two."""
    keep = (counts > 0) & ~np.isnan(values)
    values, counts = values[keep], counts[keep]
    n = int(counts.sum())
    if n == 0:
        return math.nan
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    lo = float(v[np.searchsorted(c, (n - 1) // 2 + 1)])  # element (n-1)//2, 0-based
    if n % 2:
        return lo
    hi = float(v[np.searchsorted(c, n // 2 + 1)])
    return float(np.mean(np.array([lo, hi])))


def _quantile_median(eng: _Engine, source: str, expr: str) -> float:
    """The median by DuckDB's discrete quantiles (every value held: for many distinct values)."""
    n, lo, neg_hi = eng.rows(f"SELECT count(h), quantile_disc(h, 0.5), quantile_disc(-h, 0.5) "
                             f"FROM (SELECT {expr} AS h FROM {source})")[0]
    if not n:
        return math.nan
    return float(lo) if n % 2 else float(np.mean(np.array([float(lo), -float(neg_hi)])))


# ---------------------------------------------------------------- the cleaning rules, in SQL
@dataclass(frozen=True)
class _Rule:
    cond: str  # SQL, NULL counts as false
    reason: str
    outlier: bool = False  # x the median: the only rule whose threshold needs a first pass


def _key_rules(eng: _Engine) -> list[_Rule]:
    """`clean.missing_key_fields`, in the contract's key order."""
    return [_Rule(f"k_{n}", f"to be supplemented: {n} missing or unreadable")
            for n in eng.schema.key_fields() if n in eng.fields]


def _multiples(eng: _Engine) -> dict[str, float]:
    out = {}
    for f in eng.fields.values():
        if f.numeric:
            multiple = f.spec.outlier_median_multiple or (
                eng.rules.outlier_spend_multiple if f.spec.kind is Kind.MONEY else None)
            if multiple:
                out[f.name] = multiple
    return out


def _abnormal_rules(eng: _Engine, medians: dict[str, float] | None) -> list[_Rule]:
    """`clean.abnormal_values`, rule by rule in the frame's column order; without `medians`
    the outlier rules are left out (the rules that need no first pass)."""
    out = []
    multiples = _multiples(eng)
    for f in eng.fields.values():
        spec, col, shown = f.spec, f"v_{f.name}", f.spec.name
        if f.numeric:
            rng = bounds(spec, eng.rules)
            if rng is not None:
                lo, hi = rng
                if lo == 0 and hi == np.inf:
                    out.append(_Rule(f"{col} < 0", f"abnormal: negative {shown}"))
                elif hi == np.inf:
                    out.append(_Rule(f"{col} < {_double(lo)}", f"abnormal: {shown} below {lo:g}"))
                elif lo == -np.inf:
                    out.append(_Rule(f"{col} > {_double(hi)}", f"abnormal: {shown} above {hi:g}"))
                else:
                    out.append(_Rule(f"({col} < {_double(lo)} OR {col} > {_double(hi)})",
                                     f"abnormal: {shown} outside [{lo:g}, {hi:g}]"))
            if f.name in multiples and medians is not None:
                multiple, median = multiples[f.name], medians[f.name]
                if not math.isnan(median):
                    threshold = float(np.float64(multiple) * np.float64(median))  # as pandas multiplies
                    out.append(_Rule(f"{col} > {_double(threshold)}",
                                     f"abnormal: {shown} above {multiple:g}x the median ({median:.2f})", True))
        if spec.kind is Kind.DATE:
            out.append(_Rule(f"{col} > {_ts(eng.as_of)}",
                             f"abnormal: {shown} in the future (after {eng.as_of.isoformat()})"))
    return out


def _any(rules: list[_Rule]) -> str:
    return "(" + " OR ".join(f"coalesce({r.cond}, false)" for r in rules) + ")" if rules else "false"


def _reason(rules: list[_Rule]) -> str:
    if not rules:
        return "CAST(NULL AS VARCHAR)"
    return "CASE " + " ".join(f"WHEN {r.cond} THEN {_lit(r.reason)}" for r in rules) + " END"


def _fill_rule(eng: _Engine, f: _Field) -> tuple[str, object]:
    """`clean.fill_missing`'s rule for one field: ('median', None) or ('value', v)."""
    spec, rules = f.spec, eng.rules
    rule = spec.missing
    default = rules.defaults.get(spec.name, rules.defaults.get(f.name))
    if default is not None:
        return "value", default
    if spec.kind is Kind.CATEGORY:
        return "value", rule if isinstance(rule, str) else UNKNOWN
    if rule == "zero":
        return "value", 0.0
    if spec.kind is Kind.ORDINAL and isinstance(rule, str) and rule in (spec.levels or {}):
        return "value", float((spec.levels or {})[rule])
    if isinstance(rule, bool | int | float) and not (rule == "median"):
        return "value", float(rule)
    return "median", None


def _fillable(f: _Field) -> bool:
    return not (f.spec.key or f.spec.kind in (Kind.ID, Kind.TEXT, Kind.DATE))


def _gap(f: _Field) -> str:
    """`fill_missing`'s gap: missing or unreadable ('unknown' too, for a category)."""
    if f.spec.kind is Kind.CATEGORY:
        return f"(k_{f.name} OR v_{f.name} = {_lit(UNKNOWN)})"
    return f"k_{f.name}"


VALUE_FIELDS = ("amount", "quantity", "unit_price")  # what a purchase's value is made of


# ---------------------------------------------------------------- the whole unit of work
def purchase_activity_duckdb(mapping: TransactionMapping, rules: CleaningRules, as_of: date, activity: ActivityConfig,
                             work_dir: Path, label: str | None = None, target_category: str = "",
                             ids: pd.Index | None = None, memory_limit: str | None = None,
                             threads: int | None = None, distinct_limit: int | None = None) -> PurchaseActivity:
    """Clean the purchases export and aggregate it per customer in DuckDB (see the module
    docstring); `Unsupported` when the export or an option is not covered."""
    import time

    try:
        import duckdb
    except ImportError:
        raise Unsupported("duckdb is not installed") from None
    cols = mapping.pipeline_columns()
    if "amount" not in cols and not ("quantity" in cols and "unit_price" in cols):
        raise Unsupported("purchase values need amount, or quantity and unit_price")
    if label == "bought-category" and "category" not in cols:
        raise Unsupported("a bought-category label needs the category column")
    for name in (*VALUE_FIELDS, "category"):
        if name in cols:
            spec = mapping.schema[name]
            default = rules.defaults.get(spec.name, rules.defaults.get(name))
            if default is not None and (isinstance(default, bool) or
                                        (spec.kind is Kind.CATEGORY) != isinstance(default, str)):
                raise Unsupported(f"cleaning.defaults for {name!r} ({default!r}) is not of the field's type")

    private_dir(work_dir)
    spill = Path(tempfile.mkdtemp(prefix="duckdb-spill-", dir=work_dir))  # 0700: raw values may spill here
    timings: dict[str, float] = {}
    clock = [time.perf_counter(), time.process_time()]

    def tick(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 3)
        clock[0] = now
        if os.environ.get("FEDCRM_DUCKDB_CPU_TIMES"):
            timings[name + " cpu"] = round(time.process_time() - clock[1], 3)
            clock[1] = time.process_time()

    eng = None
    try:
        eng = _Engine(mapping, rules, as_of, spill, memory_limit or MEMORY_LIMIT, threads or THREADS,
                      DISTINCT_LIMIT if distinct_limit is None else distinct_limit)
        eng.source()
        multiples = _multiples(eng)
        fill_median = [n for n in VALUE_FIELDS if n in eng.fields and _fillable(eng.fields[n])
                       and _fill_rule(eng, eng.fields[n])[0] == "median"]
        eng.plan(set(multiples) | set(fill_median))
        eng.typed_view()
        tick("read+plan")
        first = _first_pass(eng, multiples, fill_median)
        tick("first pass: counts, outlier medians")
        rules = [*_key_rules(eng), *_abnormal_rules(eng, first["medians"])]  # first rule wins
        quarantine, held = _quarantine(eng, rules, fill_median)
        tick("quarantine")
        fills, filled = _fills(eng, rules, first, held)
        tick("fills")
        features, after, target, spend = _aggregate(eng, rules, fills, first["to_strip"], activity.cutoff_for(as_of),
                                             activity, label, target_category)
        tick("aggregate")
    except duckdb.OutOfMemoryException as exc:  # not a reason for pandas, which would need far more
        raise DuckDBOutOfMemory(f"DuckDB ran out of its memory limit ({memory_limit or MEMORY_LIMIT}; FEDCRM_DUCKDB_MEMORY_LIMIT "
                                f"raises it): {str(exc).splitlines()[0][:200]}") from None
    except duckdb.Error as exc:
        raise Unsupported(f"DuckDB failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    finally:
        if eng is not None:
            eng.con.close()
        shutil.rmtree(spill, ignore_errors=True)

    tick("close")
    report = _report(eng, quarantine, first["unreadable"], first["present"], filled)
    derived = None
    if label is not None and ids is not None:  # `churn_labels` / `propensity_labels` over `ids`
        import pyarrow.compute as pc

        known = pa.array(np.asarray(ids, dtype=object), type=pa.string())
        if label == "no-purchase":
            hit = pc.is_in(known, value_set=after).to_numpy(zero_copy_only=False)
            derived = pd.Series((~hit).astype(np.int8), index=ids, name="churned")
        elif label == "future-spend":  # as `future_spend`: 0 for a customer without a purchase in the horizon
            spent = spend.reindex(pd.Index(np.asarray(ids, dtype=object).astype(str)), fill_value=0.0)
            derived = pd.Series(spent.to_numpy(dtype=np.float64), index=ids, name="future_spend")
        elif label == "time-to-churn":  # as `lapse_days_after`: 1 for a customer without any purchase
            day = spend.reindex(pd.Index(np.asarray(ids, dtype=object).astype(str)), fill_value=1.0)
            derived = pd.Series(day.to_numpy(dtype=np.float64), index=ids, name="lapse_day")
        else:
            hit = pc.is_in(known, value_set=target).to_numpy(zero_copy_only=False)
            derived = pd.Series(hit.astype(np.int8), index=ids, name="responded")
    tick("report+label")
    return PurchaseActivity(report=report, quarantine=quarantine, features=features, label=derived,
                            engine="duckdb", timings=timings)


JOINT_LIMIT = 4_000_000  # value combinations above which each median's value counts get their own scan


def _first_pass(eng: _Engine, multiples: dict[str, float], fill_median: list[str]) -> dict:
    """One scan, one group-by: rows counted by a signature of flags (live; per field
    present, unreadable, gap) and by the values whose medians are wanted. From it: the
    figures over all rows, the outlier medians (live rows, values > 0) and the value counts
    over all rows the fill medians start from (less the quarantined rows, later)."""
    fields = list(eng.fields.values())
    bits: list[tuple[str, str]] = [("alive", "NOT " + _any(_key_rules(eng)))]  # (name, SQL flag)
    for f in fields:
        present = (f"(v_{f.name} IS DISTINCT FROM {_lit(UNKNOWN)} AND NOT b_{f.name})"
                   if f.spec.kind is Kind.CATEGORY else f"NOT k_{f.name}")
        bits.append((f"p:{f.name}", present))
        if f.bad != "false":
            bits.append((f"b:{f.name}", f"b_{f.name}"))
        if _fillable(f):
            bits.append((f"g:{f.name}", _gap(f)))
        if f.name in (CUSTOMER, "tx_id") and f.spec.kind in (Kind.ID, Kind.TEXT):  # grouped by: any to strip?
            t = f"t_{f.name}"
            bits.append((f"s:{f.name}", f"CASE WHEN ascii({t}) BETWEEN 33 AND 126 THEN ascii(right({t}, 1)) "
                                        f"NOT BETWEEN 33 AND 126 ELSE {t} IS NOT NULL END"))
    if len(bits) > 62:
        raise Unsupported("too many fields for the DuckDB path's row signature")
    sig = " + ".join(f"CASE WHEN {flag} THEN {1 << k} ELSE 0 END" for k, (_, flag) in enumerate(bits))
    wanted = list(dict.fromkeys([*multiples, *fill_median]))
    big = [n for n in wanted if eng.fields[n].distinct > HISTOGRAM_LIMIT]
    counted = [n for n in wanted if n not in big]
    joint = 1
    for n in counted:
        joint *= eng.fields[n].distinct + 1
    groups = [counted] if joint <= JOINT_LIMIT else [[n] for n in counted]
    sigs, hist = None, {}
    for names in groups:
        values = "".join(f", v_{n} AS h_{n}" for n in names)
        table = eng.table(f"SELECT sig{''.join(f', h_{n}' for n in names)}, count(*) AS c "
                          f"FROM (SELECT CAST({sig} AS BIGINT) AS sig{values} FROM typed) GROUP BY ALL")
        c = table.column("c").to_numpy().astype("int64")
        s = table.column("sig").to_numpy().astype("int64")
        if sigs is None:
            sigs = pd.Series(c).groupby(s).sum()
        for n in names:
            hist[n] = (table.column(f"h_{n}").to_numpy(zero_copy_only=False).astype("float64"), s, c)

    def total(name: str) -> int:
        k = next((k for k, (n, _) in enumerate(bits) if n == name), None)
        return 0 if k is None else int(sigs[(sigs.index.to_numpy() & (1 << k)) != 0].sum())

    out = {"unreadable": {f.name: total(f"b:{f.name}") for f in fields},
           "present": {f.name: total(f"p:{f.name}") for f in fields},
           "gaps": {f.name: total(f"g:{f.name}") for f in fields if _fillable(f)},
           "to_strip": {f.name: total(f"s:{f.name}") for f in fields if f.name in (CUSTOMER, "tx_id")},
           "medians": {}, "fill_counts": {}}
    for n in multiples:
        if n in big:
            out["medians"][n] = _quantile_median(eng, "typed", f"CASE WHEN NOT {_any(_key_rules(eng))} "
                                                                f"AND v_{n} > 0 THEN v_{n} END")
        else:
            v, s, c = hist[n]
            live = ((s & 1) != 0) & (v > 0)  # bit 0: alive
            out["medians"][n] = _median_from_counts(v[live], c[live])
    for n in fill_median:
        if n in big:
            out["fill_counts"][n] = None  # taken over the clean rows once the quarantine is known
        else:
            v, _, c = hist[n]
            keep = ~np.isnan(v)
            out["fill_counts"][n] = pd.Series(c[keep]).groupby(v[keep]).sum()
    return out


def _quarantine(eng: _Engine, rules: list[_Rule], fill_median: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`prepare.quarantine_rows` of the quarantined lines (ROW, REASON, raw values as text);
    and, for the fills, their gaps and values (to take them off the first pass's figures)."""
    fields = list(eng.fields.values())
    extra = [f"{_gap(f)} AS {_ident('_g_' + f.name)}" for f in fields if _fillable(f)] + \
            [f"v_{n} AS {_ident('_v_' + n)}" for n in fill_median]
    raw = ", ".join(f"{f.raw} AS {_ident(f.name)}" for f in fields)
    table = eng.table(f"SELECT * FROM (SELECT {ROW}, {_reason(rules)} AS reason, {raw}{''.join(', ' + e for e in extra)} "
                      f"FROM typed) WHERE reason IS NOT NULL")
    table = table.take(np.argsort(table.column(ROW).to_numpy(), kind="stable"))  # file order
    body = {}
    for f in fields:
        col = table.column(f.name)
        if f.int_nulls:
            col = col.cast(pa.float64())  # pandas read the whole column as floats
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        values = pa.table({"c": col}).to_pandas()["c"]
        if pd.api.types.is_extension_array_dtype(f.pandas_dtype) and pd.api.types.is_integer_dtype(f.pandas_dtype):
            values = values.astype(f.pandas_dtype)  # the file's pandas metadata: nullable integers ('17')
        body[f.name] = values.astype("string")
    frame = pd.DataFrame({ROW: table.column(ROW).to_numpy().astype("int64"),
                          REASON: pd.Series(table.column("reason").to_pylist(), dtype=object)})
    quarantine = pd.concat([frame, pd.DataFrame(body, index=frame.index)], axis=1)
    held = pd.DataFrame({c: table.column(c).to_numpy(zero_copy_only=False)
                         for c in table.column_names if c.startswith("_") and c != ROW})
    return quarantine, held


def _fills(eng: _Engine, rules: list[_Rule], first: dict, held: pd.DataFrame
           ) -> tuple[dict[str, object], dict[str, int]]:
    """`fill_missing` over the clean rows: its gap counts and the fill value of each value
    field (and of the category): the first pass's figures over all rows less the
    quarantined rows'."""
    filled = {}
    for f in eng.fields.values():
        if _fillable(f):
            gone = int(held[f"_g_{f.name}"].to_numpy(dtype=bool).sum()) if len(held) else 0
            filled[f.name] = first["gaps"][f.name] - gone
    fills: dict[str, object] = {}
    for name in (*VALUE_FIELDS, "category"):
        f = eng.fields.get(name)
        if f is None or not _fillable(f):
            continue
        how, value = _fill_rule(eng, f)
        if how == "value":
            fills[name] = float(value) if f.numeric else value
            continue
        counts = first["fill_counts"].get(name)
        if counts is None:  # many distinct values: by quantiles over the clean rows
            median = _quantile_median(eng, "typed", f"CASE WHEN NOT {_any(rules)} THEN v_{name} END")
        else:
            if len(held):
                v = held[f"_v_{name}"].to_numpy(dtype="float64", na_value=np.nan)
                gone = pd.Series(1, index=v[~np.isnan(v)]).groupby(level=0).sum()
                counts = counts.sub(gone, fill_value=0)
            median = _median_from_counts(counts.index.to_numpy(dtype="float64"), counts.to_numpy(dtype="float64"))
        fills[name] = median if not math.isnan(median) else 0.0
    return fills, filled


def _report(eng: _Engine, quarantine: pd.DataFrame, unreadable: dict[str, int], present: dict[str, int],
            filled: dict[str, int]) -> CleaningReport:
    """The `Cleaner`'s report (its code for the reasons' families and their order)."""
    rows_in = eng.n_rows
    counts = quarantine[REASON].value_counts()
    families = counts.index.str.replace(r" \(.*\)$", "", regex=True).str.replace(r"row \d+", "a later row", regex=True)
    by_reason = counts.groupby(families, sort=False).sum().sort_values(ascending=False, kind="stable")
    report = CleaningReport(
        rows_in=rows_in, rows_clean=rows_in - len(quarantine), rows_quarantined=len(quarantine),
        quarantined_by_reason={str(k): int(v) for k, v in by_reason.items()}, duplicates=0,
        unreadable_by_field={k: v for k, v in unreadable.items() if v},
        filled_by_field={k: v for k, v in filled.items() if v},
        completeness_pct={k: round(float(v / rows_in) * 100, 2) for k, v in present.items()},
    )
    if report.rows_clean + report.rows_quarantined != rows_in:
        raise AssertionError(f"rows lost in cleaning: {rows_in} in, {report.rows_clean} clean, "
                             f"{len(quarantine)} quarantined")
    return report


def _aggregate(eng: _Engine, rules: list[_Rule], fills: dict[str, object], to_strip: dict[str, int], cutoff: date,
               activity: ActivityConfig, label: str | None, target_category: str
               ) -> tuple[pd.DataFrame, pa.Array, pa.Array, pd.Series]:
    """lines → purchases → per customer (`activity.purchases` + `activity_features`), with
    the buyers in the label horizon (of anything, and of the target category) and what each
    customer spent in it (a time-to-churn label: the day each customer's silence reached the
    lapse, in place of the spend)."""
    cols = eng.fields
    # ids with nothing to strip (the first pass counted them) are grouped by as they are
    customer = f"t_{CUSTOMER}" if to_strip.get(CUSTOMER, 1) == 0 else f"v_{CUSTOMER}"  # never missing here

    def filled(name: str) -> str:
        fill = fills.get(name)
        if fill is None:
            return f"v_{name}"
        value = _lit(fill) if isinstance(fill, str) else _double(float(fill))
        return f"CASE WHEN {_gap(cols[name])} THEN {value} ELSE v_{name} END"

    value = filled("amount") if "amount" in cols else f"{filled('quantity')} * {filled('unit_price')}"
    order = "CAST(v_tx_date AS DATE)"
    if "tx_id" in cols:
        order = "CASE WHEN k_tx_id THEN NULL ELSE t_tx_id END" if to_strip.get("tx_id", 1) == 0 else "v_tx_id"
    h, t, w = activity.horizon_days, activity.trend_days, activity.window_days
    end, end_d = _ts(cutoff), _day(cutoff)
    target = "false"
    if label == "bought-category" and "category" in cols:
        target = (f"({filled('category')} = {_lit(target_category)} AND v_tx_date > {end} "
                  f"AND v_tx_date <= {_ts(cutoff + timedelta(days=h))})")
    start, recent, previous = (_day(cutoff - timedelta(days=d)) for d in (w, t, 2 * t))
    after_end = _day(cutoff + timedelta(days=h))
    in_window = f"d <= {end_d} AND d > {start}"
    clean = f"NOT {_any(rules)}"
    # time-to-churn (`fedcrm.ml.survival.lapse_day`): a purchase at t followed by the next
    # at n has the customer lapsed on days [t + lapse, n); the first such day in the horizon
    lapses, lapse_day = "", "NULL"
    if label == "time-to-churn":
        g = activity.lapse_days
        lapses = f""",
    lapses AS (
      SELECT c, min(lo) AS lapse_day FROM (
        SELECT c, greatest(date_diff('day', {end_d}, d) + {g}, 1) AS lo,
               date_diff('day', {end_d}, lead(d) OVER (PARTITION BY c ORDER BY d)) AS nxt
        FROM bought WHERE d <= {after_end}
      ) WHERE lo <= {h} AND (nxt IS NULL OR nxt > lo) GROUP BY c
    )"""
        lapse_day = f"CASE WHEN count(*) FILTER (d <= {after_end}) = 0 THEN 1 ELSE max(lapses.lapse_day) END"
    sql = f"""
    WITH bought AS (
      SELECT {customer} AS c, min(CAST(v_tx_date AS DATE)) AS d, fsum({value}) AS value, min({ROW}) AS first_row,
             {f"bool_or({target})" if target != "false" else "false"} AS target
      FROM typed WHERE {clean} GROUP BY {order}, {customer}
    ){lapses}
    SELECT c AS customer_id, min(first_row) AS first_row, {lapse_day} AS lapse_day,
           count(*) FILTER (d <= {end_d}) AS n_before,
           date_diff('day', max(d) FILTER (d <= {end_d}), {end_d}) AS recency_days,
           date_diff('day', min(d) FILTER (d <= {end_d}), {end_d}) AS customer_days,
           count(*) FILTER ({in_window}) AS frequency,
           coalesce(fsum(value) FILTER ({in_window}), 0.0) AS monetary,
           count(*) FILTER (d <= {end_d} AND d > {recent}) AS freq_recent,
           count(*) FILTER (d <= {recent} AND d > {previous}) AS freq_previous,
           bool_or(d > {end_d} AND d <= {after_end}) AS bought_after,
           coalesce(fsum(value) FILTER (d > {end_d} AND d <= {after_end}), 0.0) AS spend_after,
           bool_or(target) AS bought_target
    FROM bought {"LEFT JOIN lapses USING (c)" if lapses else ""} GROUP BY c
    """
    agg = eng.table(sql)
    agg = agg.take(np.argsort(agg.column("first_row").to_numpy(), kind="stable"))  # `purchases`' customer order

    def col(name: str, dtype: str) -> np.ndarray:
        values = agg.column(name)
        return (values if dtype == "object" else values.fill_null(0)).to_numpy(zero_copy_only=False).astype(dtype)

    before = col("n_before", "int64") > 0
    customers = col("customer_id", "object")
    out = pd.DataFrame({name: col(name, "float64" if name == "monetary" else "int64")[before]
                        for name in ("recency_days", "customer_days", "frequency", "monetary", "freq_recent",
                                     "freq_previous")}, index=pd.Index(customers[before]))
    out["activity_trend"] = np.log((out["freq_recent"] + 1) / (out["freq_previous"] + 1))  # as activity_features
    out.index = pd.Index(out.index.astype(str), name=CUSTOMER)
    ids = agg.column("customer_id").cast(pa.string())
    after = ids.filter(agg.column("bought_after").fill_null(False)).combine_chunks()
    target_buyers = ids.filter(agg.column("bought_target").fill_null(False)).combine_chunks()
    index = pd.Index(ids.to_numpy(zero_copy_only=False))
    spend = pd.Series(col("spend_after", "float64"), index=index)
    if label == "time-to-churn":  # the day the silence reached the lapse (NaN: not in the horizon)
        spend = pd.Series(agg.column("lapse_day").cast(pa.float64()).to_numpy(zero_copy_only=False), index=index)
    return out, after, target_buyers, spend


__all__ = ["DuckDBOutOfMemory", "PurchaseActivity", "Unsupported", "purchase_activity_duckdb", "date_pattern"]
