"""The consortium's data contract as data: fields, features and tasks in one TOML file.

A contract says what every partner's export maps onto (the customers table, and optionally
a purchases and an interactions table), how each field is graded and cleaned, which fields
reach the model and how (generalised, transformed), and which labels the consortium trains
on. Every partner of a federation holds the same contract; `Contract.digest()` is what they
compare: a sha256 over the *validated* contract in canonical JSON, so key order, comments,
quoting and defaults written out or left implicit do not change it, while any change of
meaning (a field, a grade, a vocabulary, a field's position) does.

The rules a contract must satisfy (checked on load, every problem named by its key):

- exactly one customers field has kind "id" and key = true: the customer id
  (core-sensitive, HMAC-pseudonymised on the node); field names are unique snake_case;
- a category has a vocabulary (a list of canonical spellings, or "learned" from the
  federation's noised counts); an ordinal has levels (spelling -> code);
- core-sensitive fields never become features (they are dropped at pseudonymisation), nor
  do id or text fields, nor label fields (role = "label");
- a sensitive number, count, money, ordinal, date or text field reaches the model only
  generalised: it must say `generalise` (age-band, tenure-months, postcode-prefix, month)
  or `generalise = "drop"`; sensitive categories and flags enter as they are;
- tasks name a bool label field of the customers table, or a label derived from the
  purchases table (which the contract must then have).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictInt, ValidationError, model_validator
from pydantic import Strict as StrictType

from fedcrm.errors import ConfigError

UNKNOWN = "unknown"  # the level of a missing or unreadable category value
OTHER = "other"  # the level of a learned vocabulary's rare values
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")
DEFAULT_MIN_COUNT = 20
DEFAULT_HORIZON_DAYS = 90

Float = Annotated[float, StrictType()]


class Kind(StrEnum):
    ID = "id"
    TEXT = "text"
    DATE = "date"
    MONEY = "money"
    COUNT = "count"
    NUMBER = "number"
    CATEGORY = "category"
    ORDINAL = "ordinal"
    BOOL = "bool"


class Grade(StrEnum):
    CORE_SENSITIVE = "core-sensitive"  # direct identifiers: dropped at pseudonymisation
    SENSITIVE = "sensitive"  # quasi-identifiers: only generalised
    NON_SENSITIVE = "non-sensitive"


class Generalise(StrEnum):
    AGE_BAND = "age-band"  # an age (or a birth date) -> the midpoint of its band
    TENURE_MONTHS = "tenure-months"  # a date -> months from it to the export date
    POSTCODE_PREFIX = "postcode-prefix"  # the first characters (learned levels, rare ones "other")
    MONTH = "month"  # a date -> its month of the year (jan ... dec)
    DROP = "drop"  # never reaches the model


NUMERIC_KINDS = frozenset({Kind.MONEY, Kind.COUNT, Kind.NUMBER})
NEEDS_GENERALISING = frozenset({Kind.MONEY, Kind.COUNT, Kind.NUMBER, Kind.ORDINAL, Kind.DATE, Kind.TEXT})
GENERALISES = {  # rule -> the kinds it applies to
    Generalise.AGE_BAND: frozenset({Kind.NUMBER, Kind.COUNT, Kind.DATE}),
    Generalise.TENURE_MONTHS: frozenset({Kind.DATE}),
    Generalise.POSTCODE_PREFIX: frozenset({Kind.TEXT, Kind.CATEGORY}),
    Generalise.MONTH: frozenset({Kind.DATE}),
    Generalise.DROP: frozenset(Kind),
}
MISSING_RULES = ("median", "zero", "unknown", "supplement")
MISSING_ALLOWED = {  # kind -> the named missing-value rules it takes
    Kind.ID: {"unknown"}, Kind.TEXT: {"unknown"}, Kind.DATE: {"median", "unknown"},
    Kind.MONEY: {"median", "zero"}, Kind.COUNT: {"median", "zero"}, Kind.NUMBER: {"median", "zero"},
    Kind.ORDINAL: {"median"}, Kind.BOOL: {"median", "zero"}, Kind.CATEGORY: {"unknown"},
}

TableName = Literal["customers", "transactions", "interactions"]
ROLES: dict[str, dict[str, frozenset[Kind]]] = {  # table -> role -> kinds it takes
    "customers": {"label": frozenset({Kind.BOOL})},
    "transactions": {
        "customer": frozenset({Kind.ID}), "date": frozenset({Kind.DATE}), "order": frozenset({Kind.TEXT, Kind.ID}),
        "product": frozenset({Kind.TEXT, Kind.CATEGORY}), "category": frozenset({Kind.CATEGORY}),
        "quantity": frozenset({Kind.COUNT, Kind.NUMBER}), "unit_price": frozenset({Kind.MONEY}),
        "amount": frozenset({Kind.MONEY}),
    },
    "interactions": {"customer": frozenset({Kind.ID}), "date": frozenset({Kind.DATE}),
                     "channel": frozenset({Kind.CATEGORY})},
}


def normalise_token(value: str) -> str:
    """A category spelling as the partner's pipeline compares it ('  Month to Month ' ->
    'month-to-month'; the same rule as `fedcrm.data.standardise.normalise_token`)."""
    return re.sub(r"[()]", "", re.sub(r"[\s_]+", "-", value.strip().lower()))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContractInfo(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    version: StrictInt = Field(ge=1, description="raised on every change the partners must agree to")
    description: str = ""
    k_anonymity: StrictInt = Field(5, ge=2, description="the k `partner check` gates on")
    min_features: StrictInt = Field(1, ge=0, description="partner check gate: at least this many features mapped")


class GeneralisationRules(_Strict):
    """How coarse quasi-identifiers become (the partner config's `[generalisation]` defaults)."""

    age_band_years: StrictInt = Field(10, ge=1)
    postcode_prefix: StrictInt = Field(3, ge=0, description="characters of the postcode kept")
    date_granularity: Literal["month", "quarter", "year"] = "month"


class FieldSpec(_Strict):
    """One field of a table. Unset options resolve to their per-kind defaults on load."""

    name: str
    kind: Kind
    grade: Grade  # no default: a forgotten grade must not make a field a feature
    key: StrictBool = False
    description: str = ""
    role: str | None = None
    vocabulary: list[str] | Literal["learned"] | None = None
    min_count: StrictInt | None = Field(None, ge=1)
    levels: dict[str, StrictInt] | None = None
    missing: str | StrictBool | StrictInt | Float | None = None
    transform: Literal["none", "log1p"] = "none"
    clip: tuple[Float, Float] | None = None
    outlier_median_multiple: Float | None = Field(None, gt=1)
    generalise: Generalise | None = None
    feature: str | None = None
    reference: tuple[Float, Float] | None = Field(
        None, description="fixed centre and scale of a numeric feature: the prior used when federated statistics are off")

    # ------------------------------------------------------------ what the field becomes
    @property
    def feature_kind(self) -> Literal["numeric", "bool", "category"] | None:
        """How this customers field enters the model, or None when it never does."""
        if self.grade is Grade.CORE_SENSITIVE or self.role == "label" or self.key and self.kind is Kind.ID:
            return None
        g = self.generalise
        if g is Generalise.DROP:
            return None
        if g in (Generalise.AGE_BAND, Generalise.TENURE_MONTHS):
            return "numeric"
        if g in (Generalise.POSTCODE_PREFIX, Generalise.MONTH):
            return "category"
        if self.kind in NUMERIC_KINDS or self.kind is Kind.ORDINAL:
            return "numeric"
        return {Kind.BOOL: "bool", Kind.CATEGORY: "category"}.get(self.kind)  # id, text, date: never

    @property
    def feature_name(self) -> str | None:
        if self.feature_kind is None:
            return None
        if self.feature:
            return self.feature
        return {Generalise.AGE_BAND: "age_band", Generalise.TENURE_MONTHS: "tenure_months",
                Generalise.POSTCODE_PREFIX: f"{self.name}_prefix", Generalise.MONTH: f"{self.name}_month",
                }.get(self.generalise, self.name)  # type: ignore[arg-type]

    def default_missing(self) -> str:
        if self.key:
            return "supplement"
        if self.kind is Kind.DATE:
            return "median" if self.feature_kind == "numeric" else UNKNOWN
        return "median" if self.kind in (*NUMERIC_KINDS, Kind.ORDINAL, Kind.BOOL) else UNKNOWN

    def resolved(self) -> FieldSpec:
        """Per-kind defaults written out: a contract means the same whether they are."""
        update: dict[str, Any] = {}
        if self.missing is None:
            update["missing"] = self.default_missing()
        elif isinstance(self.missing, int) and not isinstance(self.missing, bool):
            update["missing"] = float(self.missing)  # `missing = 0` and `missing = 0.0` mean the same
        if self.min_count is None and (self.vocabulary == "learned" or self.generalise is Generalise.POSTCODE_PREFIX):
            update["min_count"] = DEFAULT_MIN_COUNT
        if self.clip is None and self.kind in (Kind.MONEY, Kind.COUNT):
            update["clip"] = (0.0, float("inf"))  # negative money and counts are abnormal
        return self.model_copy(update=update) if update else self

    # ------------------------------------------------------------ checks of one field
    def problems(self, where: str, table: str) -> list[str]:
        """Everything wrong with this field on its own, each prefixed by its key."""
        out: list[str] = []
        k = self.kind

        def bad(key: str, msg: str) -> None:
            out.append(f"{where}.{key}: {msg}")

        if not SNAKE_CASE.match(self.name):
            bad("name", f"{self.name!r} is not a snake_case name (a-z, 0-9, _; starting with a letter)")
        if k is Kind.CATEGORY:
            if self.vocabulary is None:
                bad("vocabulary", 'a category needs a vocabulary: a list of spellings, or "learned"')
            elif isinstance(self.vocabulary, list):
                out += _spelling_problems(f"{where}.vocabulary", self.vocabulary)
        elif self.vocabulary is not None:
            bad("vocabulary", f"only category fields take a vocabulary (this one is {k.value})")
        if self.min_count is not None and self.vocabulary != "learned" and self.generalise is not Generalise.POSTCODE_PREFIX:
            bad("min_count", 'only learned vocabularies (vocabulary = "learned") and postcode prefixes take a min_count')
        if k is Kind.ORDINAL:
            if not self.levels:
                bad("levels", "an ordinal needs levels: {spelling = code, ...}")
            else:
                out += _spelling_problems(f"{where}.levels", list(self.levels))
                if len(set(self.levels.values())) != len(self.levels):
                    bad("levels", "two levels share a code")
        elif self.levels is not None:
            bad("levels", f"only ordinal fields take levels (this one is {k.value})")
        if self.key and k is Kind.BOOL:
            bad("key", "a flag cannot be a key field")
        if k is Kind.ID and self.grade is not Grade.CORE_SENSITIVE:
            bad("grade", "an id identifies a person or an account: its grade must be core-sensitive")
        # role
        roles = ROLES[table]
        if self.role is not None:
            if self.role not in roles:
                bad("role", f"{self.role!r} is not a role of the {table} table; roles: {', '.join(roles)}")
            elif k not in roles[self.role]:
                bad("kind", f"role {self.role!r} needs kind {' or '.join(sorted(roles[self.role]))}, not {k.value}")
        if self.role == "label":
            if self.key:
                bad("key", "a label field cannot be a key field (unlabelled rows are not quarantined)")
            if self.grade is Grade.CORE_SENSITIVE:
                bad("grade", "a label field cannot be core-sensitive (it is dropped at pseudonymisation)")
        out += self._missing_problems(where)
        # numeric options
        if self.clip is not None:
            if k not in NUMERIC_KINDS:
                bad("clip", f"only money, count and number fields take clip bounds (this one is {k.value})")
            elif not self.clip[0] < self.clip[1]:
                bad("clip", f"bounds [{self.clip[0]:g}, {self.clip[1]:g}] must be [low, high] with low < high")
        if self.outlier_median_multiple is not None and k not in NUMERIC_KINDS:
            bad("outlier_median_multiple", f"only money, count and number fields take it (this one is {k.value})")
        # how the field reaches the model
        if table != "customers":
            for opt in ("generalise", "feature", "reference"):
                if getattr(self, opt) is not None:
                    bad(opt, f"fields of the {table} table reach the model only through the features derived "
                             "from them (recency, frequency, counts)")
            if self.transform != "none":
                bad("transform", f"fields of the {table} table are never features themselves")
            return out
        g = self.generalise
        if self.grade is Grade.CORE_SENSITIVE:
            for opt in ("generalise", "feature", "reference"):
                if getattr(self, opt) is not None:
                    bad(opt, "a core-sensitive field is dropped at pseudonymisation and never reaches the model")
            if self.transform != "none":
                bad("transform", "a core-sensitive field is dropped at pseudonymisation and never reaches the model")
            return out
        if g is not None and k not in GENERALISES[g]:
            bad("generalise", f"{g.value!r} applies to {', '.join(sorted(GENERALISES[g]))} fields, not {k.value}")
        if g is not None and self.role == "label":
            bad("generalise", "a label field never becomes a feature")
        if self.grade is Grade.SENSITIVE and k in NEEDS_GENERALISING and g is None and self.role != "label":
            rules = ", ".join(r.value for r in Generalise if k in GENERALISES[r] and r is not Generalise.DROP)
            bad("generalise", f"a sensitive {k.value} field reaches the model only generalised: set generalise = "
                              f"{rules or 'drop'}{' or drop' if rules else ''}")
        fk = self.feature_kind
        if fk != "numeric":
            if self.transform != "none":
                bad("transform", "only numeric features take a transform" if fk else "this field never reaches the model")
            if self.reference is not None:
                bad("reference", "only numeric features take a reference centre and scale")
        if self.reference is not None and not self.reference[1] > 0:
            bad("reference", "the scale (second value) must be positive")
        if self.feature is not None:
            if fk is None:
                bad("feature", "this field never reaches the model, so it names no feature")
            elif not SNAKE_CASE.match(self.feature):
                bad("feature", f"{self.feature!r} is not a snake_case name")
        return out

    def _missing_problems(self, where: str) -> list[str]:
        m, k = self.missing, self.kind
        key = f"{where}.missing"
        if m is None:
            return []
        if self.key:
            return [] if m == "supplement" else [
                f"{key}: a key field's missing value always quarantines the row (\"supplement\"); leave it unset"]
        if m == "supplement":
            return [f"{key}: \"supplement\" is what key = true means; set key = true instead"]
        if isinstance(m, str) and m in MISSING_RULES:
            if m not in MISSING_ALLOWED[k]:
                return [f"{key}: {m!r} does not apply to a {k.value} field; use "
                        f"{', '.join(sorted(MISSING_ALLOWED[k]))} or a literal value"]
            return []
        # a literal value
        if k is Kind.BOOL:
            ok = isinstance(m, bool)
        elif k in NUMERIC_KINDS:
            ok = isinstance(m, int | float) and not isinstance(m, bool)
        elif k is Kind.CATEGORY:
            ok = isinstance(m, str) and (self.vocabulary == "learned" or m in (self.vocabulary or []))
        elif k is Kind.ORDINAL:
            ok = isinstance(m, str) and m in (self.levels or {})
        elif k is Kind.DATE:
            ok = isinstance(m, str) and _is_iso_date(m)
        else:
            ok = False
        if not ok:
            want = {Kind.BOOL: "true or false", Kind.CATEGORY: "a spelling of its vocabulary",
                    Kind.ORDINAL: "one of its levels", Kind.DATE: "an ISO date (YYYY-MM-DD)",
                    Kind.ID: "nothing: an id is never filled in", Kind.TEXT: "nothing: text is never filled in",
                    }.get(k, "a number")
            return [f"{key}: {m!r} is not a missing-value rule ({', '.join(sorted(MISSING_ALLOWED[k]))}) "
                    f"nor a literal for a {k.value} field ({want})"]
        return []


def _is_iso_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _spelling_problems(key: str, spellings: list[str]) -> list[str]:
    out = []
    if not spellings:
        out.append(f"{key}: empty")
    for s in spellings:
        if s in (UNKNOWN, OTHER):
            out.append(f"{key}: {s!r} is reserved (missing values are {UNKNOWN!r}, rare learned ones {OTHER!r})")
        elif not s or normalise_token(s) != s:
            out.append(f"{key}: {s!r} is not a canonical spelling (lower case, no spaces, underscores or "
                       f"brackets: {normalise_token(s)!r})")
    dups = sorted({s for s in spellings if spellings.count(s) > 1})
    if dups:
        out.append(f"{key}: repeated {dups}")
    return out


# The per-customer features `fedcrm.data.activity` computes from each event table: what a
# contract's `[transactions] features` / `[interactions] features` may choose from.
DERIVABLE: dict[str, tuple[str, ...]] = {
    "transactions": ("recency_days", "frequency", "monetary", "activity_trend"),
    "interactions": ("interactions",),
}


class DerivedFeature(_Strict):
    """A feature derived from an event table, as the model takes it: its transform and the
    reference centre and scale it is standardised with before the federation's statistics
    (in the consortium's units: a monetary reference in cents is not one in euros)."""

    name: str
    transform: Literal["none", "log1p"] = "none"
    reference: tuple[float, float] | None = None
    description: str = ""


class EventTable(_Strict):
    """A purchases or interactions table: many rows per customer, fields found by role."""

    fields: list[FieldSpec] = Field(min_length=1)
    features: list[DerivedFeature] | None = Field(
        None, description="the derived features that enter the model; unset: every feature the table derives, "
                          "untransformed, scaled by the federation's statistics alone; [] : none (labels only)")

    def derived(self, table: str) -> list[DerivedFeature]:
        """The features this table gives the model (see `features`)."""
        if self.features is None:
            return [DerivedFeature(name=n) for n in DERIVABLE[table]]
        return list(self.features)

    def by_role(self, role: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.role == role), None)


