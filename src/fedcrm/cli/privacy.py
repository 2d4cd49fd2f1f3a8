"""`fedcrm privacy`: plan a run's budget, verify the ledgers, audit a published model; on
the coordinator, show the ledger receipts and acknowledge a flagged rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedcrm.cli.common import ConfigOpt, FederationOpt, Task, console, typer_app
from fedcrm.cli.plan_options import Model, plan_from, plan_option
from fedcrm.errors import ConfigError

if TYPE_CHECKING:
    from fedcrm.config import PartnerConfig

app = typer_app("Privacy budget: plan, verify the ledger, audit a model, ledger receipts.")
FedDirOpt = Annotated[Path | None, typer.Option("--dir", help="the federation directory (deployed federation)")]


def _partners(config: Path | None, federation: Path | None) -> list[PartnerConfig]:
    from fedcrm.config import FederationConfig, PartnerConfig

    if (config is None) == (federation is None):
        raise ConfigError("give exactly one of --config (one partner) or --federation (every member)")
    if config is not None:
        return [PartnerConfig.load(config)]
    members = FederationConfig.load(federation).members
    missing = [m.name for m in members if m.config is None]
    if missing:
        raise ConfigError(f"federation {federation}: no partner config for {', '.join(missing)}")
    return [PartnerConfig.load(m.config) for m in members]


@app.command("plan")
def privacy_plan(
    ctx: typer.Context, config: ConfigOpt = None, federation: FederationOpt = None,
    rounds: int = plan_option("rounds"), epsilon: float = plan_option("epsilon"), task: Task = plan_option("task"),
    local_epochs: int = plan_option("local_epochs"), batch_size: int = plan_option("batch_size"),
    max_grad_norm: float = plan_option("max_grad_norm"), evaluate_every: int = plan_option("evaluate_every"),
    model: Model = plan_option("model"), trees_per_round: int = plan_option("trees_per_round"),
    depth: int = plan_option("depth"), local_baseline: bool = plan_option("local_baseline"),
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the plans as JSON")] = None,
) -> None:
    """Before a run: the noise each partner will use and its ε after every round, against its cap."""
    from fedcrm.node.partner import PartnerNode
    from fedcrm.reports.tables import plan_table

    plan = plan_from(ctx)
    plans = [PartnerNode(cfg, plan).plan_run() for cfg in _partners(config, federation)]
    console.print(plan_table(plans))
    for p in plans:
        if p.first_refused_round is not None:
            console.print(f"[yellow]{p.partner}: round {p.first_refused_round} would pass its cap of "
                          f"{p.epsilon_cap:g}; its node will refuse from that round on[/yellow]")
        elif p.baseline_within_cap is False:
            console.print(f"[yellow]{p.partner}: the local-only baseline would pass its cap of {p.epsilon_cap:g}; "
                          "its node will refuse it (the run itself fits)[/yellow]")
    if json_out:
        json_out.write_text(json.dumps([p.model_dump() for p in plans], indent=2))


@app.command("verify")
def privacy_verify(config: ConfigOpt = None, federation: FederationOpt = None) -> None:
    """Check each partner's ledger chain and anchor; exit 1 if any does not verify."""
    from fedcrm.privacy.ledger import Ledger

    bad = 0
    for cfg in _partners(config, federation):
        status = Ledger.of(cfg).verify()
        if status.ok:
            console.print(f"{cfg.name}: ledger OK, {status.entries} entries, head {status.head_hash[:16]}…")
        else:
            bad += 1
            console.print(f"[red]{cfg.name}: ledger {status.path} does NOT verify: {status.problem}[/red]")
    raise typer.Exit(1 if bad else 0)


@app.command("history")
def privacy_history(
    config: ConfigOpt = None, federation: FederationOpt = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write every charge and run as JSON")] = None,
) -> None:
    """Each partner's ε over all its runs, from its ledger: when each run charged, how many
    releases of each kind, and how far each moved the cumulative ε toward the cap."""
    from fedcrm.privacy.history import spend_history
    from fedcrm.privacy.ledger import Ledger
    from fedcrm.reports.tables import history_table

    histories = []
    for cfg in _partners(config, federation):
        ledger = Ledger.of(cfg)
        status = ledger.verify()
        if not status.ok:
            raise ConfigError(f"{cfg.name}: its ledger does not verify ({status.problem}); "
                              "`fedcrm privacy verify` says more")
        histories.append(spend_history(cfg.name, ledger.entries()))
    console.print(history_table(histories))
    if json_out:
        json_out.write_text(json.dumps([h.model_dump() for h in histories], indent=2))


