"""The data-quality report a partner's data team reads before joining a run, and the gate
`partner check` applies: a mapping that would train on nothing, an unreadable key field, a
one-class label or a k-anonymity below the target is a finding, not a quiet AUC of 0.5."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field
from rich.console import Group
from rich.table import Table

from fedcrm.config import PartnerConfig
from fedcrm.contract.model import OTHER, UNKNOWN
from fedcrm.data.anonymity import KAnonymityReport, generalised_quasi_identifiers, k_anonymity
from fedcrm.data.clean import CleaningReport
from fedcrm.data.prepare import (DERIVED_LABEL, as_of_date, label_field, load_and_clean, load_events, partner_layout,
                                 purchase_activity, quarantine_rows)
from fedcrm.privatefiles import private_replace

MIN_KEY_READABLE_PCT = 95.0  # a key field (id, label) readable on fewer rows is a finding
MAX_UNREADABLE_PCT = 50.0  # a mapped field unreadable on more rows than this is a finding (a wrong format?)
MAX_UNKNOWN_PCT = 50.0  # a category whose values mostly fall to 'unknown': the value map misses its spellings


class FeatureUse(BaseModel):
    """One model feature (a category: its one-hot group) and whether this partner feeds it."""

    feature: str
    kind: Literal["numeric", "bool", "category"]
    source: str = Field(description="the field(s) behind it")
    mapped: bool = Field(description="False: the partner's rows all get the neutral value (0, or 'unknown')")
    unknown_pct: float | None = Field(None, description="a category: share of rows that fall to 'unknown'")


class Gate(BaseModel):
    """The thresholds `partner check` holds a mapping to (the contract's, where there is one)."""

    min_features: int = 1
    min_key_readable_pct: float = MIN_KEY_READABLE_PCT
    k_threshold: int = 5
    source: str = "defaults"


class QualityReport(BaseModel):
    partner: str
    file: Path
    task: str | None
    label_rate: float | None
    cleaning: CleaningReport
    transactions: CleaningReport | None = None
    interactions: CleaningReport | None = None
    k_anonymity: KAnonymityReport
    features: list[FeatureUse] = Field(default_factory=list)
    gate: Gate = Field(default_factory=Gate)
    findings: list[str] = Field(default_factory=list, description="what the gate found; empty: the mapping passes")
    errors: list[str] = Field(default_factory=list, description="the findings that mean the mapping is wrong: "
                              "the check fails on them")
    unchecked_labels: list[str] = Field(default_factory=list, description="label fields of tasks other than "
                                        "`task` (or all, without one): filled like any field, not checked")

    @property
    def features_mapped(self) -> int:
        return sum(f.mapped for f in self.features)


def gate_for(cfg: PartnerConfig, k_threshold: int | None = None) -> Gate:
    """The contract's thresholds when the partner holds one, else the config's k and defaults."""
    if cfg.contract is not None:
        terms = cfg.contract_model.contract
        return Gate(min_features=terms.min_features, k_threshold=k_threshold or terms.k_anonymity,
                    source=f"contract {terms.name!r}")
    return Gate(k_threshold=k_threshold or cfg.generalisation.k_threshold)


def feature_use(cfg: PartnerConfig, clean: pd.DataFrame) -> list[FeatureUse]:
    """Every feature of the contract's layout, and whether this partner's mapping feeds it."""
    layout = partner_layout(cfg)
    derived = set()
    if cfg.transactions is not None:
        derived.add("transactions")
    if cfg.interactions is not None:
        derived.add("interactions")
    values = layout.values(clean, as_of_date(cfg))
    out = []
    for group, kind in ((layout.numeric, "numeric"), (layout.flags, "bool"), (layout.categories, "category")):
        for feat in group:
            names = [s.column if s.kind != "derived" else f"{s.column} (derived)" for s in feat.sources]
            fed = feat.name in values and values[feat.name].notna().any()
            fed = fed or any(s.kind == "derived" and s.table in derived for s in feat.sources)
            unknown = None
            if kind == "category" and feat.name in values and len(clean):
                v = values[feat.name]
                levels = set(feat.levels) - {UNKNOWN, OTHER}  # type: ignore[union-attr]
                known = v.ne(UNKNOWN) & v.notna() & (v.isin(levels) if levels else True)
                unknown = round(float(100 * (1 - known.mean())), 2)
            out.append(FeatureUse(feature=feat.name, kind=kind, source=" or ".join(names), mapped=bool(fed),  # type: ignore[arg-type]
                                  unknown_pct=unknown))
    return out


def mapping_errors(report: QualityReport, keys: list[str]) -> list[str]:
    """Findings that mean the mapping itself is wrong (a key or a field the export has but
    the mapping cannot read): `partner check` fails on these whatever else it is told."""
    out = []
    for key in keys:
        pct = report.cleaning.completeness_pct.get(key)
        if pct is not None and pct < report.gate.min_key_readable_pct:
            out.append(f"key field {key!r} is readable on {pct:.1f}% of rows (at least "
                       f"{report.gate.min_key_readable_pct:g}% expected): check its column and format")
    rows = report.cleaning.rows_in
    for name, bad in report.cleaning.unreadable_by_field.items():
        if rows and name not in keys and 100 * bad / rows > MAX_UNREADABLE_PCT:
            out.append(f"field {name!r}: {bad} of {rows} rows ({100 * bad / rows:.0f}%) could not be read: check its "
                       "format in the mapping (a date format, a decimal comma, a unit)")
    return out


def findings(report: QualityReport, keys: list[str]) -> list[str]:
    """What the gate finds, each in words a data team can act on (the mapping errors first)."""
    gate, out = report.gate, mapping_errors(report, keys)
    if report.features_mapped < gate.min_features:
        out.append(f"{report.features_mapped} model features are fed by this mapping ({gate.source} asks for at least "
                   f"{gate.min_features}): a run would train on neutral values only; map more columns")
    if report.label_rate is not None and report.label_rate in (0.0, 1.0):
        out.append(f"the label of task {report.task!r} has one class only (rate {report.label_rate:.0%}): "
                   "check its true/false spellings")
    k = report.k_anonymity
    if k.k is not None and k.k < gate.k_threshold:
        out.append(f"k-anonymity is {k.k} over {', '.join(k.quasi_identifiers)}, below {gate.k_threshold} "
                   f"({k.rows_below_threshold} rows in smaller groups): coarsen the generalisation")
    for f in report.features:
        if f.unknown_pct is not None and f.unknown_pct >= MAX_UNKNOWN_PCT:
            out.append(f"category {f.feature!r}: {f.unknown_pct:.0f}% of rows fall to 'unknown' (spellings its value "
                       "map does not cover)")
    return out


def check_partner(cfg: PartnerConfig, task: str | None = None, k_threshold: int | None = None,
                  quarantine_out: Path | None = None) -> QualityReport:
    """Validate and clean without writing anything (but `quarantine_out`: the quarantined
    customers' rows with row number and reason, owner-only; and DuckDB's spill folder in the
    work dir while it runs); MappingError when the mapping cannot apply."""
    label_col = label_field(cfg, task) if task else None
    keys = ["customer_id"] + ([label_col] if label_col and label_col != DERIVED_LABEL else [])
    raw, cleaned = load_and_clean(cfg, key_fields=keys)
    if quarantine_out is not None:
        write_rows(quarantine_rows(raw, cleaned.quarantine), quarantine_out)
    gate = gate_for(cfg, k_threshold)
    qi = generalised_quasi_identifiers(cleaned.clean, as_of_date(cfg), cfg.generalisation, cfg.contract_model)
    # purchases through the engine `prepare` uses (DuckDB where it covers the export): a
    # partner checking ten million lines should not need pandas' memory for it
    tx = (purchase_activity(cfg, cfg.activity, None, "", pd.Index(cleaned.clean["customer_id"].astype(str))).report
          if cfg.transactions is not None else None)
    ix = load_events(cfg.interactions, cfg.name, cfg.cleaning, as_of_date(cfg))[1].report if cfg.interactions else None
    label = keys[1] if len(keys) > 1 else None  # None: derived from purchases when prepared
    rate = float(cleaned.clean[label].mean()) if label and len(cleaned.clean) else None
    report = QualityReport(partner=cfg.name, file=cfg.customers.path, task=task, label_rate=rate,
                           cleaning=cleaned.report, transactions=tx, interactions=ix,
                           k_anonymity=k_anonymity(qi, gate.k_threshold), features=feature_use(cfg, cleaned.clean),
                           gate=gate, unchecked_labels=[f for f in cfg.contract_model.label_fields() if f not in keys])
    return report.model_copy(update={"findings": findings(report, keys), "errors": mapping_errors(report, keys)})


def write_rows(frame: pd.DataFrame, path: Path) -> None:
    """Raw values: 0600 from creation; Parquet or CSV by the file's suffix."""
    with private_replace(path, "wb") as fh:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(fh, index=False)
        else:
            fh.write(frame.to_csv(index=False).encode("utf-8"))


def render(report: QualityReport) -> Group:
    c = report.cleaning
    head = Table(title=f"data quality: {report.partner} ({report.file.name})", show_header=False)
    head.add_row("rows in", str(c.rows_in))
    head.add_row("rows clean (trainable)", str(c.rows_clean))
    head.add_row("rows quarantined", str(c.rows_quarantined))
    head.add_row("duplicates (older records)", str(c.duplicates))
    if report.label_rate is not None:
        head.add_row(f"label rate ({report.task})", f"{report.label_rate:.1%}")
    k = report.k_anonymity
    head.add_row("k-anonymity", "no quasi-identifiers" if k.k is None else
                 f"k = {k.k} over {', '.join(k.quasi_identifiers)}; {k.rows_below_threshold} rows in groups < {k.k_threshold}")
    for label, t in (("purchase lines", report.transactions), ("interactions", report.interactions)):
        if t is not None:
            head.add_row(f"{label} in / clean / quarantined", f"{t.rows_in} / {t.rows_clean} / {t.rows_quarantined}")
    head.add_row("model features fed", f"{report.features_mapped} of {len(report.features)}")
    reasons = Table(title="quarantined by reason")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for reason, n in c.quarantined_by_reason.items():
        reasons.add_row(reason, str(n))
    for label, t in (("purchases", report.transactions), ("interactions", report.interactions)):
        for reason, n in (t.quarantined_by_reason.items() if t else []):
            reasons.add_row(f"{label}: {reason}", str(n))
    fields = Table(title="completeness per contract field")
    for col in ("field", "complete %", "unreadable", "filled"):
        fields.add_column(col, justify="right" if col != "field" else "left")
    for name, pct in c.completeness_pct.items():
        filled = "a label: not checked (--task)" if name in report.unchecked_labels else str(c.filled_by_field.get(name, 0))
        fields.add_row(name, f"{pct:.1f}", str(c.unreadable_by_field.get(name, 0)), filled)
    features = Table(title="model features this mapping feeds")
    for col in ("feature", "kind", "from", "fed", "'unknown' %"):
        features.add_column(col)
    for f in report.features:
        features.add_row(f.feature, f.kind, f.source, "yes" if f.mapped else "no (neutral value)",
                         "" if f.unknown_pct is None else f"{f.unknown_pct:.1f}")
    gate = Table(title=f"gate ({report.gate.source})", show_header=False)
    for finding in report.findings or ["passes: no finding"]:
        gate.add_row(finding)
    return Group(head, reasons, fields, features, gate)
