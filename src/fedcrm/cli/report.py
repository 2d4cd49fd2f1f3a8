"""`fedcrm report`: reports on finished runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import FederationOpt, console, typer_app

app = typer_app("Reports on finished runs.")
RunDirArg = Annotated[Path, typer.Argument(help="the run directory")]


@app.command("compliance")
def report_compliance(
    run_dir: RunDirArg, federation: FederationOpt = None,
    pdf: Annotated[bool, typer.Option("--pdf/--no-pdf", help="also print it to compliance.pdf (headless Chromium)")] = False,
) -> None:
    """What a compliance officer signs: who launched the run and when, each partner's ε this
    run and over all runs against its cap, the data used with its grades, k-anonymity, key
    custody, refusals, audits with verdicts, what left each node. Writes compliance.json,
    compliance.html (and compliance.pdf) with their SHA-256 in compliance.sha256."""
    from fedcrm.reports.compliance import write_report

    files = write_report(run_dir, federation, pdf=pdf)
    console.print(f"compliance report: {files.html}" + (f" and {files.pdf}" if files.pdf else "")
                  + f" (data: {files.data}; SHA-256 of each in {files.sha256})")


@app.command("run")
def report_run(
    run_dir: RunDirArg,
    baselines: Annotated[Path | None, typer.Option(help="a baseline table (JSON: title, columns, rows)")] = None,
) -> None:
    """One HTML page: AUC and ε by round, ROC, lift, calibration, partner sizes, baselines."""
    from fedcrm.reports.run_report import write

    console.print(f"run report: {write(run_dir, baselines)}")


@app.command("schemas")
def report_schemas(
    out: Annotated[Path, typer.Option(help="folder to write <file>.schema.json into")] = Path("schemas"),
) -> None:
    """JSON Schemas of every JSON file a run directory holds (plan, metrics, ε, summary,
    model, compliance, ...), for tools that read run directories."""
    import json

    from fedcrm.rundir import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{Path(name).stem}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"{len(json_schemas())} schemas in {out}")


@app.command("mlflow")
def report_mlflow(
    run_dir: RunDirArg,
    uri: Annotated[str | None, typer.Option(help="tracking URI (default: ./mlruns, a local file store)")] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "fedcrm",
) -> None:
    """Log a finished run to MLflow: plan as parameters, per-round global metrics and each
    partner's ε as metric histories, the run's files as artifacts (needs the mlflow extra)."""
    from fedcrm.ops.tracking import default_uri, track_run

    rid = track_run(run_dir, uri, experiment)
    console.print(f"MLflow: run {rid} in {uri or default_uri()} (experiment {experiment})", highlight=False)
