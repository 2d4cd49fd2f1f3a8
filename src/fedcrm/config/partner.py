"""A partner's config: its exports and how they map onto the canonical fields, its cleaning
and generalisation rules, and its own privacy policy.

Partner configs live on the partner's node and name only its own files; relative paths
resolve against the config file, so a partner can move the folder as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator

from fedcrm.config.loading import Strict, load_cached, pretty, read_toml
from fedcrm.config.activity import ActivityConfig
from fedcrm.contract.model import Contract, Kind, TableName
from fedcrm.contract.tables import CUSTOMER_ID, TableSchema, load_contract, standard_contract, table_schema
from fedcrm.errors import ConfigError

MoneyUnit = Literal["units", "cents", "thousands", "wan"]
ReleaseKind = Literal["train", "evaluate", "statistics", "baseline"]
RELEASE_KINDS: tuple[ReleaseKind, ...] = ("train", "evaluate", "statistics", "baseline")
MONEY_FACTORS: dict[str, float] = {"units": 1.0, "cents": 0.01, "thousands": 1000.0, "wan": 10000.0}


class TableSpec(Strict):
    """How one raw export maps onto the fields of one table of the partner's contract (`TABLE`)."""

    TABLE: ClassVar[TableName] = "customers"

    path: Path
    format: Literal["csv", "parquet", "auto"] = "auto"
    delimiter: str = Field(",", description="the CSV delimiter; 'whitespace' for columns separated by runs of "
                           "spaces or tabs")
    encoding: str = "utf-8"
    columns: dict[str, str] = Field(
        description="contract field -> raw column name in this file"
    )
    date_formats: list[str] = Field(default_factory=lambda: ["%Y-%m-%d"])
    money_unit: MoneyUnit = "units"
    true_values: list[str] = Field(default_factory=lambda: ["yes", "y", "true", "1", "t"])
    false_values: list[str] = Field(default_factory=lambda: ["no", "n", "false", "0", "f"])
    values: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="category or ordinal field -> {raw spelling: the contract's spelling}",
    )
    codes: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="number, count or ordinal field -> {raw code: number}, for ordinal codes (a class 'gold' → 3); "
                    "matched ignoring case and surrounding spaces; other values are parsed as numbers",
    )
    id_case: Literal["keep", "lower", "upper"] = Field(
        "keep", description="case-fold ids (customer ids are always trimmed): set the same on every table of a "
        "partner, so its purchases still join its customers")

    _schema: TableSchema | None = PrivateAttr(None)

    @property
    def schema(self) -> TableSchema:
        """The contract table this export maps onto, under pipeline names (`fedcrm.contract.tables`)."""
        return self._schema if self._schema is not None else table_schema(standard_contract(), self.TABLE)

    def bound(self, contract: Contract) -> TableSpec:
        """This mapping checked against `contract` and bound to it; ValueError names every problem."""
        schema = table_schema(contract, self.TABLE)
        problems = []
        fields = {f.name: f for f in contract.table(self.TABLE)}
        unknown = sorted(set(self.columns) - set(fields))
        if unknown:
            problems.append(f"{self.TABLE}.columns: {unknown} are not {self.TABLE} fields of contract "
                            f"{contract.name!r}; its fields: {sorted(fields)}")
        missing = [n for n, f in fields.items() if f.key and n not in self.columns]
        if missing:
            problems.append(f"{self.TABLE}.columns: the mapping must name the raw column for key field(s) {missing}")
        for name in self.values:
            if name not in fields or fields[name].kind not in (Kind.CATEGORY, Kind.ORDINAL):
                problems.append(f"{self.TABLE}.values.{name}: only category and ordinal fields take a value map")
        for name in self.codes:
            if name not in fields or fields[name].kind not in (Kind.NUMBER, Kind.COUNT, Kind.ORDINAL):
                problems.append(f"{self.TABLE}.codes.{name}: only number, count and ordinal fields take a code map")
        if problems:
            raise ValueError("; ".join(problems))
        out = self.model_copy()
        out._schema = schema
        return out

    def pipeline_columns(self) -> dict[str, str]:
        """pipeline name -> raw column, in mapping order."""
        internal = self.schema.internal
        return {internal.get(name, name): raw for name, raw in self.columns.items()}

    @property
    def file_format(self) -> str:
        if self.format != "auto":
            return self.format
        return "parquet" if self.path.suffix.lower() in {".parquet", ".pq"} else "csv"


class TableMapping(TableSpec):
    """The customers export."""


class TransactionMapping(TableSpec):
    """The purchases export: one row per order line."""

    TABLE: ClassVar[TableName] = "transactions"


class InteractionMapping(TableSpec):
    """The interactions export: one row per call, ticket, visit or campaign contact."""

    TABLE: ClassVar[TableName] = "interactions"