if TYPE_CHECKING:
    from fedcrm.ml.survival import SurvivalScale
    from fedcrm.ml.value import ValueScale

DEFAULT_VALUE_CAP = 10_000.0  # a future-spend label's cap when the contract sets none
DEFAULT_PERIOD_DAYS = 30  # a time-to-churn label's period when the contract sets none
DEFAULT_LAPSE_DAYS = 90  # ... and the silence after which a customer has left


class Label(_Strict):
    """A task's label: a bool field of the customers table, a label derived from purchases,
    or both (the field when the partner maps it, else derived: an explicit label wins)."""

    field: str | None = None
    derived: Literal["no-purchase", "bought-category", "future-spend", "time-to-churn"] | None = Field(
        None, description="a label from purchases after the cutoff: 'no-purchase' (churn), 'bought-category' "
        "(propensity), 'future-spend' (value: what the customer spent in the horizon) or 'time-to-churn' (the "
        "period in which the customer's silence reached lapse_days, or none in the horizon)")
    horizon_days: StrictInt | None = Field(None, gt=0, description="derived labels: days after the cutoff looked at")
    value_cap: float | None = Field(None, gt=0, description="future-spend: spend above this counts as this much (it "
                                    "bounds one customer's weight in a value model and its evaluation); unset: 10,000")
    value_fit: Literal["log", "mean"] | None = Field(
        None, description="future-spend: what a value model learns, 'log' (log1p of the capped spend: close on the log "
        "scale, where the task's MAE, RMSE and R² are read) or 'mean' (the expected capped spend: the biggest spenders "
        "ranked first, which is what the top-decile value capture counts); unset: log")
    period_days: StrictInt | None = Field(None, gt=0, description="time-to-churn: the length of a period (the horizon "
                                          "holds at least two); unset: 30")
    lapse_days: StrictInt | None = Field(None, gt=0, description="time-to-churn: a customer has left once this many "
                                         "days pass without a purchase; unset: 90")
    category: str | None = Field(None, description="bought-category: the purchases category that counts; unset: "
                                 "each partner names its own (activity.target_category in partner.toml)")
    population: Literal["all", "bought-by-cutoff"] | None = Field(
        None, description="derived labels: the customers the task learns from and is evaluated on, 'all' (every "
        "customer of the export) or 'bought-by-cutoff' (those with a purchase on or before the cutoff: the partner's "
        "customers then; one first seen after it has no history to predict from, and its label says only that it "
        "arrived). Those left out are counted in the prepared data's summary, not quarantined, and still scored; "
        "unset: all")


