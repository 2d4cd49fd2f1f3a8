"""`fedcrm`: the command line for partners, the coordinator and the demo."""

from __future__ import annotations

import importlib
from typing import Annotated, NamedTuple

import click
import typer
from typer.core import TyperGroup

from fedcrm.cli.common import console, typer_app
from fedcrm.errors import FedcrmError


class Subcommand(NamedTuple):
    """Where a root command lives, and its line in `fedcrm --help`."""

    module: str  # under fedcrm.cli
    app: str  # the Typer app in it
    command: str | None  # the command in that app (None: the app is a group of commands)
    help: str


# The root's commands, in `fedcrm --help`'s order. Each module is imported only when its
# command runs or shows its own help: a module loads what its options need (the run
# options load the config models), and `fedcrm --help` needs none of it.
# tests/test_cli.py holds every line here to the loaded command's own help.
COMMANDS = {
    "contract": Subcommand("contract", "app", None, "The consortium's data contract: fields, features and tasks as data."),
    "partner": Subcommand("partner", "app", None, "Partner-side commands (run on the partner's node)."),
    "privacy": Subcommand("privacy", "app", None,
                          "Privacy budget: plan, verify the ledger, audit a model, ledger receipts."),
    "report": Subcommand("report", "app", None, "Reports on finished runs."),
    "federation": Subcommand("federation", "app", None, "Provision a deployed federation: the CA, the SuperLink "
                             "certificate, partners' public keys."),
    "coordinator": Subcommand("coordinator", "app", None, "The coordinator's SuperLink and its runs (deployment)."),
    "flower": Subcommand("flower", "app", None, "Flower's view of a finished `fedcrm run`: `flwr ls` and `flwr log` "
                         "on its own SuperLink database."),
    "score": Subcommand("score", "app", "score", "Score this partner's current customers locally: churn-risk tiers or "
                        "propensity deciles, joined back to its own customer ids (the file stays on the node)."),
    "benchmark": Subcommand("sim", "benchmark_app", None, "Benchmarks that need the public datasets."),
    "demo-data": Subcommand("sim", "app", "demo-data", "Write a small consortium: three partners' raw exports, "
                            "configs and keys."),
    "run": Subcommand("sim", "app", "run", "Run a simulated federation (Flower simulation engine, one node per member)."),
    "demo": Subcommand("sim", "app", "demo", "Generate the demo consortium and train a DP churn model across it."),
}


def load(name: str) -> click.Command:
    """The root command `name`, its module imported."""
    entry = COMMANDS[name]
    group = typer.main.get_group(getattr(importlib.import_module(f"fedcrm.cli.{entry.module}"), entry.app))
    command = group if entry.command is None else group.commands[entry.command]
    command.name = name
    return command


class LazyRoot(TyperGroup):
    """`fedcrm`: lists its commands from `COMMANDS`, loads one when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        return None if entry is None else click.Command(cmd_name, help=entry.help)  # a line of the listing

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name, _, rest = super().resolve_command(ctx, args)
        return name, load(name) if name else None, rest


app = typer_app(__doc__, cls=LazyRoot)


def _print_version(value: bool) -> None:
    if value:
        from fedcrm import __version__

        print(f"fedcrm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print fedcrm's version and exit")] = False,
) -> None:
    pass


def main() -> None:
    """Every error we expect is one line and exit 2: fedcrm's own (a config, a refused plan)
    and Click's usage errors (a bad option value), both before anything starts."""
    try:
        code = app(standalone_mode=False)
    except FedcrmError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
    except click.exceptions.NoArgsIsHelpError as exc:  # the help is the message
        click.echo(exc.format_message())
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        click.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)
