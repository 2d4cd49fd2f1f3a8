"""`fedcrm report`: reports on finished runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import FederationOpt, console, typer_app

app = typer_app("Reports on finished runs.")
RunDirArg = Annotated[Path, typer.Argument(help="the run directory")]


@app.command("compliance")
def report_compliance(run_dir: RunDirArg, federation: FederationOpt = None) -> None:
    """Per partner: ε this run and in total against its cap, what left its node, audits,
    ledger integrity. Writes compliance.json and compliance.html into the run directory."""
    from fedcrm.reports.compliance import write_report

    json_path, html_path = write_report(run_dir, federation)
    console.print(f"compliance report: {html_path} (data: {json_path})")


@app.command("run")
def report_run(
    run_dir: RunDirArg,
    baselines: Annotated[Path | None, typer.Option(help="a baseline table (JSON: title, columns, rows)")] = None,
) -> None:
    """One HTML page: AUC and ε by round, ROC, lift, calibration, partner sizes, baselines."""
    from fedcrm.reports.run_report import write

    console.print(f"run report: {write(run_dir, baselines)}")