class CleaningRules(Strict):
    """Per-partner knobs of the cleaning rules."""

    dedupe_by: str = Field(
        CUSTOMER_ID, description="the unique id duplicates are found by: the customer id, or another mapped id or "
        "text field of the contract (a phone is compared by its digits, an email case-folded)")
    outlier_spend_multiple: float = Field(20.0, gt=1.0, description="spend above this × median is abnormal")
    max_age: float = 110.0
    min_age: float = 16.0
    defaults: dict[str, float | str | bool] = Field(
        default_factory=dict, description="value for a missing non-key field (else 'unknown' / median)"
    )


class Generalisation(Strict):
    """How coarse quasi-identifiers become before they may reach a model or a report."""

    age_band_years: int = Field(10, ge=1)
    postcode_prefix: int = Field(3, ge=0, description="characters of the postcode kept")
    date_granularity: Literal["month", "quarter", "year"] = "month"
    k_threshold: int = Field(5, ge=2, description="k-anonymity target reported by `partner check`")


class PrivacyPolicy(Strict):
    """The partner's own privacy rules, read only from its node: the coordinator's run
    config has no key that can change them."""

    epsilon_cap: float = Field(10.0, gt=0, description="total ε this partner will ever spend on its data")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ at which every ε of this partner is stated")
    accountant: Literal["prv", "rdp"] = Field("prv", description="the accountant the cap is enforced with")
    compose_over: Literal["partner", "dataset"] = Field(
        "partner", description="'partner': every release in the ledger counts (the same customers appear "
        "in every export); 'dataset': only releases on the same dataset fingerprint")
    dp_required: bool = Field(
        True, description="refuse every run whose config turns DP-SGD off (dp-enabled = false); set false only "
        "for data the partner may release without differential privacy")
    max_run_epsilon: float | None = Field(
        None, gt=0, description="largest ε one run may add to this partner's ledger (the run's dp-target-epsilon); "
        "a run asking more, or a run without DP, is refused; unset: only epsilon_cap limits a run")
    max_rounds: int | None = Field(
        None, ge=1, description="most federated rounds one run (job) may train on this partner's data; unset: no limit")
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the partner's customers held out for evaluation; the run config's "
        "test-fraction is ignored")
    min_holdout_rows: int = Field(
        50, ge=1, description="evaluation is refused when the hold-out has fewer rows: metrics and score histograms "
        "of a handful of customers give away their labels and scores")
    min_stats_noise_multiplier: float = Field(
        8.0, ge=0, description="least noise (σ, in units of a row's clipped contribution) on the column sums this node "
        "releases for the federation's statistics; the node applies the larger of this and the run's "
        "stats-noise-multiplier and charges the release (σ 8: ε ≈ 0.44 at δ 1e-5). 0 releases exact sums, uncharged")
    min_eval_noise_multiplier: float = Field(
        4.0, ge=0, description="least noise (σ, in counts) on every count of the evaluation histograms this node "
        "releases; a DP run's evaluations get more when its dp-target-epsilon needs it (the node calibrates them to "
        "the run's target on the hold-out customers, who are not trained on). Every evaluation is charged (σ 4: "
        "ε ≈ 0.95 at δ 1e-5 for one evaluation). 0 with a run without DP: exact metrics, uncharged")
    max_message_age: float = Field(
        3600.0, gt=0, description="seconds after the coordinator sent it that a message is still served, whatever "
        "time-to-live the coordinator gave it: a SuperNode that comes back late does not train (or pay) for a "
        "round that has closed")
    releases: list[ReleaseKind] = Field(
        default_factory=lambda: list(RELEASE_KINDS), description="what this node may release: 'train' (model "
        "updates), 'evaluate' (hold-out metrics), 'statistics' (column sums for the federation's normalisation), "
        "'baseline' (the hold-out metrics of a model trained on this partner's rows alone, when a run asks for one)")

    @field_validator("releases")
    @classmethod
    def _no_repeats(cls, releases: list[ReleaseKind]) -> list[ReleaseKind]:
        return sorted(set(releases), key=RELEASE_KINDS.index)


def default_privacy_dir(work_dir: Path) -> Path:
    """Where a config that names no `privacy_dir` keeps its privacy state: beside the work
    dir, never inside it."""
    work_dir = Path(work_dir)
    return work_dir.parent / f"{work_dir.name or 'work'}-privacy"


