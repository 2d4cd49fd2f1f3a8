"""The data-quality report a partner's data team reads before joining a run."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from rich.console import Group
from rich.table import Table

from fedcrm.data.anonymity import KAnonymityReport, generalised_quasi_identifiers, k_anonymity
from fedcrm.data.clean import CleaningReport
from fedcrm.config import PartnerConfig
from fedcrm.data.prepare import as_of_date, label_field, load_and_clean, load_events


class QualityReport(BaseModel):
    partner: str
    file: Path
    task: str | None
    label_rate: float | None
    cleaning: CleaningReport
    transactions: CleaningReport | None = None
    interactions: CleaningReport | None = None
    k_anonymity: KAnonymityReport


def check_partner(cfg: PartnerConfig, task: str | None = None, k_threshold: int | None = None) -> QualityReport:
    """Validate and clean without writing anything; MappingError when the mapping cannot apply."""
    keys = ["customer_id"] + ([label_field(cfg, task)] if task else [])
    keys = [k for k in keys if k in cfg.customers.columns]  # a purchases-derived label is not a column
    _, cleaned = load_and_clean(cfg, key_fields=keys)
    qi = generalised_quasi_identifiers(cleaned.clean, as_of_date(cfg), cfg.generalisation)
    tx, ix = (load_events(events, cfg.name, cfg.cleaning, as_of_date(cfg))[1].report if events else None
              for events in (cfg.transactions, cfg.interactions))
    label = keys[1] if len(keys) > 1 else None  # None: derived from purchases when prepared
    rate = float(cleaned.clean[label].mean()) if label and len(cleaned.clean) else None
    return QualityReport(partner=cfg.name, file=cfg.customers.path, task=task, label_rate=rate,
                         cleaning=cleaned.report, transactions=tx, interactions=ix, k_anonymity=k_anonymity(qi, k_threshold or cfg.generalisation.k_threshold))


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
    reasons = Table(title="quarantined by reason")
    reasons.add_column("reason")
    reasons.add_column("rows", justify="right")
    for reason, n in c.quarantined_by_reason.items():
        reasons.add_row(reason, str(n))
    for label, t in (("purchases", report.transactions), ("interactions", report.interactions)):
        for reason, n in (t.quarantined_by_reason.items() if t else []):
            reasons.add_row(f"{label}: {reason}", str(n))
    fields = Table(title="completeness per canonical field")
    for col in ("field", "complete %", "unreadable", "filled"):
        fields.add_column(col, justify="right" if col != "field" else "left")
    for name, pct in c.completeness_pct.items():
        fields.add_row(name, f"{pct:.1f}", str(c.unreadable_by_field.get(name, 0)), str(c.filled_by_field.get(name, 0)))
    return Group(head, reasons, fields)