class Task(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]
    description: str = ""
    label: Label
    scores: Literal["risk-tiers", "deciles"] | None = Field(
        None, description="how `fedcrm score` gives marketing this task's scores: churn-risk tiers (high, medium, "
                          "low) or deciles (1 = the top 10 %); unset: risk tiers for a no-purchase label, else deciles")

    @property
    def kind(self) -> Literal["binary", "value", "survival"]:
        """What the model predicts: a probability (a 0/1 label), a value (future spend) or
        a survival curve (time to churn)."""
        return {"future-spend": "value", "time-to-churn": "survival"}.get(self.label.derived or "", "binary")  # type: ignore[return-value]

    def scale(self) -> ValueScale | SurvivalScale | None:
        """The task's joint-histogram scale (value or time to churn); None for a 0/1 label."""
        return self.value_scale() or self.survival_scale()

    def survival_scale(self) -> SurvivalScale | None:
        """A time-to-churn task's periods (`fedcrm.ml.survival`); None for other tasks."""
        if self.kind != "survival":
            return None
        from fedcrm.ml.survival import SurvivalScale

        period = self.label.period_days or DEFAULT_PERIOD_DAYS
        return SurvivalScale(periods=(self.label.horizon_days or 0) // period, period_days=period)

    def value_scale(self) -> ValueScale | None:
        """A value task's target scale (`fedcrm.ml.value`); None for a 0/1 label."""
        if self.kind != "value":
            return None
        from fedcrm.ml.value import ValueScale

        return ValueScale(cap=self.label.value_cap or DEFAULT_VALUE_CAP, fit=self.label.value_fit or "log")


@dataclass(frozen=True)
class Feature:
    """One input of the model as the contract defines it (the pipeline lays them out)."""

    name: str
    kind: Literal["numeric", "bool", "category"]
    sources: tuple[str, ...]  # fields (or "transactions:recency_days" ...); the first the partner maps wins
    field_kind: str  # the first source's kind (or "derived")
    transform: str = "none"
    generalise: str | None = None
    vocabulary: tuple[str, ...] | None = None  # category: canonical spellings ('unknown' is added by the layout)
    learned: bool = False  # category: levels from the federation's noised counts (rarer than min_count -> 'other')
    min_count: int | None = None
    levels: dict[str, int] | None = None  # ordinal: spelling -> code (the feature is the code)
    reference: tuple[float, float] | None = None  # fixed centre, scale for standardising

    def columns(self) -> list[str]:
        """The matrix columns: one for numeric and bool features, one per level (and
        'unknown') for a fixed vocabulary. A learned vocabulary's columns are known only
        once the federation's counts are in."""
        if self.kind != "category":
            return [self.name]
        if self.learned or self.vocabulary is None:
            raise ValueError(f"feature {self.name!r} has a learned vocabulary: its columns come from the federation")
        return [f"{self.name}={v}" for v in (*self.vocabulary, UNKNOWN)]


@dataclass(frozen=True)
class QuasiIdentifier:
    name: str
    kind: str
    generalise: str | None  # None: enters as it is (a category or flag)


_DIGESTS: dict[int, tuple[Contract, str]] = {}  # id → (the contract, its digest); see `Contract.digest`


class Contract(_Strict):
    """A consortium's data contract (see the module doc); `Contract.load(path)`."""

    contract: ContractInfo
    generalisation: GeneralisationRules = Field(default_factory=GeneralisationRules)
    fields: list[FieldSpec] = Field(min_length=1, description="the customers table, in order")
    transactions: EventTable | None = None
    interactions: EventTable | None = None
    tasks: list[Task] = Field(min_length=1)

    _source: Path | None = PrivateAttr(None)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> Contract:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"contract file not found: {path}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"contract {path}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, source=path)

    @classmethod
    def loads(cls, text: str, source: str | Path = "<text>") -> Contract:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"contract {source}: not valid TOML: {exc}") from None
        return cls.from_dict(raw, source=source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | Path = "<dict>") -> Contract:
        try:
            contract = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"contract {source}: {_pretty(exc, raw)}") from None
        contract._source = Path(source) if isinstance(source, Path) else None
        return contract

    @property
    def source(self) -> Path | None:
        return self._source

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Contract:
        problems: list[str] = []
        tables: dict[str, list[FieldSpec]] = {"customers": self.fields}
        for name in ("transactions", "interactions"):
            if getattr(self, name) is not None:
                tables[name] = getattr(self, name).fields
        for table, fields in tables.items():
            prefix = "fields" if table == "customers" else f"{table}.fields"
            seen: set[str] = set()
            for f in fields:
                problems += f.problems(f"{prefix}.{f.name}", table)
                if f.name in seen:
                    problems.append(f"{prefix}.{f.name}: the name is used twice")
                seen.add(f.name)
        problems += self._customer_id_problems()
        problems += self._event_table_problems()
        problems += self._task_problems()
        if not problems:
            problems += self._feature_problems()
        if problems:
            raise ValueError("; ".join(problems))
        # resolve per-kind defaults (frozen models: written through object.__setattr__ once, here)
        object.__setattr__(self, "fields", [f.resolved() for f in self.fields])
        for name in ("transactions", "interactions"):
            table = getattr(self, name)
            if table is not None:
                object.__setattr__(self, name, table.model_copy(update={"fields": [f.resolved() for f in table.fields]}))
        object.__setattr__(self, "tasks", [_resolved_task(t) for t in self.tasks])
        return self

    def _customer_id_problems(self) -> list[str]:
        ids = [f for f in self.fields if f.kind is Kind.ID and f.key]
        if len(ids) != 1:
            found = f" (found {', '.join(f.name for f in ids)})" if ids else ""
            return [f"fields: exactly one field must have kind = \"id\" and key = true: the customer id{found}"]
        return []

    def _event_table_problems(self) -> list[str]:
        out = []
        for name in ("transactions", "interactions"):
            table: EventTable | None = getattr(self, name)
            if table is None:
                continue
            roles = [f.role for f in table.fields if f.role]
            for role in sorted({r for r in roles if roles.count(r) > 1}):
                out.append(f"{name}.fields: role {role!r} is given to more than one field")
            for role in ("customer", "date"):
                f = table.by_role(role)
                if f is None:
                    out.append(f"{name}.fields: no field has role = {role!r} (every {name} row needs one)")
                elif not f.key:
                    out.append(f"{name}.fields.{f.name}.key: the {role} field must be a key field (key = true)")
            seen: set[str] = set()
            for d in table.features or []:
                key = f"{name}.features.{d.name}"
                if d.name not in DERIVABLE[name]:
                    out.append(f"{key}: the {name} table derives {', '.join(DERIVABLE[name])}, not {d.name!r}")
                if d.name in seen:
                    out.append(f"{key}: listed twice")
                if d.reference is not None and not d.reference[1] > 0:
                    out.append(f"{key}.reference: the scale (second value) must be positive")
                seen.add(d.name)
            if name == "transactions" and table.by_role("amount") is None and not (
                    table.by_role("quantity") and table.by_role("unit_price")):
                out.append("transactions.fields: a purchase needs a value: a field with role \"amount\", or "
                           "roles \"quantity\" and \"unit_price\"")
        return out

    def _task_problems(self) -> list[str]:
        out = []
        names = [t.name for t in self.tasks]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            out.append(f"tasks.{dup}: the name is used twice")
        by_name = {f.name: f for f in self.fields}
        for t in self.tasks:
            key = f"tasks.{t.name}.label"
            lab = t.label
            if lab.field is None and lab.derived is None:
                out.append(f"{key}: name a label field (field = ...) or a derived label (derived = ...)")
            if lab.field is not None:
                f = by_name.get(lab.field)
                if f is None:
                    out.append(f"{key}.field: no customers field {lab.field!r}")
                elif f.kind is not Kind.BOOL:
                    out.append(f"{key}.field: {lab.field!r} is a {f.kind.value} field; a label is a bool field")
                elif f.role != "label":
                    out.append(f"{key}.field: {lab.field!r} must have role = \"label\" (label fields never become features)")
            if lab.derived is None:
                for opt in ("horizon_days", "category", "population"):
                    if getattr(lab, opt) is not None:
                        out.append(f"{key}.{opt}: only derived labels take it")
                continue
            if self.transactions is None:
                out.append(f"{key}.derived: {lab.derived!r} is derived from purchases; the contract has no [transactions] table")
            if lab.derived == "bought-category":
                if self.transactions is not None:
                    cat = self.transactions.by_role("category")
                    if cat is None:
                        out.append(f"{key}.derived: \"bought-category\" needs a transactions field with role \"category\"")
                    elif lab.category and isinstance(cat.vocabulary, list) and lab.category not in cat.vocabulary:
                        out.append(f"{key}.category: {lab.category!r} is not in transactions.fields.{cat.name}.vocabulary")
            elif lab.category is not None:
                out.append(f"{key}.category: only \"bought-category\" takes a category")
            if lab.value_cap is not None and lab.derived != "future-spend":
                out.append(f"{key}.value_cap: only \"future-spend\" takes a value cap")
            if lab.value_fit is not None and lab.derived != "future-spend":
                out.append(f"{key}.value_fit: only \"future-spend\" takes it")
            for opt in ("period_days", "lapse_days"):
                if getattr(lab, opt) is not None and lab.derived != "time-to-churn":
                    out.append(f"{key}.{opt}: only \"time-to-churn\" takes it")
            if lab.derived == "time-to-churn":
                period = lab.period_days or DEFAULT_PERIOD_DAYS
                if lab.horizon_days is None or not 2 <= lab.horizon_days // period <= 36:
                    out.append(f"{key}.horizon_days: \"time-to-churn\" needs a horizon of 2 to 36 periods of "
                               f"{period} days")
        return out

    def _feature_problems(self) -> list[str]:
        out = []
        groups = self._feature_groups()
        owners = {f.name: f.feature_name for f in self.fields}
        for fname, members in groups.items():
            kinds = {(m.kind, m.transform, m.vocabulary, m.learned) for _, m in members}
            if len(kinds) > 1:
                out.append(f"fields: {', '.join(s for s, _ in members)} all become feature {fname!r} but differently "
                           "(kind, transform or vocabulary): give one of them another `feature` name")
            if fname in owners and owners[fname] != fname:
                out.append(f"fields.{fname}: feature {fname!r} (from {', '.join(s for s, _ in members)}) has the name "
                           f"of this field, which is not one of its sources")
        n = len(groups)
        if n < self.contract.min_features:
            out.append(f"contract.min_features: {self.contract.min_features} but the contract defines only {n} features")
        return out

    def _feature_groups(self) -> dict[str, list[tuple[str, Feature]]]:
        groups: dict[str, list[tuple[str, Feature]]] = {}
        for f in self.fields:
            feat = _feature_of(f)
            if feat is not None:
                groups.setdefault(feat.name, []).append((f.name, feat))
        for table in ("interactions", "transactions"):
            if getattr(self, table) is None:
                continue
            for d in getattr(self, table).derived(table):
                feat = Feature(name=d.name, kind="numeric", sources=(f"{table}:{d.name}",), field_kind="derived",
                               transform=d.transform, reference=d.reference)
                groups.setdefault(d.name, []).append((feat.sources[0], feat))
        return groups

    # ------------------------------------------------------------ what the pipeline asks
    @property
    def name(self) -> str:
        return self.contract.name

    @property
    def version(self) -> int:
        return self.contract.version

    def canonical_json(self) -> str:
        """The validated contract (defaults resolved) as canonical JSON: sorted keys, no
        whitespace; what `digest()` hashes."""
        return json.dumps(self.model_dump(mode="python"), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=True, default=str)

    def dumps(self) -> str:
        """The validated contract (defaults resolved) as TOML: loads back to the same digest."""
        import tomli_w

        return tomli_w.dumps(_plain(self.model_dump(mode="python", exclude_none=True)))

    def digest(self) -> str:
        """sha256 (hex) of `canonical_json()`: the contract's identity across partners.

        Kept per instance (`_DIGESTS`): a simulation process builds a node per partner, a
        thousand of them on one contract, and each asks for the digest (its layout, its
        data cache key) at 0.7 ms a time. A contract is frozen once validated; a copy with
        changes is another instance and hashed afresh."""
        held = _DIGESTS.get(id(self))
        if held is not None and held[0] is self:
            return held[1]
        digest = hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()
        _DIGESTS[id(self)] = (self, digest)  # held, so its id is not reused while listed
        while len(_DIGESTS) > 64:
            _DIGESTS.pop(next(iter(_DIGESTS)))
        return digest

    def table(self, name: TableName = "customers") -> list[FieldSpec]:
        if name == "customers":
            return list(self.fields)
        events: EventTable | None = getattr(self, name)
        return list(events.fields) if events is not None else []

    def field(self, name: str, table: TableName = "customers") -> FieldSpec:
        for f in self.table(table):
            if f.name == name:
                return f
        known = ", ".join(f.name for f in self.table(table))
        raise KeyError(f"contract {self.name!r} has no {table} field {name!r}; known: {known}")

    @property
    def customer_id(self) -> FieldSpec:
        return next(f for f in self.fields if f.kind is Kind.ID and f.key)

    def key_fields(self, table: TableName = "customers") -> list[str]:
        """Fields whose absence quarantines the row ("to be supplemented")."""
        return [f.name for f in self.table(table) if f.key]

    def identifiers(self) -> list[str]:
        """Core-sensitive customers fields dropped at pseudonymisation (the customer id
        itself is pseudonymised, not dropped, and is not listed)."""
        cid = self.customer_id.name
        return [f.name for f in self.fields if f.grade is Grade.CORE_SENSITIVE and f.name != cid]

    def quasi_identifiers(self) -> list[QuasiIdentifier]:
        """Sensitive customers fields, with how each is generalised (for k-anonymity)."""
        return [QuasiIdentifier(f.name, f.kind.value, f.generalise.value if f.generalise else None)
                for f in self.fields if f.grade is Grade.SENSITIVE and f.role != "label"]

    def label_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.role == "label"]

    def features(self) -> list[Feature]:
        """The model's inputs in contract order (customers fields, then the features derived
        from the event tables). Fields that become the same feature (age and birth date
        both become `age_band`; an explicit tenure and a signup date both `tenure_months`)
        are one feature whose sources are in contract order: the first the partner maps wins."""
        out = []
        for name, members in self._feature_groups().items():
            first = members[0][1]
            out.append(Feature(**{**first.__dict__, "sources": tuple(s for s, _ in members)}))
        return out

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise ConfigError(f"contract {self.name!r} has no task {name!r}; tasks: {', '.join(t.name for t in self.tasks)}")


