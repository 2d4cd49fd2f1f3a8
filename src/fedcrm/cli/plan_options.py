"""Run options derived from `TrainPlan`: a run option's default and help come from the plan
itself, and only the options a user typed are passed on (the rest are TrainPlan's
defaults anyway, also in the generated Flower app).

Separate from `fedcrm.cli.common` because it loads the config models: only the commands
that start runs (`run`, `demo`, `coordinator run`, `privacy plan`) import it.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, get_args

import typer
from click.core import ParameterSource
from pydantic import ValidationError

from fedcrm.cli.common import console
from fedcrm.config.plan import TrainPlan
from fedcrm.errors import ConfigError

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


def warn_short_run(plan: TrainPlan) -> None:
    warning = plan.short_run_warning()
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
