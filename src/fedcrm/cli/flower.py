"""`fedcrm flower`: Flower's own view of a finished simulated run. A `fedcrm run` stops its
SuperLink when the run ends; these commands start one again on that run's database (a
free port on 127.0.0.1), run `flwr ls` or `flwr log` against it, and stop it by its PID."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import console, typer_app

app = typer_app("Flower's view of a finished `fedcrm run`: `flwr ls` and `flwr log` on its own SuperLink database.")
RunDirArg = Annotated[Path, typer.Argument(help="the run directory of a finished `fedcrm run`")]


@app.command("ls")
def flower_ls(
    run_dir: RunDirArg,
    json_format: Annotated[bool, typer.Option("--json", help="Flower's JSON instead of its table")] = False,
) -> None:
    """`flwr ls`: the run as Flower recorded it (status, times)."""
    from fedcrm.ops.launcher import reopened

    with reopened(run_dir) as link:
        proc = link.cli.flwr("ls", link.cli.connection, *(["--format", "json"] if json_format else []), timeout=60)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        console.print(f"[red]flwr ls failed (exit {proc.returncode})[/red]")
        raise typer.Exit(1)


@app.command("log")
def flower_log(run_dir: RunDirArg) -> None:
    """`flwr log`: the ServerApp's log of each Flower run of the job."""
    from fedcrm.ops.launcher import reopened
    from fedcrm.rundir import RunDir

    runs = RunDir(run_dir).flower_home().runs
    with reopened(run_dir) as link:
        for run_id in runs:
            print(link.cli.logs(int(run_id)), end="")