@app.command("audit")
def privacy_audit(
    run_dir: Annotated[Path, typer.Argument(help="the run directory holding the published model")],
    config: ConfigOpt = None, federation: FederationOpt = None,
    out: Annotated[Path | None, typer.Option(help="folder for <partner>.json (default: the partner's work/audits)")] = None,
    seed: int = 0,
) -> None:
    """Membership-inference audit of a run's global model on each partner's own rows."""
    from fedcrm.node.partner import PartnerNode
    from fedcrm.privatefiles import private_dir, private_write_text
    from fedcrm.reports.tables import audit_table
    from fedcrm.rundir import RunDir

    run = RunDir(run_dir)
    results = []
    for cfg in _partners(config, federation):
        result = PartnerNode(cfg, run.plan).audit(run, seed=seed)
        folder = out or cfg.work_dir / "audits"
        private_dir(folder, tighten=out is None)  # the node's audits folder is 0700; an --out folder keeps its mode
        private_write_text(folder / f"{cfg.name}-run-{run.run_id}.json", result.model_dump_json(indent=2))
        results.append(result)
    console.print(audit_table(results))


def _receipt_book(dir: Path | None, federation: Path | None) -> tuple[Path, object]:
    """The federation's receipts file and its audit log (None for a simulated federation)."""
    from fedcrm.coordinator.receipts import ReceiptBook, receipts_path, simulated_receipts
    from fedcrm.ops.deployment import FederationLayout

    if (dir is None) == (federation is None):
        raise ConfigError("give exactly one of --dir (a deployed federation) or --federation (a simulated one)")
    if dir is not None:
        layout = FederationLayout(dir)
        layout.config()  # refuses a folder that is not a federation
        return ReceiptBook(receipts_path(layout.audit.path, None)), layout.audit
    return ReceiptBook(simulated_receipts(federation.resolve())), None


@app.command("receipts")
def privacy_receipts(dir: FedDirOpt = None, federation: FederationOpt = None) -> None:
    """Coordinator: the last ledger head seen from each partner, and every rollback flag."""
    from rich.table import Table

    book, _ = _receipt_book(dir, federation)
    table = Table(title=f"ledger receipts ({book.path})")
    for col in ("partner", "entries", "head", "run", "round", "status"):
        table.add_column(col)
    for name, rec in sorted(book.read().partners.items()):
        last, flag = rec.last, rec.open_flag()
        acks = [f for f in rec.flags if f.acknowledged]
        status = (f"[red]REFUSED: rollback flagged {flag.time}: {flag.reason}[/red]" if flag else
                  f"ok ({len(acks)} rollback(s) acknowledged)" if acks else "ok")
        table.add_row(name, *(("–",) * 4 if last is None else (str(last.entries), last.head, last.run_id,
                                                                str(last.round))), status)
    console.print(table)


@app.command("ack-ledger")
def privacy_ack_ledger(
    partner: Annotated[str, typer.Argument(help="the partner whose ledger rollback is acknowledged")],
    reason: Annotated[str, typer.Option(help="what happened to the ledger and who decided to go on")],
    dir: FedDirOpt = None, federation: FederationOpt = None,
) -> None:
    """Coordinator: accept a partner's ledger as it now is after a flagged rollback.

    The receipt becomes the head its node last reported (the lost spend is not restored:
    that is what the acknowledgement accepts) and the coordinator serves the partner again.
    Written to the federation's audit log and its receipts file."""
    from fedcrm.coordinator.auditlog import admin

    book, audit = _receipt_book(dir, federation)
    by = admin()
    flag = book.acknowledge(partner, reason, by)
    base = flag.acknowledged.baseline if flag.acknowledged else None
    if audit is not None:
        audit.record("ledger-rollback-acknowledged", actor=by, run_id=flag.run_id, partner=partner, reason=reason,
                     flagged_at=flag.time, flag=flag.reason, baseline=base.model_dump() if base else None)
    console.print(f"{partner}: rollback of {flag.time} acknowledged by {by}; receipt now "
                  + (f"{base.entries} entries, head {base.head}" if base else "none (the next reply sets it)"))
