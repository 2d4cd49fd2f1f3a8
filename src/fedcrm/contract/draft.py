"""Draft a data contract from one export: `fedcrm contract draft`.

A sample of the file (CSV, any usual delimiter or whitespace; or Parquet) is profiled
column by column: kind (id, bool, date, money, count, number, category, text), a cautious
data grade from the column's name and values (names, phones, emails, id numbers and
addresses core-sensitive; age, birth dates, gender, postcodes and places sensitive, with a
generalisation rule), and a vocabulary ("learned"; the export's own spellings in a comment).
Every inference a person must confirm carries a `# REVIEW:` comment. The result is TOML
text that `Contract.loads` accepts as it stands.

The profiles are shared with `fedcrm.contract.mapping`, which matches an export against a
contract the same way.
"""

from __future__ import annotations

import csv
import json
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import pandas as pd

from fedcrm.contract.model import Contract, Generalise, Grade, Kind, normalise_token
from fedcrm.errors import ConfigError, DataError

# the same tokens `fedcrm.data.standardise` treats as missing
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a", "unknown"})
TRUE_SPELLINGS = frozenset({"yes", "y", "true", "t", "1", "1.0"})
FALSE_SPELLINGS = frozenset({"no", "n", "false", "f", "0", "0.0"})
DEFAULT_TRUE = ["yes", "y", "true", "1", "t"]  # TableSpec's defaults
DEFAULT_FALSE = ["no", "n", "false", "0", "f"]
LABEL_FIELDS = {"churn": "churned", "propensity": "responded"}  # today's label sources
SHOWN_MIN_COUNT = 5  # spellings seen fewer times are not written into the draft
MAX_SHOWN = 30

DATE_FORMATS = (
    "%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ",
    "%d/%m/%Y", "%m/%d/%Y", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
    "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d-%m-%Y", "%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y%m%d",
    "%d/%m/%y", "%m/%d/%y", "%d %b %Y", "%d-%b-%Y", "%b %d %Y",
)

MONEY_WORDS = frozenset({"price", "amount", "amt", "spend", "spent", "charge", "charges", "fee", "fees", "revenue",
                         "cost", "costs", "balance", "salary", "income", "paid", "payment", "bill", "billed",
                         "turnover", "sales", "value", "cents", "eur", "usd", "gbp", "rmb", "cny"})
NOT_MONEY_WORDS = frozenset({"idx", "index", "rate", "ratio", "pct", "percent", "share", "count", "number", "nr",
                             "score", "rank"})
DATE_WORDS = frozenset({"date", "dt", "day", "time", "timestamp", "since", "joined", "opened", "birth", "dob",
                        "birthday", "updated", "created", "at", "on", "when"})
NAME_WORDS = frozenset({"name", "fullname", "firstname", "lastname", "surname", "forename", "givenname", "familyname"})
PHONE_WORDS = frozenset({"phone", "mobile", "msisdn", "tel", "telephone", "cellphone", "phonenumber", "fax"})
EMAIL_WORDS = frozenset({"email", "mail", "emailaddress"})
NATIONAL_ID_WORDS = frozenset({"ssn", "nin", "passport", "nationalid", "idcard", "idnumber", "taxid", "iban",
                               "cardnumber", "creditcard", "accountnumber", "licence", "license", "socialsecurity"})
ADDRESS_WORDS = frozenset({"address", "street", "addr", "addressline", "streetaddress", "house"})
AGE_WORDS = frozenset({"age"})
BIRTH_WORDS = frozenset({"birth", "dob", "birthday", "birthdate", "born"})
GENDER_WORDS = frozenset({"gender", "sex"})
POSTCODE_WORDS = frozenset({"postcode", "zip", "zipcode", "postal", "postalcode", "plz", "postleitzahl"})
PLACE_WORDS = frozenset({"region", "city", "country", "state", "province", "county", "town", "district",
                         "municipality", "location", "area", "geo"})
PERSONAL_WORDS = frozenset({"marital", "maritalstatus", "ethnicity", "race", "religion", "nationality", "health",
                            "disability", "language"})
