"""A finished run directory logged to MLflow, for teams that track their models there.

Nothing here reaches a partner: it reads only what the coordinator's run directory holds
(the plan, per-round metrics, each partner's ε, the published model's files and reports).
Optional: `pip install 'fedcrm[mlflow]'` (mlflow-skinny). The default tracking store is a
local folder, `./mlruns`; MLflow 3 keeps its file store in maintenance mode behind
MLFLOW_ALLOW_FILE_STORE, which is set for a `file:` URI only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from fedcrm.errors import ConfigError
from fedcrm.rundir import RunDir

EXPERIMENT = "fedcrm"
ARTIFACTS = ("summary.json", "plan.json", "metrics.json", "metrics.csv", "metrics.parquet", "epsilon.json",
             "model.json", "model.pt", "trees.json", "trees.lightgbm.txt", "report.html", "compliance.html",
             "compliance.json", "compliance.pdf", "compliance.sha256")


def default_uri() -> str:
    return Path("mlruns").resolve().as_uri()


def track_run(run_dir: Path, uri: str | None = None, experiment: str = EXPERIMENT) -> str:
    """Log `run_dir` as one MLflow run: the plan as parameters, per-round global metrics and
    each partner's cumulative ε as metric histories (step = round), the outcome as tags,
    the run's files as artifacts. Returns the MLflow run id."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError("MLflow tracking needs mlflow: pip install 'fedcrm[mlflow]'") from None
    uri = uri or default_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    run = RunDir(run_dir)
    summary, plan = run.summary(), run.plan
    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    tracked = client.create_run(experiment_id, run_name=f"fedcrm-{summary.run_id}", tags={
        "fedcrm.run_id": str(summary.run_id), "fedcrm.status": summary.status, "fedcrm.task": plan.task,
        "fedcrm.model": plan.model, "fedcrm.contract_digest": plan.contract_digest or "",
        "fedcrm.run_dir": str(run.path)})
    rid = tracked.info.run_id
    for key, value in sorted(plan.to_run_config().items()):
        client.log_param(rid, key, str(value)[:500])
    for record in run.rounds():
        for key, value in record.global_metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                client.log_metric(rid, f"global.{key}", float(value), step=record.round)
        for partner, eps in record.epsilon().items():
            client.log_metric(rid, f"epsilon.{partner}", eps, step=record.round)
    for name in ARTIFACTS:
        if run.has(name):
            client.log_artifact(rid, str(run.path / name))
    client.set_terminated(rid, status="FINISHED" if summary.status == "completed" else "FAILED")
    return rid
