"""What the command modules share: the console, the Typer app factory, option types, and
printing a run's rounds as they land (the run options derived from `TrainPlan` are in
`fedcrm.cli.plan_options`).

Only light imports here (no pydantic models): every command's `--help` loads this module.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console


if TYPE_CHECKING:
    from fedcrm.ops.deployment import FederationLayout

console = Console(width=None if sys.stdout.isatty() else 150)


def typer_app(help: str | None, **kwargs: Any) -> typer.Typer:
    """Every fedcrm app: help on no arguments, no completion install, and tracebacks
    without local variables (they would print keys and customer rows)."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                       **kwargs)


PartnerConfigOpt = Annotated[Path, typer.Option(help="the partner config (partner.toml)")]
ConfigOpt = Annotated[Path | None, typer.Option(help="one partner's config (run on its node)")]
FederationOpt = Annotated[Path | None, typer.Option(help="every member with a partner config (simulation)")]
DirOpt = Annotated[Path, typer.Option("--dir", help="the federation directory (from `federation init`)")]
Task = str  # a task of the consortium's contract (the node checks it against its own copy)


MlflowOpt = Annotated[bool, typer.Option("--mlflow", help="also log the run to MLflow (./mlruns unless --mlflow-uri; "
                                                          "needs the mlflow extra)")]
MlflowUriOpt = Annotated[str | None, typer.Option("--mlflow-uri", help="MLflow tracking URI to log the run to "
                                                                     "(implies --mlflow)")]


def track_if_asked(run_dir: Path, mlflow: bool, uri: str | None) -> None:
    """Log the finished run to MLflow when the user asked for it."""
    if not (mlflow or uri):
        return
    from fedcrm.ops.tracking import default_uri, track_run

    rid = track_run(run_dir, uri)
    console.print(f"MLflow: run {rid} in {uri or default_uri()} (experiment fedcrm)", highlight=False)


# ------------------------------------------------------------ rounds as they land


def _phase(run_dir: Path, rounds: int) -> str:
    """What a run is doing, from its run directory, for the status line."""
    from fedcrm.rundir import METRICS, STATE, RunDir

    run = RunDir.open(run_dir)
    if run is None:
        return "Flower is starting the ServerApp and the partners' nodes…"
    done = run.state().completed_rounds if run.has(STATE) else 0
    if done == 0 and not run.has(METRICS):
        return "the partners are preparing their data and answering the statistics query (round 0)…"
    return f"round {min(done + 1, rounds)} of {rounds}: the partners are training…" if done < rounds else "finishing…"


def run_simulation(federation: Path, out: Path, work: Path, run_config: dict[str, Any], cpus: int,
                   mlflow: bool = False, mlflow_uri: str | None = None) -> None:
    """A simulated run, its rounds printed as they land; exit 1 unless it completed, and
    128 + the signal's number when SIGINT or SIGTERM stopped it (its SuperLink stopped
    first). The run's Flower home is a fresh folder under `work`, printed once it is up."""
    from fedcrm.config import FederationConfig
    from fedcrm.config.plan import TrainPlan
    from fedcrm.ops.launcher import Interrupted, SimulationLink, simulate
    from fedcrm.reports.tables import baseline_table, format_row, new_failures, next_commands, read_rounds, round_table
    from fedcrm.rundir import RunDir
    from rich.markup import escape

    names = [m.name for m in FederationConfig.load(federation).members]
    shown: set[int] = set()
    refused: set[tuple[int, str, str]] = set()
    t0 = time.monotonic()

    rounds = int(run_config.get("num-server-rounds", TrainPlan().num_server_rounds))
    spinner = console.status("starting the SuperLink…")

    def progress(status: str) -> None:  # noqa: ARG001 (the launcher's on_poll hook)
        for line in new_failures(out, refused):
            console.print(f"[{time.monotonic() - t0:5.1f}s] [yellow]{escape(line)}[/yellow]", highlight=False)
        for row in read_rounds(out):
            if row.round not in shown:
                shown.add(row.round)
                console.print(f"[{time.monotonic() - t0:5.1f}s] {format_row(row, names)}")
        spinner.update(f"[{time.monotonic() - t0:5.1f}s] {_phase(out, rounds)}")

    def started(link: SimulationLink) -> None:
        console.print(f"SuperLink PID {link.process.pid if link.process else '?'} on 127.0.0.1:{link.port}; "
                      f"Flower home and logs in {link.home} (superlink.log)")
        spinner.update("Flower is starting the ServerApp and the partners' nodes…")

    console.print(f"federated run: {len(names)} partners ({', '.join(names)}), results in {out}")
    try:
        with spinner:  # a status line while nothing else prints (only on a terminal)
            result = simulate(federation, out, work, run_config, num_cpus_per_node=cpus, on_poll=progress,
                              on_start=started)
    except Interrupted as exc:
        console.print(f"[red]{exc}[/red]; what the run wrote is in {out}")
        raise typer.Exit(exc.exit_code) from None
    progress(result.status)
    console.print(round_table(read_rounds(out), names))
    if (baselines := baseline_table(out)) is not None:
        console.print(baselines)
    status = RunDir(out).summary().status
    console.print(f"run {result.run_id}: {status} in {result.seconds:.1f}s; "
                  f"model, metrics.json, epsilon.json and checkpoints in {out}")
    console.print("next:\n" + "\n".join(f"  {line}" for line in next_commands(out, federation)), highlight=False)
    track_if_asked(out, mlflow, mlflow_uri)
    if status != "completed":  # the partners' caps stopped it; their reasons are in summary.json
        raise typer.Exit(1)


def watch_deployed(layout: FederationLayout, run_id: int, mlflow: bool = False, mlflow_uri: str | None = None) -> None:
    """A deployed run round by round until it ends, then collected; exit 1 unless it completed."""
    from fedcrm.ops.runs import collect, run_dir_of, watch
    from fedcrm.reports.tables import RoundRow, baseline_table, format_row, new_failures, next_commands
    from rich.markup import escape
    from fedcrm.rundir import SUMMARY, RunDir

    names = list(layout.config().names().values())
    run_dir, refused = run_dir_of(layout, run_id), set()

    def on_round(row: RoundRow) -> None:
        for line in new_failures(run_dir, refused):
            console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
        console.print(format_row(row, names))

    status = watch(layout, run_id, on_round=on_round)
    for line in new_failures(run_dir, refused):
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
    out = collect(layout, run_id)
    run = RunDir.open(out)
    ended = run.summary().status if run is not None and run.has(SUMMARY) else "no summary"
    if run is not None and (baselines := baseline_table(out)) is not None:
        console.print(baselines)
    console.print(f"run {run_id}: {status}; {ended}; collected in {out}")
    console.print("next:\n" + "\n".join(f"  {line}" for line in next_commands(out, None)[1:]), highlight=False)
    track_if_asked(out, mlflow, mlflow_uri)
    if status != "finished:completed":
        raise typer.Exit(1)
