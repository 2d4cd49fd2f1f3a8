"""What the command modules share: the console, the Typer app factory, option types, the
run options derived from `TrainPlan`, and printing a run's rounds as they land.

Only light imports here: `fedcrm --help` must not pull in torch, Opacus or the reports.
"""

from __future__ import annotations

import sys
import time
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args

import typer
from click.core import ParameterSource
from pydantic import ValidationError
from rich.console import Console

from fedcrm.config.plan import TrainPlan
from fedcrm.errors import ConfigError

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


# ------------------------------------------------------------ options that set TrainPlan fields
# A run option's default and help come from TrainPlan; only the options a user typed are
# passed on (the rest are TrainPlan's defaults anyway, also in the generated Flower app).

PLAN_PARAMS = {  # CLI parameter -> TrainPlan field
    "rounds": "num_server_rounds", "epsilon": "dp_target_epsilon", "delta": "dp_delta", "dp": "dp_enabled",
    "max_grad_norm": "dp_max_grad_norm", "task": "task", "model": "model", "local_epochs": "local_epochs",
    "batch_size": "batch_size", "learning_rate": "learning_rate", "min_partners": "min_partners",
    "round_timeout": "round_timeout", "evaluate_every": "evaluate_every",
    "trees_per_round": "gbdt_trees_per_round", "depth": "gbdt_depth", "local_baseline": "local_baseline",
    "pull_interval": "pull_interval",
}


def choices(field: str) -> type[StrEnum]:
    """A TrainPlan Literal field as an Enum, so that Typer checks and lists the choices."""
    values = get_args(TrainPlan.model_fields[field].annotation)
    return StrEnum(field.title().replace("_", ""), {v: v for v in values})


Task = str  # a task of the consortium's contract (the node checks it against its own copy)
Model = choices("model")
_CHOICES = {"model": Model}


def plan_option(param: str) -> Any:
    """`typer.Option` for a TrainPlan field: its default and description, typed choices."""
    field = PLAN_PARAMS[param]
    info = TrainPlan.model_fields[field]
    flag = "--" + param.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if info.annotation is bool else [flag]
    default = _CHOICES[field](info.default) if field in _CHOICES else info.default
    return typer.Option(default, *decls, help=info.description)


def plan_from(ctx: typer.Context) -> TrainPlan:
    """The TrainPlan of this command's run options, with only the ones the user gave set;
    a value TrainPlan refuses is a usage error (exit 2) naming the option."""
    given = {name: value for name, value in ctx.params.items()
             if name in PLAN_PARAMS and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)}
    try:
        plan = TrainPlan(**{PLAN_PARAMS[k]: v.value if isinstance(v, Enum) else v for k, v in given.items()})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]).replace("-", "_") if error["loc"] else ""
        param = next((p for p in ctx.command.params if PLAN_PARAMS.get(p.name or "") == field), None)
        raise typer.BadParameter(f"{error['input']!r}: {error['msg']}", ctx=ctx, param=param) from None
    federation = ctx.params.get("federation")  # the task must be one of the federation contract's
    if isinstance(federation, str | Path) and Path(federation).is_file():
        from fedcrm.config import FederationConfig
        from fedcrm.contract.tables import load_contract

        try:
            contract = load_contract(FederationConfig.load(Path(federation)).contract)
            contract.task(plan.task)
        except ConfigError as exc:
            param = next((p for p in ctx.command.params if p.name == "task"), None)
            raise typer.BadParameter(f"{plan.task!r}: {exc}", ctx=ctx, param=param) from None
    return plan


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


def warn_short_run(plan: TrainPlan) -> None:
    warning = plan.short_run_warning()
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)


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
