"""Who launched a run, when it started and ended, and what the coordinator's audit log
recorded about it: the part of a compliance report the officer signs for accountability.

Read from the coordinator's hash-chained audit log (`fedcrm.coordinator.auditlog`: a
deployed federation's coordinator folder, or beside a simulated federation's config),
verified before it is believed; a log that does not verify is reported as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fedcrm.coordinator.auditlog import AuditEntry, AuditLog

LAUNCHES = ("run-launched", "run-resume-launched")


class AuditEvent(BaseModel):
    time: str
    actor: str
    action: str
    summary: str = ""


class Provenance(BaseModel):
    audit_log: str | None = Field(None, description="the audit log read (None: the run names none)")
    verified: bool | None = None
    problem: str = ""
    launched_by: str | None = None
    launched_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    end_status: str | None = None
    events: list[AuditEvent] = Field(default_factory=list)


def _summary(action: str, d: dict[str, Any]) -> str:
    if action == "round-completed":
        failed = "; ".join(f"{f.get('partner') or '?'} {f.get('kind', '')}: {f.get('reason', '')}"
                           for f in d.get("failures") or [])
        auc = f", AUC {d['auc']:.3f}" if isinstance(d.get("auc"), float) else ""
        return (f"round {d.get('round')}: {', '.join(d.get('participants') or []) or 'nobody'} trained{auc}"
                + (f"; refused or failed: {failed}" if failed else ""))
    if action == "local-baselines":
        failed = "; ".join(f"{f.get('partner') or '?'}: {f.get('reason', '')}" for f in d.get("failures") or [])
        return (f"local-only baselines: {', '.join(d.get('participants') or []) or 'nobody'}"
                + (f"; refused or failed: {failed}" if failed else ""))
    if action in LAUNCHES:
        config = d.get("config") or {}
        return ", ".join(f"{k} {v}" for k, v in config.items()) if config else ""
    if action in ("run-started", "run-resumed"):
        return f"{d.get('rounds')} rounds, task {d.get('task')}, target ε {d.get('target_epsilon')}"
    if action == "run-finished":
        return f"{d.get('status')} after {d.get('rounds_completed')} rounds"
    return ", ".join(f"{k} {v}" for k, v in d.items() if not isinstance(v, (dict, list)))


def _belongs(entry: AuditEntry, job_id: str, flower_runs: set[str]) -> bool:
    return (entry.run_id == job_id or entry.run_id in flower_runs or str(entry.details.get("job_id")) == job_id)


def provenance(audit_log: str | Path | None, job_id: str, flower_runs: list[str]) -> Provenance:
    """The audit log's entries for the run (its job id, or any Flower run of it)."""
    if not audit_log or not Path(audit_log).is_file():
        return Provenance(audit_log=str(audit_log) if audit_log else None)
    log = AuditLog(Path(audit_log))
    status = log.verify()
    out = Provenance(audit_log=str(audit_log), verified=status.ok, problem=status.problem)
    if not status.ok:
        return out
    runs = set(map(str, flower_runs))
    for e in (e for e in log.entries() if _belongs(e, job_id, runs)):
        out.events.append(AuditEvent(time=e.time, actor=e.actor, action=e.action, summary=_summary(e.action, e.details)))
        if e.action in LAUNCHES and out.launched_by is None:
            out.launched_by, out.launched_at = e.actor, e.time
        elif e.action in ("run-started", "run-resumed") and out.started_at is None:
            out.started_at = e.time
        elif e.action == "run-finished":
            out.ended_at, out.end_status = e.time, str(e.details.get("status"))
    return out