RECORD_WORDS = frozenset({"updated", "update", "modified", "record", "asof", "snapshot", "extract", "extracted",
                          "loaded", "export", "exported", "lastupdate", "lastmodified"})
SIGNUP_WORDS = frozenset({"signup", "join", "joined", "since", "start", "started", "opened", "open", "created",
                          "activation", "activated", "registered", "registration", "enrolled", "onboarded"})
ID_WORDS = frozenset({"id", "no", "nr", "num", "number", "ref", "key", "code", "uuid", "guid"})


def split_words(column: str) -> list[str]:
    """'customerID' -> ['customer', 'id']; 'emp.var.rate' -> ['emp', 'var', 'rate']."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(column).strip())
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return [w for w in re.split(r"[^0-9a-zA-Z]+", text.lower()) if w]


def snake_case(column: str) -> str:
    """A column name as a contract field name (snake_case, starting with a letter)."""
    name = "_".join(split_words(column))
    if not name:
        return "column"
    return name if name[0].isalpha() else f"f_{name}"


def _words(column: str) -> set[str]:
    words = split_words(column)
    return set(words) | {"".join(words)}


# ---------------------------------------------------------------------------- reading


@dataclass
class Sample:
    path: Path
    format: str  # csv | parquet
    delimiter: str | None  # as written in a partner config ("\\s+" for whitespace); None for Parquet
    frame: pd.DataFrame  # CSV: strings; Parquet: its own types


def read_sample(path: Path, delimiter: str | None = None, sample_rows: int = 50_000) -> Sample:
    """The first `sample_rows` rows of a CSV or Parquet export, with clear errors for a
    missing, empty, header-only or nested file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (not even a header)")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1" or path.suffix.lower() in {".parquet", ".pq"}:
        return _read_parquet(path, sample_rows)
    return _read_csv(path, delimiter, sample_rows, gz=magic[:2] == b"\x1f\x8b")


def _read_parquet(path: Path, sample_rows: int) -> Sample:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types
        raise DataError(path, f"not a readable Parquet file: {exc}") from None
    schema = pf.schema_arrow
    for f in schema:
        if pa.types.is_nested(f.type) or pa.types.is_dictionary(f.type) and pa.types.is_nested(f.type.value_type):
            raise DataError(path, f"the column holds {f.type} values (a list or record per row): a contract field "
                                  "is one value per row; flatten the export first", column=f.name)
    if pf.metadata.num_rows == 0:
        raise DataError(path, f"has columns ({', '.join(schema.names)}) but no rows: there is nothing to infer "
                              "kinds from")
    batch = next(pf.iter_batches(batch_size=sample_rows))
    frame = batch.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    return Sample(path=path, format="parquet", delimiter=None, frame=frame)


def _open_text(path: Path, gz: bool) -> io.TextIOBase:
    raw = gzip.open(path, "rt", encoding="utf-8", newline="") if gz else path.open("r", encoding="utf-8", newline="")
    return raw  # type: ignore[return-value]


def sniff_delimiter(head: str) -> str:
    """The delimiter of a CSV header and first lines: the csv sniffer among , ; tab |,
    else the candidate that splits the header most, else ','."""
    lines = [ln for ln in head.splitlines() if ln.strip()][:20]
    if not lines:
        return ","
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        pass
    counts = {d: lines[0].count(d) for d in ",;\t|"}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _read_csv(path: Path, delimiter: str | None, sample_rows: int, gz: bool) -> Sample:
    try:
        with _open_text(path, gz) as fh:
            head = fh.read(65536)
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text: {exc}") from None
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot be read: {exc}") from None
    if not head.strip():
        raise DataError(path, "file is empty (not even a header)")
    if delimiter is None:
        sep = written = sniff_delimiter(head)
    elif delimiter.lower() in {"whitespace", "space", "\\s+"}:
        sep, written = r"\s+", "\\s+"
    elif delimiter.lower() in {"tab", "\\t"}:
        sep = written = "\t"
    else:
        sep = written = delimiter
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, nrows=sample_rows,
                            compression="gzip" if gz else None, encoding="utf-8",
                            engine="python" if len(sep) > 1 else "c")
    except pd.errors.EmptyDataError:
        raise DataError(path, "file is empty (not even a header)") from None
    except pd.errors.ParserError as exc:
        raise DataError(path, f"malformed CSV with delimiter {written!r} ({exc}); give --delimiter") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(path, f"has a header ({', '.join(frame.columns)}) but no data rows: there is nothing to "
                              "infer kinds from")
    return Sample(path=path, format="csv", delimiter=written, frame=frame)


