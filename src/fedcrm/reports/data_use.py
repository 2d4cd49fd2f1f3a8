"""What a run did with the partners' data, for the compliance report: every contract field
with its data grade and what it became (dropped, pseudonymised, generalised, a model
feature), each partner's data quality and k-anonymity, and how customers were
pseudonymised and where the key is kept.

The field table needs only the consortium's contract and the published model's feature
names. Quality, k-anonymity and key custody read the partner's own export and key file, so
they appear only where the report is built beside the partner's data: a simulation, or a
partner's officer running the report on its node. Nothing here leaves a node.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pydantic import BaseModel, Field

from fedcrm.config import PartnerConfig
from fedcrm.contract.model import Contract, FieldSpec, Generalise, Grade

PSEUDONYMISATION = ("keyed HMAC-SHA256 of the customer id with the partner's own 256-bit key; the pseudonym "
                    "never leaves the node (it keys the ledger's hold-out split and the score files)")


class FieldUse(BaseModel):
    table: str
    field: str
    kind: str
    grade: str
    use: str = Field(description="what the pipeline does with it, in words")
    features: list[str] = Field(default_factory=list, description="the model's columns it feeds")


class PartnerData(BaseModel):
    """A partner's export as its node cleaned it for this report (counts only)."""

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    duplicates: int
    quarantined_by_reason: dict[str, int] = Field(default_factory=dict)
    quasi_identifiers: list[str] = Field(default_factory=list)
    k: int | None = None
    k_threshold: int
    rows_below_k: int = 0
    findings: list[str] = Field(default_factory=list, description="what `partner check` flags")
    problem: str = ""

    @property
    def k_ok(self) -> bool | None:
        return None if self.k is None else self.k >= self.k_threshold


class KeyCustody(BaseModel):
    method: str = PSEUDONYMISATION
    key_file_private: bool | None = Field(None, description="the key file is readable by its owner only (0600)")
    key_present: bool | None = None
    dropped: list[str] = Field(default_factory=list, description="direct identifiers dropped before anything else")


def _model_columns(feature: str, columns: list[str]) -> list[str]:
    return [c for c in columns if c == feature or c.startswith(f"{feature}=")]


def _use(f: FieldSpec, task_label: str | None, columns: list[str], feature: str | None) -> str:
    if f.key:
        return "pseudonymised (keyed HMAC), then dropped" if f.grade is Grade.CORE_SENSITIVE else "key"
    if f.grade is Grade.CORE_SENSITIVE:
        return "dropped at pseudonymisation (direct identifier)"
    if f.role == "label":
        return "label of this run's task" if f.name == task_label else "label of another task (not used)"
    if f.generalise is Generalise.DROP:
        return "dropped"
    if feature is None:
        return "not a model input"
    used = bool(_model_columns(feature, columns)) if columns else True
    how = f"generalised ({f.generalise.value}) into {feature}" if f.generalise else f"feature {feature}"
    return how if used else f"{how}, not in the published model"


def field_uses(contract: Contract, task: str, columns: list[str]) -> list[FieldUse]:
    """Every customers field and every derived event feature, with its grade and use;
    `columns` are the published model's feature names (empty: no model yet)."""
    try:
        label = contract.task(task).label.field
    except Exception:  # noqa: BLE001 - a run of a task the contract renamed: no label marked
        label = None
    by_source = {s: feat.name for feat in contract.features() for s in feat.sources}
    out = []
    for f in contract.fields:
        feature = by_source.get(f.name)
        out.append(FieldUse(table="customers", field=f.name, kind=f.kind.value, grade=f.grade.value,
                            use=_use(f, label, columns, feature),
                            features=_model_columns(feature, columns) if feature else []))
    for table in ("transactions", "interactions"):
        events = getattr(contract, table)
        if events is None:
            continue
        derived = [d.name for d in events.derived(table)]
        for f in events.fields:
            use = ("linked by pseudonym, then dropped" if f.grade is Grade.CORE_SENSITIVE and f.key
                   else "dropped at pseudonymisation (direct identifier)" if f.grade is Grade.CORE_SENSITIVE
                   else f"read on the node to derive {', '.join(derived)} per customer" if derived else "not used")
            out.append(FieldUse(table=table, field=f.name, kind=f.kind.value, grade=f.grade.value, use=use,
                                features=[c for d in derived for c in _model_columns(d, columns)]))
    return out


def partner_data(cfg: PartnerConfig, task: str) -> PartnerData:
    """Clean the partner's export again (nothing written) for its counts and k-anonymity."""
    from fedcrm.data.quality import check_partner

    try:
        q = check_partner(cfg, task)
    except Exception as exc:  # noqa: BLE001 - the report still stands without this section
        return PartnerData(rows_in=0, rows_clean=0, rows_quarantined=0, duplicates=0, k_threshold=0,
                           problem=f"{type(exc).__name__}: {exc}")
    c, k = q.cleaning, q.k_anonymity
    return PartnerData(rows_in=c.rows_in, rows_clean=c.rows_clean, rows_quarantined=c.rows_quarantined,
                       duplicates=c.duplicates, quarantined_by_reason=c.quarantined_by_reason,
                       quasi_identifiers=k.quasi_identifiers, k=k.k, k_threshold=k.k_threshold,
                       rows_below_k=k.rows_below_threshold, findings=q.findings)


def key_custody(cfg: PartnerConfig, contract: Contract) -> KeyCustody:
    key = Path(cfg.secret_file)
    if not key.is_file():
        return KeyCustody(key_present=False, dropped=contract.identifiers())
    mode = stat.S_IMODE(os.stat(key).st_mode)
    return KeyCustody(key_present=True, key_file_private=mode & 0o077 == 0, dropped=contract.identifiers())
