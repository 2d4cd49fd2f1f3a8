"""The compliance report of one run: per partner, what privacy it spent and what left it.

Built from the run directory alone — what the coordinator received: each partner's ε as
its own node computed it from its ledger, the ledger's integrity as the node reported it,
every refusal with its reason, and the inventory (names, shapes, types; never values) of
every record that arrived. Where the partners' configs are reachable (a simulation, or a
partner's officer running it on the node) each ledger is also verified directly and
matched to what the node reported. The coordinator's receipt of each ledger's head, every
rollback it flagged and every acknowledgement (`fedcrm.coordinator.receipts`, copied into
the run directory) are shown beside it. Membership audits (`fedcrm privacy audit`) placed
in `RUN_DIR/audits/` are included.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field

from fedcrm.privacy.membership import AuditResult
from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.coordinator.receipts import LedgerReceipt, RollbackFlag
from fedcrm.privacy.ledger import Ledger
from fedcrm.privacy.parallel import region_epsilons
from fedcrm.protocol import ERROR_BUDGET, ERROR_POLICY, EvaluateReply, RunId
from fedcrm.rundir import AUDITS, RoundRecord, RunDir


class LedgerCheck(BaseModel):
    reported_ok: bool | None = None
    reported_entries: int | None = None
    reported_head: str | None = None  # first 13 hex digits of the entry hash the node reported
    verified_here: bool = False
    ok: bool | None = None  # local verification result
    problem: str = ""
    entries: int | None = None
    run_entries: int | None = None
    run_releases: dict[str, int] = Field(default_factory=dict, description="this run's entries per release kind")
    epsilon_by_side: dict[str, float] = Field(
        default_factory=dict, description="ε of the customers on each side of the partner's hold-out split, "
        "over the whole ledger (the partner's ε is the largest)")
    head_matches: bool | None = None
    rollback_open: bool = False  # the coordinator flagged a rollback that is not yet acknowledged

    @property
    def status(self) -> str:
        if self.rollback_open:
            return "ROLLBACK flagged by the coordinator: refused until acknowledged"
        if self.verified_here:
            if not self.ok:
                return f"does not verify: {self.problem}"
            return "verified" if self.head_matches else "verified, but the reported head is not in the ledger"
        if self.reported_ok is None:
            return "not reported (no DP round)"
        return "reported intact by the node" if self.reported_ok else "reported NOT intact by the node"


class Refusal(BaseModel):
    round: int
    kind: str
    code: int
    reason: str


class PartnerCompliance(BaseModel):
    partner: str
    dp_enabled: bool
    rounds_participated: list[int] = Field(default_factory=list)
    refusals: list[Refusal] = Field(default_factory=list)
    epsilon_run: float | None = None
    epsilon_cumulative: float | None = None
    epsilon_rdp: float | None = None
    epsilon_cap: float | None = None
    epsilon_remaining: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    sample_rate: float | None = None
    steps: int = 0
    evaluations: int = Field(0, description="noised, charged evaluations this partner answered in the run")
    evaluation_noise: float | None = Field(None, description="σ on every count of its evaluation histograms")
    ledger: LedgerCheck = Field(default_factory=LedgerCheck)
    receipt: LedgerReceipt | None = Field(None, description="the coordinator's last receipt of the ledger's head")
    rollbacks: list[RollbackFlag] = Field(default_factory=list, description="flagged rollbacks, acknowledged or not")
    fields_sent: dict[str, list[str]] = Field(default_factory=dict)
    audit: AuditResult | None = None


class ComplianceReport(BaseModel):
    run_id: RunId
    status: str
    generated_at: str
    task: str
    model: str
    rounds_planned: int
    rounds_completed: int
    record_level_dp: bool
    target_run_epsilon: float
    client_level: dict[str, Any] | None
    final_global: dict[str, float]
    partners: list[PartnerCompliance]
    receipts_book: str | None = None
    notes: list[str]


NOTES = [
    "ε is cumulative over every DP release the partner ever made on its data (its ledger: DP-SGD rounds, noised "
    "statistics, noised evaluations), computed by the partner's node with Opacus' PRV accountant unless the partner "
    "chose RDP; RDP is shown beside it. Training and statistics read only the partner's training customers, "
    "evaluations only its hold-out customers (disjoint, by pseudonym): the partner's ε is the larger of the two sides.",
    "ε in this run is the rise of the cumulative ε over the run; composition is sub-additive, so it is less than "
    "the same run would cost on fresh data.",
    "Only model arrays and aggregate numeric metrics left the nodes; each node checked every reply against an "
    "allow-list and logged its inventory in its egress log. Evaluation replies are DP: 20-bin score histograms "
    "with Gaussian noise on every count, charged to the ledger; every metric in them is computed from the noised "
    "counts on the node.",
    "The coordinator keeps a receipt of every partner's ledger head (entries and hash) and checks each reply "
    "against it: a ledger with fewer entries, another head, or a first part that no longer hashes to the receipt "
    "was deleted, cut or rewritten; the coordinator then refuses the partner until its operator acknowledges it.",
    "The advantage bound (e^ε − 1 + 2δ)/(e^ε + 1) holds for any membership test against an (ε, δ)-DP release; "
    "the audit is one concrete attack, so it is expected to sit well below the bound.",
]


def _partner_configs(run: RunDir, federation: Path | None) -> dict[str, PartnerConfig]:
    source = federation or (Path(run.plan.federation_config) if run.plan.federation_config else None)
    if source is None or not source.is_file():
        return {}
    out = {}
    for m in FederationConfig.load(source).members:
        if m.config is not None and m.config.is_file():
            out[m.name] = PartnerConfig.load(m.config)
    return out


def _verify_locally(check: LedgerCheck, cfg: PartnerConfig, run_id: str) -> None:
    ledger = Ledger.at(cfg.privacy_dir)  # read only: a report moves nothing
    status = ledger.verify()
    check.verified_here, check.ok, check.problem, check.entries = True, status.ok, status.problem, status.entries
    if status.ok:
        entries = ledger.entries()
        check.run_entries = sum(e.run_id == run_id for e in entries)
        check.run_releases = dict(Counter(e.kind for e in entries if e.run_id == run_id))
        spends = [(e.history_entry, e.scope) for e in entries]
        check.epsilon_by_side = {region.label: eps for region, eps in
                                 region_epsilons(spends, cfg.privacy.delta, cfg.privacy.accountant)} if spends else {}
        check.head_matches = check.reported_head is None or any(e.hash[:13] == check.reported_head for e in entries)


EVALUATION_FIELDS = ("noise_multiplier", "epsilon", "ledger_entries", "ledger_head")


def _stated(scalars: dict[str, float]) -> dict[str, float]:
    """The privacy figures of an evaluate reply as recorded (scalars only, finite only)."""
    out = {}
    for field in EVALUATION_FIELDS:
        value = scalars.get(EvaluateReply.key(field))
        if value is not None and math.isfinite(value):
            out[field] = value
    return out


def _partner_rounds(report: dict[str, PartnerCompliance], rounds: list[RoundRecord], dp_enabled: bool) -> None:
    """What each partner's node stated round by round: its rounds, steps, ε, ledger head."""
    def partner(name: str) -> PartnerCompliance:
        return report.setdefault(name, PartnerCompliance(partner=name, dp_enabled=dp_enabled))

    before: dict[str, float] = {}  # each partner's ε before the run, from its first DP round
    for rnd in rounds:
        for name, part in rnd.partners.items():
            evaluated = _stated(part.evaluate)
            if evaluated.get("noise_multiplier"):
                p = partner(name)
                p.evaluations += 1
                p.evaluation_noise = evaluated["noise_multiplier"]
            train = part.trained()
            p = partner(name)
            if train is not None:
                p.rounds_participated.append(rnd.round)
                p.steps += train.local_steps
            if train is not None and train.epsilon is not None:
                p.epsilon_cumulative, p.epsilon_run, p.epsilon_rdp = train.epsilon, train.epsilon_run, train.epsilon_rdp
                p.epsilon_cap, p.epsilon_remaining, p.delta = train.epsilon_cap, train.epsilon_remaining, train.delta
                p.noise_multiplier, p.max_grad_norm = train.noise_multiplier, train.max_grad_norm
                p.sample_rate = train.sample_rate
                before.setdefault(name, train.epsilon - (train.epsilon_run or 0.0))
                p.ledger.reported_ok = bool(train.ledger_ok or 0)
                p.ledger.reported_entries = train.ledger_entries or 0
                p.ledger.reported_head = f"{train.ledger_head:013x}" if train.ledger_head is not None else None
            # the round's evaluation came after its training (if any): its ε is the partner's latest
            eps = evaluated.get("epsilon")
            if eps is not None and p.epsilon_cumulative is not None and eps >= p.epsilon_cumulative:
                p.epsilon_cumulative, p.epsilon_run = eps, eps - before.get(name, 0.0)
                if p.epsilon_cap is not None:
                    p.epsilon_remaining = max(p.epsilon_cap - eps, 0.0)
                if evaluated.get("ledger_entries") is not None:
                    p.ledger.reported_entries = int(evaluated["ledger_entries"])
                if evaluated.get("ledger_head") is not None:
                    p.ledger.reported_head = f"{int(evaluated['ledger_head']):013x}"
        for f in rnd.failures:
            partner(f.partner or f"node {f.node_id}").refusals.append(
                Refusal(round=rnd.round, kind=f.kind, code=f.code, reason=f.reason))