def require_column(sample: Sample, column: str, what: str) -> None:
    if column not in sample.frame.columns:
        cols = list(sample.frame.columns)
        hint = ""
        if len(cols) == 1 and any(d in cols[0] for d in ",;|\t "):
            hint = f" (the file parsed as one column: is the delimiter {sample.delimiter!r} right? give --delimiter)"
        raise DataError(sample.path, f"the {what} column is not in the file; columns are {cols}{hint}", column=column)


# ---------------------------------------------------------------------------- profiling


@dataclass
class Profile:
    """What one export column looks like (from a sample)."""

    column: str
    rows: int
    present: int
    distinct: int
    kind: Kind
    values: list[tuple[str, int]] = field(default_factory=list)  # present spellings, most frequent first
    date_formats: list[str] = field(default_factory=list)
    integer: bool = False
    non_negative: bool = False
    unique: bool = False
    skewed: bool = False
    reference: tuple[float, float] | None = None  # numbers: median and robust spread of the sample
    reference_log1p: tuple[float, float] | None = None  # the same of log1p(value), for long tails
    bool_true: list[str] = field(default_factory=list)  # lower-cased spellings
    bool_false: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # REVIEW lines

    def shown_values(self) -> tuple[list[str], int]:
        """Spellings seen at least SHOWN_MIN_COUNT times (at most MAX_SHOWN), and how many
        others there are: rare values can single people out and are not written down."""
        shown = [v for v, n in self.values if n >= SHOWN_MIN_COUNT][:MAX_SHOWN]
        return shown, len(self.values) - len(shown)


_NUMBER_JUNK = re.compile(r"[\s¥$€£]|(?i:rmb|cny|eur|usd|gbp)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$")


def _as_text(series: pd.Series) -> pd.Series:
    return series.astype("string").str.strip()


def _round2(x: float) -> float:
    """Two significant digits: a contract carries a coarse prior, not a partner's statistic."""
    return 0.0 if x == 0 or not np.isfinite(x) else float(f"{x:.2g}")