def _feature_of(f: FieldSpec) -> Feature | None:
    fk = f.feature_kind
    if fk is None:
        return None
    vocabulary, learned, min_count = None, False, None
    if fk == "category":
        if f.generalise is Generalise.MONTH:
            vocabulary = MONTHS
        elif f.generalise is Generalise.POSTCODE_PREFIX or f.vocabulary == "learned":
            learned, min_count = True, f.min_count or DEFAULT_MIN_COUNT
        else:
            vocabulary = tuple(f.vocabulary or ())
    return Feature(name=f.feature_name or f.name, kind=fk, sources=(f.name,), field_kind=f.kind.value,
                   transform=f.transform, generalise=f.generalise.value if f.generalise else None,
                   vocabulary=vocabulary, learned=learned, min_count=min_count,
                   levels=dict(f.levels) if f.kind is Kind.ORDINAL and f.levels else None,
                   reference=f.reference)


def _plain(value: Any) -> Any:
    """Model dump -> what tomli_w writes: enums as strings, tuples as lists, no None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def _resolved_task(t: Task) -> Task:
    update: dict[str, Any] = {}
    if t.label.derived is not None and t.label.horizon_days is None:
        update["label"] = t.label.model_copy(update={"horizon_days": DEFAULT_HORIZON_DAYS})
    if t.scores is None:
        update["scores"] = "risk-tiers" if t.label.derived in ("no-purchase", "time-to-churn") else "deciles"
    return t.model_copy(update=update) if update else t


def _pretty(exc: ValidationError, raw: dict[str, Any]) -> str:
    """Pydantic's errors with each location spelled as the contract's key: list items of
    `fields` (and of `tasks`) by their name, so `fields.age.generalise`, not `fields.5.generalise`."""
    parts = []
    for err in exc.errors():
        loc = list(err["loc"])
        words: list[str] = []
        node: Any = raw
        for step in loc:
            if isinstance(step, int) and isinstance(node, list) and step < len(node):
                item = node[step]
                label = item.get("name") if isinstance(item, dict) else None
                words.append(str(label) if isinstance(label, str) and label else f"[{step}]")
                node = item
            else:
                words.append(str(step))
                node = node.get(step) if isinstance(node, dict) else None
        msg = err["msg"].removeprefix("Value error, ")
        where = ".".join(words).replace(".[", "[")
        # union members add their type to the location ("missing.str"): say it once
        where = re.sub(r"\.(str|bool|int|float|list\[str\]|literal\[[^\]]*\]|constrained-int|constrained-float|"
                       r"function-after\[[^\]]*\]|tuple\[[^\]]*\])", "", where)
        if err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the contract format)"
        parts.append(f"{where}: {msg}" if where else msg)
    # a union reports every member's complaint: keep one line per key
    seen, unique = set(), []
    for p in parts:
        key = p.split(": ", 1)[0]
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return "; ".join(unique)
