"""`fedcrm privacy`: plan a run's budget, verify the ledgers, audit a published model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedcrm.cli.common import ConfigOpt, FederationOpt, Task, console, plan_from, plan_option, typer_app
from fedcrm.errors import ConfigError

if TYPE_CHECKING:
    from fedcrm.config import PartnerConfig

app = typer_app("Privacy budget: plan, verify the ledger, audit a model.")


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
    max_grad_norm: float = plan_option("max_grad_norm"),
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
    if json_out:
        json_out.write_text(json.dumps([p.model_dump() for p in plans], indent=2))


@app.command("verify")
def privacy_verify(config: ConfigOpt = None, federation: FederationOpt = None) -> None:
    """Check each partner's ledger chain and anchor; exit 1 if any does not verify."""
    from fedcrm.privacy.ledger import Ledger

    bad = 0
    for cfg in _partners(config, federation):
        status = Ledger(cfg.work_dir).verify()
        if status.ok:
            console.print(f"{cfg.name}: ledger OK, {status.entries} entries, head {status.head_hash[:16]}…")
        else:
            bad += 1
            console.print(f"[red]{cfg.name}: ledger {status.path} does NOT verify: {status.problem}[/red]")
    raise typer.Exit(1 if bad else 0)


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
