"""Simulated federations on this machine: `fedcrm run`, `fedcrm demo`, `fedcrm demo-data`,
and `fedcrm benchmark utility`."""

from __future__ import annotations

import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import MlflowOpt, MlflowUriOpt, Task, console, run_simulation, typer_app
from fedcrm.cli.plan_options import Model, plan_from, plan_option, warn_short_run

app = typer_app(None)  # merged into the root app: `fedcrm run`, `fedcrm demo`, ...
benchmark_app = typer_app("Benchmarks that need the public datasets.")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="folder to write the consortium into")] = Path(".work/demo/consortium"),
    seed: int = 7,
) -> None:
    """Write a small consortium: three partners' raw exports, configs and keys."""
    from fedcrm.config import FederationConfig
    from fedcrm.sandbox.demo_data import generate

    fed = generate(out, seed=seed)
    console.print(f"wrote {len(FederationConfig.load(fed).members)} partners; federation config: {fed}")


@app.command("run")
def run(
    ctx: typer.Context,
    federation: Annotated[Path, typer.Option(help="federation config (members and their partner configs)")],
    out: Annotated[Path, typer.Option(help="run directory for model, metrics and ε")],
    work: Annotated[Path, typer.Option(help="where each run gets a Flower home of its own (FLWR_HOME, SuperLink "
                                             "database and log in <work>/<date>-<time>-<pid>-<tag>/)")] = Path(".work/flower"),
    rounds: int = plan_option("rounds"), task: Task = plan_option("task"), model: Model = plan_option("model"),
    epsilon: float = plan_option("epsilon"), delta: float = plan_option("delta"), dp: bool = plan_option("dp"),
    local_epochs: int = plan_option("local_epochs"), batch_size: int = plan_option("batch_size"),
    learning_rate: float = plan_option("learning_rate"), evaluate_every: int = plan_option("evaluate_every"),
    trees_per_round: int = plan_option("trees_per_round"), depth: int = plan_option("depth"),
    local_baseline: bool = plan_option("local_baseline"), cpus_per_node: int = 1, mlflow: MlflowOpt = False, mlflow_uri: MlflowUriOpt = None,
) -> None:
    """Run a simulated federation (Flower simulation engine, one node per member)."""
    plan = plan_from(ctx)  # a bad value stops here, before any SuperLink or Ray starts
    warn_short_run(plan)
    run_simulation(federation, out, work, plan.to_run_config(exclude_unset=True), cpus_per_node, mlflow, mlflow_uri)


@app.command("demo")
def demo(
    ctx: typer.Context,
    dir: Annotated[Path, typer.Option(help="where the demo consortium and runs go")] = Path(".work/demo"),
    rounds: int = plan_option("rounds"), epsilon: float = plan_option("epsilon"),
) -> None:
    """Generate the demo consortium and train a DP churn model across it."""
    from fedcrm.sandbox.demo_data import generate

    plan = plan_from(ctx)
    fed = generate(dir / "consortium")
    console.print(f"demo consortium: {fed}")
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # two demos started in one second: two run dirs
    run_simulation(fed, dir / "runs" / stamp, dir / "flower", plan.to_run_config(exclude_unset=True), 1)


class Dataset(StrEnum):  # fedcrm.sandbox.utility.Settings.data
    telco = "telco"
    bank = "bank"


@benchmark_app.command("utility")
def benchmark_utility(
    data: Annotated[Dataset, typer.Option(help="public dataset (../shared/datasets): telco (churn) or bank (propensity)")] = Dataset.telco,
    partners: int = 5,
    split_by: Annotated[list[str] | None, typer.Option(help="iid, label-skew or a column (repeat)")] = None,
    seeds: Annotated[int, typer.Option(help="number of seeds")] = 3,
    rounds: int = 10,
    keep_fraction: Annotated[float, typer.Option(help="share of each partner's rows kept (data-scarce regime)")] = 1.0,
    model: Annotated[Model, typer.Option(help="local-only and federated model (the reference is pooled LR)")] = Model("logistic"),
    learning_rate: float = 0.5,
    epsilon: Annotated[list[float] | None, typer.Option(help="target ε of a DP variant (repeat) [default: 1, 3, 8]")] = None,
    out: Annotated[Path | None, typer.Option(help="writes OUT.json and OUT.md [default: benchmarks/results/utility_DATA[_keepN][_mlp][_rN]]")] = None,
    work: Annotated[Path, typer.Option(help="scratch folder for partner exports and runs")] = Path(".work/utility"),
) -> None:
    """Local-only vs federated (no DP, ε = 1, 3, 8) vs pooled, on the same splits and seeds."""
    from fedcrm.sandbox.utility import Settings, run as run_utility, write

    settings = Settings(data=data.value, partners=partners, splits=split_by or ["iid", "label-skew"],
                        seeds=list(range(seeds)), rounds=rounds, keep_fraction=keep_fraction,
                        model=model.value, learning_rate=learning_rate,
                        **({"epsilons": epsilon} if epsilon else {}))
    report = run_utility(settings, work.resolve(), log=console.print)
    json_path, md_path = write(report, out or Path("benchmarks/results") / settings.name)
    console.print(md_path.read_text(), markup=False)
    console.print(f"written: {json_path}, {md_path}")

