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

For sign-off it also carries who launched the run and when (the coordinator's audit log,
`fedcrm.reports.provenance`), each partner's ε over all its runs (`fedcrm.privacy.history`),
the contract's fields with their grades, data quality, k-anonymity and key custody
(`fedcrm.reports.data_use`, on the node's side only), a verdict on each audit, and is
printed to PDF with SHA-256 fingerprints (`fedcrm.reports.document`).
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel, Field, computed_field

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.contract.model import Contract
from fedcrm.coordinator.receipts import LedgerReceipt, RollbackFlag
from fedcrm.privacy.history import SpendHistory, spend_history
from fedcrm.privacy.ledger import Ledger, LedgerEntry
from fedcrm.privacy.membership import AuditResult
from fedcrm.privacy.parallel import region_epsilons
from fedcrm.protocol import ERROR_BUDGET, ERROR_POLICY, EvaluateReply, RunId
from fedcrm.reports.document import ReportFiles, print_pdf, sha256_of
from fedcrm.reports.data_use import FieldUse, KeyCustody, PartnerData, field_uses, key_custody, partner_data
from fedcrm.reports.provenance import Provenance, provenance
from fedcrm.rundir import AUDITS, MODEL_META, RoundRecord, RunDir

AMBER, RED = 0.8, 0.95  # share of a partner's cap at which the report warns, then alarms


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
    absent_rounds: list[int] = Field(default_factory=list, description="rounds it did not train in")
    statistics: str = Field("", description="how its statistics release went out: noised and charged, or not")
    statistics_dp: bool | None = None
    history: SpendHistory | None = Field(None, description="its ε over all runs (from its ledger, where readable)")
    data: PartnerData | None = None
    custody: KeyCustody | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cap_used(self) -> float | None:
        if not self.epsilon_cap or self.epsilon_cumulative is None:
            return None
        return self.epsilon_cumulative / self.epsilon_cap

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cap_level(self) -> str:
        used = self.cap_used
        return "" if used is None else "red" if used >= RED else "amber" if used >= AMBER else "ok"


class Inventory(BaseModel):
    """What the coordinator received, shared by every partner listed (one list, not one each)."""

    partners: list[str]
    records: dict[str, list[str]]


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
    provenance: Provenance = Field(default_factory=Provenance)
    fields: list[FieldUse] = Field(default_factory=list, description="every contract field: grade and use")
    inventories: list[Inventory] = Field(default_factory=list)
    statistics_noise: float | None = Field(None, description="σ the run asked for on the statistics (None: not asked)")
    plain_language: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def refused(self) -> list[str]:
        return [p.partner for p in self.partners if p.refusals]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dropped(self) -> list[str]:
        return [p.partner for p in self.partners if p.absent_rounds and not p.refusals]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def badge(self) -> str:
        """The run's outcome in one line, its partners' part in it included."""
        head = self.status.split(":")[0]
        parts = [f"{len(self.refused)} partner{'s' if len(self.refused) > 1 else ''} refused"] if self.refused else []
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped out")
        return ", ".join([head, *parts])

    @computed_field  # type: ignore[prop-decorator]
    @property
    def badge_level(self) -> str:
        head = self.status.split(":")[0]
        return head if head != "completed" or not (self.refused or self.dropped) else "partial"


PLAIN_LANGUAGE = [
    "ε (epsilon) measures how much the published results can depend on any one customer. At ε = 1, anything an "
    "outsider could conclude about a customer from the results is at most e¹ ≈ 2.7 times more likely than if "
    "that customer's record had not been used; at ε = 3, e³ ≈ 20 times; smaller is more private. Each partner's "
    "ε adds up over every run on the same customers, which is why the cap is on the cumulative figure.",
    "δ (delta) is the small probability that the ε statement does not hold. It is set well below one in the "
    "number of customers, so that it cannot stand for exposing even one customer outright.",
    "The guarantee covers every release computed from a partner's records: model updates, statistics and "
    "evaluations. Raw records, identifiers and pseudonyms never leave the partner's systems.",
]

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


def _verify_locally(check: LedgerCheck, cfg: PartnerConfig, run_id: str) -> list[LedgerEntry]:
    """The ledger verified here; its entries when it verifies (none otherwise)."""
    ledger = Ledger.at(cfg.privacy_dir)  # read only: a report moves nothing
    status = ledger.verify()
    check.verified_here, check.ok, check.problem, check.entries = True, status.ok, status.problem, status.entries
    entries: list[LedgerEntry] = []
    if status.ok:
        entries = ledger.entries()
        check.run_entries = sum(e.run_id == run_id for e in entries)
        check.run_releases = dict(Counter(e.kind for e in entries if e.run_id == run_id))
        spends = [(e.history_entry, e.scope) for e in entries]
        check.epsilon_by_side = {region.label: eps for region, eps in
                                 region_epsilons(spends, cfg.privacy.delta, cfg.privacy.accountant)} if spends else {}
        check.head_matches = check.reported_head is None or any(e.hash[:13] == check.reported_head for e in entries)
    return entries


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
            # the round's evaluation, then (last round) the local-only baseline's: both hold-out releases
            replies = [_stated(part.evaluate), _stated(part.baseline)]
            for evaluated in replies:
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
            # the round's evaluation (and baseline) came after its training (if any): their ε is the partner's latest
            for evaluated in replies:
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
        for name in rnd.absent:
            partner(name).absent_rounds.append(rnd.round)


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
            entries = _verify_locally(p.ledger, configs[name], run.run_id)
            _on_the_node(p, configs[name], plan, str(run.run_id), entries)
        if plan.federated_stats:
            _statistics(p, plan, configs.get(name))
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
    contract = _contract(fed_file, configs)
    meta = run.model_meta() if run.has(MODEL_META) else None
    return ComplianceReport(
        run_id=run.run_id, status=summary.status, generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task=plan.task, model=plan.model, rounds_planned=plan.num_server_rounds,
        rounds_completed=summary.rounds_completed, record_level_dp=plan.dp_enabled,
        target_run_epsilon=plan.dp_target_epsilon, client_level=client, final_global=summary.final_global,
        partners=list(partners.values()), receipts_book=receipts.book if receipts else None, notes=NOTES,
        provenance=provenance(plan.audit_log, run.run_id, [str(r) for r in summary.flower_runs]),
        fields=field_uses(contract, plan.task, meta.features if meta else []) if contract else [],
        inventories=_inventories(partners), plain_language=PLAIN_LANGUAGE,
        statistics_noise=plan.stats_noise_multiplier if plan.federated_stats else None)


def _contract(federation: Path | None, configs: dict[str, PartnerConfig]) -> Contract | None:
    """The consortium's contract: the federation's, else the partners' (a simulation)."""
    if federation is not None and federation.is_file():
        fed = FederationConfig.load(federation)
        if fed.contract is not None and fed.contract.is_file():
            return Contract.load(fed.contract)
    return next((cfg.contract_model for cfg in configs.values()), None)


def _on_the_node(p: PartnerCompliance, cfg: PartnerConfig, plan: TrainPlan, run_id: str,
                 entries: list[LedgerEntry]) -> None:
    """What only the partner's own machine can tell: its whole ledger history (`entries`, as
    `_verify_locally` read and verified them), its data's quality and k-anonymity, its key's
    custody."""
    if p.ledger.ok:
        p.history = spend_history(cfg.name, entries)
        if p.epsilon_cumulative is None:  # it sent no DP reply this run (it refused): its ledger still says
            this = next((r for r in p.history.runs if r.run_id == run_id), None)
            p.epsilon_cumulative, p.epsilon_run = p.history.epsilon, this.rise if this else 0.0
            p.epsilon_cap = cfg.privacy.epsilon_cap
            p.epsilon_remaining = max(cfg.privacy.epsilon_cap - p.history.epsilon, 0.0)
    p.data = partner_data(cfg, plan.task)
    p.custody = key_custody(cfg, cfg.contract_model)


def _statistics(p: PartnerCompliance, plan: TrainPlan, cfg: PartnerConfig | None) -> None:
    """How the partner's feature statistics went out: noised with the larger of the run's σ
    and its floor and charged, reused from an earlier charged release, or un-noised."""
    floor = cfg.privacy.min_stats_noise_multiplier if cfg is not None else None
    sigma = max(plan.stats_noise_multiplier, floor) if floor is not None else None
    charged = p.ledger.run_releases.get("statistics", 0) if p.ledger.verified_here else None
    if any(f.round == 0 and f.kind == "query" for f in p.refusals):
        p.statistics, p.statistics_dp = "refused: nothing sent", True
    elif charged:
        p.statistics, p.statistics_dp = f"noised (σ {sigma:g}) and charged to its ledger", True
    elif sigma is not None and sigma <= 0:
        p.statistics, p.statistics_dp = "sent UN-NOISED (σ 0): not DP and not charged", False
    elif charged == 0:
        p.statistics, p.statistics_dp = "an earlier noised, charged release sent again (no new charge)", True
    else:
        p.statistics = (f"noised with σ ≥ {plan.stats_noise_multiplier:g} by the node's policy (ledger not readable here)"
                        if plan.stats_noise_multiplier > 0 else "as the node's policy set (ledger not readable here)")


def _inventories(partners: dict[str, PartnerCompliance]) -> list[Inventory]:
    """The records received, one list per distinct inventory with every partner that sent it."""
    groups: dict[str, Inventory] = {}
    for name, p in partners.items():
        if not p.fields_sent:
            continue
        key = repr(sorted(p.fields_sent.items()))
        groups.setdefault(key, Inventory(partners=[], records=p.fields_sent)).partners.append(name)
    return list(groups.values())


def history_plot(report: ComplianceReport) -> str | None:
    """Cumulative ε over time per partner (its ledger), its cap dashed, this run shaded:
    a PNG, base64."""
    histories = [p for p in report.partners if p.history and p.history.points]
    if not histories:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fedcrm.reports.run_report import png

    fig, ax = plt.subplots(figsize=(8, 3.6))
    spans = []
    for i, p in enumerate(histories):
        colour = f"C{i}"
        times = [datetime.fromisoformat(pt.time) for pt in p.history.points]
        ax.step(times, [pt.epsilon_after for pt in p.history.points], where="post", color=colour, label=p.partner)
        if p.history.epsilon_cap:
            ax.axhline(p.history.epsilon_cap, color=colour, ls="--", lw=1)
        spans += [t for t, pt in zip(times, p.history.points) if pt.run_id == report.run_id]
    if spans:
        ax.axvspan(min(spans), max(spans), color="grey", alpha=0.12, label="this run")
    ax.set(ylabel="cumulative ε", title="ε over all runs (dashed: each partner's cap)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return png(fig)


def _when(stamp: str, same_day_as: str | None = None) -> str:
    """An ISO time to the minute, UTC; only the time when it falls on `same_day_as`'s day."""
    t = datetime.fromisoformat(stamp).astimezone(UTC)
    if same_day_as is not None and datetime.fromisoformat(same_day_as).astimezone(UTC).date() == t.date():
        return t.strftime("%H:%M")
    return t.strftime("%Y-%m-%d %H:%M")


def render_html(report: ComplianceReport, json_sha256: str | None = None) -> str:
    env = Environment(loader=PackageLoader("fedcrm.reports", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{v:.{d}f}"
    env.filters["when"] = _when
    return env.get_template("compliance.html").render(r=report, budget_code=ERROR_BUDGET, policy_code=ERROR_POLICY,
                                                      history_plot=history_plot(report), json_sha256=json_sha256)


def write_report(run_dir: Path, federation: Path | None = None, pdf: bool = False) -> ReportFiles:
    """compliance.json, compliance.html (showing the JSON's SHA-256), compliance.pdf when
    asked (headless Chromium), and compliance.sha256 over all of them (`sha256sum -c`)."""
    report = build_report(run_dir, federation)
    json_path, html_path = run_dir / "compliance.json", run_dir / "compliance.html"
    json_path.write_text(report.model_dump_json(indent=2))
    html_path.write_text(render_html(report, sha256_of(json_path)))
    pdf_path = print_pdf(html_path, run_dir / "compliance.pdf") if pdf else None
    files = [f for f in (json_path, html_path, pdf_path) if f is not None]
    sums = run_dir / "compliance.sha256"
    sums.write_text("".join(f"{sha256_of(f)}  {f.name}\n" for f in files))
    return ReportFiles(data=json_path, html=html_path, pdf=pdf_path, sha256=sums)