def _centre_and_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and a robust spread (interquartile range / 1.349, else the standard
    deviation, else 1), both to two significant digits."""
    med = float(np.median(values))
    q1, q3 = np.quantile(values, [0.25, 0.75])
    scale = (q3 - q1) / 1.349 if q3 > q1 else float(np.std(values))
    return _round2(med), _round2(scale) or 1.0


def _parse_numbers(values: pd.Series) -> pd.Series:
    clean = values.str.replace(_NUMBER_JUNK, "", regex=True)
    clean = clean.where(~clean.str.match(_THOUSANDS), clean.str.replace(",", "", regex=False))
    return pd.to_numeric(clean, errors="coerce")


def detect_date_formats(values: pd.Series, min_share: float = 0.95) -> list[str]:
    """The formats (of DATE_FORMATS, greedily, most covering first) that read at least
    `min_share` of the distinct values as dates between 1900 and 2100; [] if none do."""
    distinct = pd.Series(values.dropna().unique()).astype(str)
    if distinct.empty or not distinct.str.contains(r"\d", regex=True).all():
        return []
    distinct = distinct.iloc[:2000]
    covered = pd.Series(False, index=distinct.index)
    parsed = {}
    for fmt in DATE_FORMATS:
        with np.errstate(all="ignore"):
            ts = pd.to_datetime(distinct, format=fmt, errors="coerce")
        ok = ts.notna() & (ts.dt.year >= 1900) & (ts.dt.year <= 2100)
        if ok.any():
            parsed[fmt] = ok
    chosen: list[str] = []
    while True:
        best, gain = None, 0
        for fmt, ok in parsed.items():
            g = int((ok & ~covered).sum())
            if g > gain:
                best, gain = fmt, g
        if best is None:
            break
        chosen.append(best)
        covered |= parsed.pop(best)
    return chosen if covered.mean() >= min_share else []


def profile_column(column: str, series: pd.Series) -> Profile:
    """Infer one column's kind from its values (and, for money and dates, its name)."""
    rows = len(series)
    words = _words(column)
    if pd.api.types.is_bool_dtype(series):
        present = series.dropna()
        return Profile(column, rows, len(present), int(present.nunique()), Kind.BOOL,
                       values=[(str(k).lower(), int(v)) for k, v in present.value_counts().items()],
                       bool_true=["true"], bool_false=["false"])
    if pd.api.types.is_datetime64_any_dtype(series):
        present = series.dropna()
        return Profile(column, rows, len(present), int(present.nunique()), Kind.DATE, unique=present.is_unique)
    counts = _as_text(series).value_counts(dropna=True)  # distinct spellings: everything below works on them
    counts = counts[~counts.index.str.lower().isin(MISSING_TOKENS)]
    distinct = pd.Series(counts.index.astype(str), dtype="string")
    weights = counts.to_numpy()
    present_n = int(weights.sum())
    values = [(str(k), int(v)) for k, v in counts.items()]
    prof = Profile(column, rows, present_n, len(counts), Kind.TEXT, values=values,
                   unique=present_n > 0 and len(counts) == present_n)
    if present_n == 0:
        prof.notes.append("empty in the sample: kind and grade are guesses from the name alone")
        return prof
    low = sorted({v.lower() for v in distinct})
    # flags: yes/no, true/false, 0/1, Y/N (and 'No internet service' style extras)
    no_phrases = [v for v in low if re.match(r"^(no|not)\s+\w", v) and v not in TRUE_SPELLINGS]
    trues = [v for v in low if v in TRUE_SPELLINGS]
    falses = [v for v in low if v in FALSE_SPELLINGS]
    worded = {"yes", "no", "y", "n", "true", "false"}  # a flag never set (or always set) in the sample
    if (trues and falses or len(low) == 1 and low[0] in worded) \
            and len(trues) + len(falses) + len(no_phrases) == len(low) and len(low) <= 6:
        prof.kind, prof.bool_true, prof.bool_false = Kind.BOOL, trues, falses + no_phrases
        if no_phrases:
            prof.notes.append(f"{', '.join(repr(v) for v in no_phrases)} read as false")
        return prof
    numbers = _parse_numbers(distinct)
    ok = numbers.notna().to_numpy()
    share = weights[ok].sum() / present_n
    if share >= 0.98 and not (words & DATE_WORDS and detect_date_formats(distinct)):
        nums = numbers[ok].to_numpy(dtype="float64")
        prof.integer = bool((nums == np.round(nums)).all())
        prof.non_negative = bool((nums >= 0).all())
        spread = np.repeat(np.abs(nums), weights[ok])
        prof.reference = _centre_and_scale(np.repeat(nums, weights[ok]))
        prof.reference_log1p = _centre_and_scale(np.log1p(np.clip(np.repeat(nums, weights[ok]), 0, None)))
        med = float(np.median(spread))
        prof.skewed = prof.non_negative and med > 0 and float(np.quantile(spread, 0.99)) > 10 * med
        if share < 1:
            bad = distinct[~ok].tolist()[:3]
            prof.notes.append(f"{int(weights[~ok].sum())} values are not numbers (e.g. {', '.join(map(repr, bad))})")
        if distinct.str.contains(",", regex=False).any() and not distinct.str.match(_THOUSANDS).all():
            prof.notes.append("some values hold a comma: thousands separators or decimal commas? check the units")
        money_word = (bool(words & MONEY_WORDS) and not words & NOT_MONEY_WORDS
                      or bool(distinct.str.contains(r"[$€£¥]", regex=True).any()))
        if money_word and prof.non_negative:
            prof.kind = Kind.MONEY
        elif money_word:
            prof.kind = Kind.NUMBER
            prof.notes.append("a money name, but negative values: number (negative money is quarantined as abnormal)")
        elif prof.integer and prof.non_negative:
            prof.kind = Kind.COUNT
            if prof.unique and words & ID_WORDS:
                prof.kind = Kind.ID
        else:
            prof.kind = Kind.NUMBER
        if prof.kind in (Kind.COUNT, Kind.NUMBER) and prof.distinct <= 10:
            prof.notes.append(f"only {prof.distinct} distinct values: a {prof.kind.value}, or a coded category "
                              "(kind = \"category\") or an ordinal (kind = \"ordinal\" with levels)?")
        return prof
    formats = detect_date_formats(distinct)
    if formats:
        prof.kind, prof.date_formats = Kind.DATE, formats
        if "%d/%m/%Y" in formats and "%m/%d/%Y" not in formats and _both_orders(distinct, "%d/%m/%Y", "%m/%d/%Y"):
            prof.notes.append("day/month order is ambiguous in the sample (every day <= 12): read as dd/mm/yyyy")
        return prof
    if prof.distinct <= 50 and prof.distinct * 5 <= prof.present:
        prof.kind = Kind.CATEGORY
    elif prof.unique and words & ID_WORDS:
        prof.kind = Kind.ID
    return prof


