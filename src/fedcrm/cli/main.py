"""`fedcrm`: the command line for partners, the coordinator and the demo."""

from __future__ import annotations

from typing import Annotated

import click
import typer

from fedcrm.cli import contract, coordinator, federation, flower, partner, privacy, report, score, sim
from fedcrm.cli.common import console, typer_app
from fedcrm.errors import FedcrmError

app = typer_app(__doc__)
app.add_typer(contract.app, name="contract")
app.add_typer(partner.app, name="partner")
app.add_typer(privacy.app, name="privacy")
app.add_typer(report.app, name="report")
app.add_typer(federation.app, name="federation")
app.add_typer(coordinator.app, name="coordinator")
app.add_typer(flower.app, name="flower")
app.add_typer(score.app)
app.add_typer(sim.benchmark_app, name="benchmark")
app.add_typer(sim.app)


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