def build_report(run_dir: Path, federation: Path | None = None) -> ComplianceReport:
    run = RunDir(run_dir)
    plan, summary = run.plan, run.summary()
    fed_file = Path(plan.federation_config) if plan.federation_config else None
    names = list(FederationConfig.load(fed_file).names().values()) if fed_file and fed_file.is_file() else []
    partners = {n: PartnerCompliance(partner=n, dp_enabled=plan.dp_enabled) for n in names}
    _partner_rounds(partners, run.rounds(), plan.dp_enabled)
    received = run.received()
    for name, kinds in (received.partners if received else {}).items():
        p = partners.setdefault(name, PartnerCompliance(partner=name, dp_enabled=plan.dp_enabled))
        for kind, records in kinds.items():
            for record, fields in records.items():
                p.fields_sent[f"{kind} {record}"] = [f"{k}: {t}" for k, t in sorted(fields.items())]

    configs = _partner_configs(run, federation)
    for name, p in partners.items():
        if name in configs:
            _verify_locally(p.ledger, configs[name], run.run_id)
    receipts = run.ledger_receipts()
    for name, rec in (receipts.partners if receipts else {}).items():
        p = partners.setdefault(name, PartnerCompliance(partner=name, dp_enabled=plan.dp_enabled))
        p.receipt, p.rollbacks, p.ledger.rollback_open = rec.last, rec.flags, rec.open_flag() is not None
    audit_dir = run.path / AUDITS
    for file in sorted(audit_dir.glob("*.json")) if audit_dir.is_dir() else []:
        result = AuditResult.model_validate_json(file.read_text())
        if result.run_id == run.run_id and result.partner in partners:
            partners[result.partner].audit = result

    client = None
    if plan.client_dp:
        eps = run.epsilon()
        points = eps.client_level if eps else []
        client = {"noise_multiplier": plan.client_dp_noise_multiplier, "clipping_norm": plan.client_dp_clipping_norm,
                  "delta": plan.dp_delta, "epsilon": points[-1].epsilon if points else None, "rounds": len(points)}
    return ComplianceReport(
        run_id=run.run_id, status=summary.status, generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task=plan.task, model=plan.model, rounds_planned=plan.num_server_rounds,
        rounds_completed=summary.rounds_completed, record_level_dp=plan.dp_enabled,
        target_run_epsilon=plan.dp_target_epsilon, client_level=client, final_global=summary.final_global,
        partners=list(partners.values()), receipts_book=receipts.book if receipts else None, notes=NOTES)


def render_html(report: ComplianceReport) -> str:
    env = Environment(loader=PackageLoader("fedcrm.reports", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    return env.get_template("compliance.html").render(r=report, budget_code=ERROR_BUDGET, policy_code=ERROR_POLICY)


def write_report(run_dir: Path, federation: Path | None = None) -> tuple[Path, Path]:
    report = build_report(run_dir, federation)
    json_path, html_path = run_dir / "compliance.json", run_dir / "compliance.html"
    json_path.write_text(report.model_dump_json(indent=2))
    html_path.write_text(render_html(report))
    return json_path, html_path