def _both_orders(values: pd.Series, a: str, b: str) -> bool:
    return bool(pd.to_datetime(values, format=b, errors="coerce").notna().all()
                and pd.to_datetime(values, format=a, errors="coerce").notna().all())


def profile(sample: Sample) -> dict[str, Profile]:
    return {col: profile_column(col, sample.frame[col]) for col in sample.frame.columns}


# ---------------------------------------------------------------------------- guessing fields


@dataclass
class Guess:
    """One drafted contract field and the reasons for it."""

    column: str
    name: str
    kind: Kind
    grade: Grade
    key: bool = False
    role: str | None = None
    generalise: Generalise | None = None
    vocabulary: str | None = None  # "learned" for categories
    transform: str = "none"
    reference: tuple[float, float] | None = None
    feature: str | None = None  # the feature's own name (a date as months since it: several dates stay apart)
    outlier_median_multiple: float | None = None
    review: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    profile: Profile | None = None


def guess_field(prof: Profile, name: str) -> Guess:
    """Kind from the profile; a cautious grade (and generalisation) from name and values."""
    words = _words(prof.column)
    g = Guess(column=prof.column, name=name, kind=prof.kind, grade=Grade.NON_SENSITIVE, profile=prof)
    g.review += prof.notes
    k = prof.kind
    email_values = k is Kind.TEXT and prof.values and sum(n for v, n in prof.values if "@" in v) >= 0.5 * prof.present
    textual = k in (Kind.TEXT, Kind.ID, Kind.COUNT, Kind.NUMBER)
    direct = None
    if email_values or words & EMAIL_WORDS and textual:
        direct = "an email address"
    elif words & NAME_WORDS and k in (Kind.TEXT, Kind.ID):
        direct = "a person's name"
    elif words & PHONE_WORDS and textual:
        direct = "a phone number"
    elif words & NATIONAL_ID_WORDS and textual:
        direct = "an identity or account number"
    elif words & ADDRESS_WORDS and k in (Kind.TEXT, Kind.ID, Kind.CATEGORY):
        direct = "an address"
    if direct:
        g.grade = Grade.CORE_SENSITIVE
        g.kind = Kind.ID if k is Kind.ID else Kind.TEXT
        g.review.append(f"looks like {direct}: core-sensitive, dropped at pseudonymisation")
        return g
    if k is Kind.ID:
        g.grade = Grade.CORE_SENSITIVE
        g.review.append("unique values and an id-like name: another identifier? core-sensitive, never a feature")
        return g
    if words & AGE_WORDS and k in (Kind.COUNT, Kind.NUMBER):
        g.kind, g.grade, g.generalise = Kind.NUMBER, Grade.SENSITIVE, Generalise.AGE_BAND
        g.review.append("an age: sensitive, reaches the model only as its age band")
    elif words & BIRTH_WORDS and k is Kind.DATE:
        g.grade, g.generalise = Grade.SENSITIVE, Generalise.AGE_BAND
        g.review.append("a birth date: sensitive, reaches the model only as an age band")
    elif words & GENDER_WORDS and k in (Kind.CATEGORY, Kind.TEXT, Kind.BOOL):
        g.grade = Grade.SENSITIVE
        if k is Kind.TEXT:
            g.kind = Kind.CATEGORY
        g.review.append("gender: sensitive (a quasi-identifier); enters the model as a category")
    elif words & POSTCODE_WORDS:
        g.grade, g.generalise = Grade.SENSITIVE, Generalise.POSTCODE_PREFIX
        g.kind = Kind.CATEGORY if k is Kind.CATEGORY else Kind.TEXT
        g.review.append("a postcode: sensitive, reaches the model only as its prefix (rare prefixes 'other'); "
                        "or generalise = \"drop\"")
    elif words & PLACE_WORDS and k in (Kind.CATEGORY, Kind.TEXT):
        g.grade, g.generalise = Grade.SENSITIVE, Generalise.DROP
        g.review.append("a place: sensitive (a quasi-identifier), dropped; remove `generalise` to let it enter "
                        "as a learned category (rare values 'other')")
    elif words & PERSONAL_WORDS and k in (Kind.CATEGORY, Kind.TEXT, Kind.BOOL):
        g.grade, g.generalise = Grade.SENSITIVE, Generalise.DROP
        g.review.append("personal circumstances: sensitive, dropped; remove `generalise` to let it enter as it is")
    elif k is Kind.DATE:
        g.grade = Grade.SENSITIVE
        if words & SIGNUP_WORDS:
            g.generalise = Generalise.TENURE_MONTHS
            g.review.append("a start date: sensitive, reaches the model only as tenure in months")
        elif words & RECORD_WORDS:
            g.generalise = Generalise.DROP
            g.review.append("when the record was written (metadata, not the customer's): dropped; generalise = "
                            "\"tenure-months\" (months since) to use it")
        else:
            g.generalise = Generalise.TENURE_MONTHS
            g.feature = f"{name}_months"
            g.review.append(f"a date: sensitive, reaches the model only as the months from it to the export date "
                            f"(feature {g.feature}); generalise = \"month\" (month of the year) or \"drop\" instead")
    if g.grade is Grade.SENSITIVE and g.kind in (Kind.TEXT, Kind.NUMBER, Kind.COUNT, Kind.MONEY, Kind.DATE) \
            and g.generalise is None:
        g.generalise = Generalise.DROP
    if g.kind is Kind.CATEGORY:
        g.vocabulary = "learned"
        shown, rarer = prof.shown_values()
        more = f" (+{rarer} rarer)" if rarer else ""
        g.info.append(f"observed: {', '.join(repr(v) for v in shown)}{more}")
        fixed = sorted({normalise_token(v) for v in shown} - {"unknown", "other"})
        if fixed and not rarer and len(fixed) <= 12:
            g.review.append(f"a learned vocabulary; or fix it: vocabulary = {json.dumps(fixed)}")
    if g.kind is Kind.MONEY:
        g.outlier_median_multiple = 20.0
        g.review.append("money (by its name): in the partner's money_unit; above 20x the median is abnormal")
    if g.kind in (Kind.MONEY, Kind.COUNT) and prof.skewed:
        g.transform = "log1p"
        g.review.append("long-tailed in the sample: log1p")
    if g.kind in (Kind.MONEY, Kind.COUNT, Kind.NUMBER) and g.generalise is None and g.grade is not Grade.CORE_SENSITIVE:
        g.reference = prof.reference_log1p if g.transform == "log1p" else prof.reference
        if g.reference is not None:
            g.review.append("reference = [centre, scale] of this sample (two significant digits): the prior every "
                            "partner standardises with before the federation's statistics; it is shared with the "
                            "consortium, so round it further if it says too much")
    if g.kind is Kind.TEXT and g.grade is Grade.NON_SENSITIVE:
        g.review.append("free text: never a feature; core-sensitive if it can hold personal details")
    if prof.distinct == 1 and g.kind not in (Kind.ID, Kind.TEXT):
        g.review.append("a single value in the sample: it carries no information")
    return g