class PartnerConfig(Strict):
    """Everything one partner node needs to prepare its own data."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    partner_id: int = Field(ge=0, description="consortium member number; the only identity sent upstream")
    work_dir: Path = Field(description="the node's cache and logs (prepared data, quarantine, pseudonym lookup, "
                           "egress log); safe to delete, it is rebuilt from the exports")
    privacy_dir: Path | None = Field(
        None, description="the node's privacy state: the ledger, its anchor and lock, the kept replies. Never inside "
        "work_dir, so no cache clean-up resets the budget. Default: `<work_dir>-privacy` beside the work dir; "
        "always set once the config is loaded")
    secret_file: Path
    contract: Path | None = Field(None, description="this node's copy of the consortium's contract; a run whose "
                                  "contract digest differs from it is refused")
    as_of: str | None = Field(None, description="ISO date the export was taken; default: today")
    customers: TableMapping
    transactions: TransactionMapping | None = None
    interactions: InteractionMapping | None = None
    activity: ActivityConfig = Field(default_factory=ActivityConfig)
    cleaning: CleaningRules = Field(default_factory=CleaningRules)
    generalisation: Generalisation = Field(default_factory=Generalisation)
    privacy: PrivacyPolicy = Field(default_factory=PrivacyPolicy)
    source: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _privacy_dir_apart_from_the_cache(self) -> PartnerConfig:
        if self.privacy_dir is None:
            self.privacy_dir = default_privacy_dir(self.work_dir)
        work, priv = Path(os.path.normpath(self.work_dir)), Path(os.path.normpath(self.privacy_dir))
        if priv.is_relative_to(work):
            raise ValueError(f"privacy_dir ({self.privacy_dir}) must not be inside work_dir ({self.work_dir}): the "
                             "work dir is a cache, and deleting it must never reset the privacy ledger")
        return self

    _contract: Contract | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _bound_to_its_contract(self, info: ValidationInfo) -> PartnerConfig:
        """A config naming no contract maps onto the standard one; a named contract is bound
        once its path is resolved (`_resolved`), or here when it is absolute already. A
        validation context `{"contract": Contract}` binds to that contract instead."""
        given = (info.context or {}).get("contract") if info is not None else None
        if given is not None:
            self._bind(given)
        elif self.contract is None or self.contract.is_absolute():
            self._bind(load_contract(self.contract))
        return self

    def _bind(self, contract: Contract) -> None:
        updates = {}
        for table in ("customers", "transactions", "interactions"):
            spec = getattr(self, table)
            if spec is not None:
                updates[table] = spec.bound(contract)
        for table, spec in updates.items():
            object.__setattr__(self, table, spec)
        self._contract = contract
        dedupe = self.cleaning.dedupe_by
        cid = contract.customer_id.name
        if dedupe == CUSTOMER_ID:
            dedupe = cid
        if dedupe not in self.customers.columns:
            raise ValueError(f"cleaning.dedupe_by = {self.cleaning.dedupe_by!r} but the customers mapping has no such column")
        if contract.field(dedupe).kind not in (Kind.ID, Kind.TEXT):
            raise ValueError(f"cleaning.dedupe_by = {dedupe!r}: duplicates are found by an id or text field, "
                             f"not a {contract.field(dedupe).kind.value} field")

    @property
    def contract_model(self) -> Contract:
        """The contract this partner's exports map onto (the standard one when it names none)."""
        if self._contract is None:
            self._bind(load_contract(self.contract))
        return self._contract  # type: ignore[return-value]

    @property
    def dedupe_field(self) -> str:
        """The pipeline name of the column duplicates are found by."""
        return self.customers.schema.internal.get(self.cleaning.dedupe_by, self.cleaning.dedupe_by)

    @classmethod
    def load(cls, path: str | Path) -> PartnerConfig:
        return load_cached(cls, Path(path).resolve())

    @classmethod
    def _load(cls, path: Path) -> PartnerConfig:
        raw = read_toml(path)
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(f"partner config {path}: {pretty(exc)}") from None
        return cfg._resolved(path)

    def _resolved(self, path: Path) -> PartnerConfig:
        base = path.parent

        def resolve(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        customers = self.customers.model_copy(update={"path": resolve(self.customers.path)})
        tx, ix = self.transactions, self.interactions
        out = self.model_copy(update={
            "work_dir": resolve(self.work_dir),
            "privacy_dir": resolve(self.privacy_dir),
            "secret_file": resolve(self.secret_file),
            "contract": resolve(self.contract) if self.contract else None,
            "customers": customers,
            "transactions": tx.model_copy(update={"path": resolve(tx.path)}) if tx else None,
            "interactions": ix.model_copy(update={"path": resolve(ix.path)}) if ix else None,
            "source": path,
        })
        try:
            out._bind(load_contract(out.contract))
        except ValueError as exc:
            raise ConfigError(f"partner config {path}: {exc}") from None
        return out

    @property
    def identifier_columns(self) -> list[str]:
        """The contract's direct identifiers this partner's export carries (dropped at pseudonymisation)."""
        return [f for f in self.contract_model.identifiers() if f in self.customers.columns]