def _unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


@dataclass
class Draft:
    sample: Sample
    guesses: list[Guess]
    task: str
    label_field: str
    contract_name: str

    def toml(self) -> str:
        return render(self)


def infer_draft(path: Path, id_column: str, label_column: str, task: str, delimiter: str | None = None,
                sample_rows: int = 50_000) -> Draft:
    """Profile the export and guess a contract field per column (see `draft_contract`)."""
    if task not in LABEL_FIELDS:
        raise ConfigError(f"unknown task {task!r}: use {' or '.join(LABEL_FIELDS)}")
    sample = read_sample(Path(path), delimiter, sample_rows)
    require_column(sample, id_column, "id")
    require_column(sample, label_column, "label")
    if id_column == label_column:
        raise DataError(sample.path, "the id and the label cannot be the same column", column=id_column)
    profiles = profile(sample)
    label_name = LABEL_FIELDS[task]
    taken = {"customer_id", label_name}
    guesses = []
    for col, prof in profiles.items():
        if col == id_column:
            g = Guess(column=col, name="customer_id", kind=Kind.ID, grade=Grade.CORE_SENSITIVE, key=True, profile=prof)
            dups = prof.present - prof.distinct
            if dups:
                g.review.append(f"{dups} repeated ids in the sample: one row per customer is kept (the newest); "
                                "a purchase log belongs in [transactions]")
            if prof.present < prof.rows:
                g.review.append(f"{prof.rows - prof.present} rows without an id: they are to be supplemented")
        elif col == label_column:
            g = _label_guess(sample, prof, label_name, task)
        else:
            g = guess_field(prof, _unique_name(snake_case(col), taken))
        guesses.append(g)
    return Draft(sample=sample, guesses=guesses, task=task, label_field=label_name,
                 contract_name=_contract_name(sample.path))


def _label_guess(sample: Sample, prof: Profile, name: str, task: str) -> Guess:
    g = Guess(column=prof.column, name=name, kind=Kind.BOOL, grade=Grade.NON_SENSITIVE, role="label", profile=prof)
    spellings = [v for v, _ in prof.values]
    if prof.kind is Kind.BOOL:
        g.review += prof.notes
    elif prof.distinct == 2:
        g.review.append(f"the label reads {spellings[0]!r} / {spellings[1]!r}: say which is true in each partner's "
                        "true_values / false_values")
    elif prof.distinct < 2:
        g.review.append(f"the label has a single value in the sample ({spellings[:1]}): check the export")
    else:
        raise DataError(sample.path, f"the label of task {task!r} must be binary; the sample has {prof.distinct} "
                                     f"values ({', '.join(map(repr, spellings[:6]))}{', ...' if prof.distinct > 6 else ''})",
                        column=prof.column)
    if prof.present < prof.rows:
        g.review.append(f"{prof.rows - prof.present} rows without a label in the sample")
    return g


def _contract_name(path: Path) -> str:
    stem = path.name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq"):
        stem = stem.removesuffix(suffix).removesuffix(suffix.upper())
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return name or "contract"


def draft_contract(path: str | Path, id_column: str, label_column: str, task: str, delimiter: str | None = None,
                   sample_rows: int = 50_000) -> str:
    """A contract drafted from one export, as TOML text with comments: one field per
    column (the id column becomes the key `customer_id`, the label column a bool field with
    role "label" named after the task's label, and the task itself), `# REVIEW:` on every
    inference a person must confirm. `delimiter`: None sniffs it; "whitespace" for
    whitespace-separated files."""
    return infer_draft(Path(path), id_column, label_column, task, delimiter, sample_rows).toml()


# ---------------------------------------------------------------------------- rendering


def render(draft: Draft) -> str:
    import tomlkit

    s = draft.sample
    doc = tomlkit.document()
    how = f"CSV, delimiter {s.delimiter!r}" if s.format == "csv" else "Parquet"
    for line in (
        f"Drafted by `fedcrm contract draft` from {s.path.name} ({how}; {len(s.frame)} sample rows).",
        "Every `# REVIEW:` line is an inference a person must confirm (then delete the line).",
        "The observed spellings in comments are this export's own (only those seen at least "
        f"{SHOWN_MIN_COUNT} times):",
        "delete them before the contract is shared if they are not for the other partners to see.",
        "Comments do not change the contract's digest; every key does.",
    ):
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())

    features = sum(1 for g in draft.guesses if _is_feature(g))
    head = tomlkit.table()
    head.add("name", draft.contract_name)
    head["name"].comment("REVIEW: the consortium's name for this contract")
    head.add("version", 1)
    head.add("description", f"Drafted from {s.path.name}: {draft.task} on {draft.label_field}.")
    head.add("k_anonymity", 5)
    head.add("min_features", 1 if features else 0)
    if not features:
        head["min_features"].comment("REVIEW: no column reaches the model as drafted")
    doc.add("contract", head)
    gen = tomlkit.table()
    gen.add("age_band_years", 10)
    gen.add("postcode_prefix", 3)
    gen.add("date_granularity", "month")
    doc.add("generalisation", gen)

    fields = tomlkit.aot()
    for g in draft.guesses:
        t = tomlkit.table()
        t.add(tomlkit.comment(f"export column {g.column!r}"))
        t.add("name", g.name)
        t.add("kind", g.kind.value)
        t.add("grade", g.grade.value)
        if g.key:
            t.add("key", True)
        if g.role:
            t.add("role", g.role)
        if g.generalise:
            t.add("generalise", g.generalise.value)
        if g.feature:
            t.add("feature", g.feature)
        if g.vocabulary:
            for line in g.info:
                t.add(tomlkit.comment(line))
            t.add("vocabulary", g.vocabulary)
        if g.transform != "none":
            t.add("transform", g.transform)
        if g.reference is not None:
            t.add("reference", list(g.reference))
        if g.outlier_median_multiple:
            t.add("outlier_median_multiple", g.outlier_median_multiple)
        for line in g.review:
            t.add(tomlkit.comment(f"REVIEW: {line}"))
        fields.append(t)
    doc.add("fields", fields)

    tasks = tomlkit.aot()
    task = tomlkit.table()
    task.add("name", draft.task)
    label = tomlkit.inline_table()
    label.update({"field": draft.label_field})
    task.add("label", label)
    task.add("scores", "risk-tiers" if draft.task == "churn" else "deciles")
    tasks.append(task)
    doc.add("tasks", tasks)
    text = tomlkit.dumps(doc)
    Contract.loads(text, source=f"draft of {s.path}")  # a draft always loads: a failure here is a bug
    return text


def _is_feature(g: Guess) -> bool:
    if g.grade is Grade.CORE_SENSITIVE or g.role == "label" or g.generalise is Generalise.DROP:
        return False
    if g.generalise is not None:
        return True
    return g.kind in (Kind.MONEY, Kind.COUNT, Kind.NUMBER, Kind.BOOL, Kind.CATEGORY, Kind.ORDINAL)


def summary_rows(draft: Draft) -> list[tuple[str, str, str, str, str]]:
    """(column, field, kind, grade, how it reaches the model) per column, for printing."""
    rows = []
    for g in draft.guesses:
        if g.role == "label":
            use = f"label of task {draft.task}"
        elif g.key:
            use = "key (pseudonymised)"
        elif g.grade is Grade.CORE_SENSITIVE:
            use = "dropped (identifier)"
        elif g.generalise is Generalise.DROP:
            use = "dropped (quasi-identifier)"
        elif g.generalise is not None:
            use = f"feature via {g.generalise.value}"
        elif _is_feature(g):
            use = "feature" + (f" ({g.transform})" if g.transform != "none" else "")
        else:
            use = "not a feature"
        rows.append((g.column, g.name, g.kind.value, g.grade.value, use))
    return rows
