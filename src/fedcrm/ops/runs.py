"""The coordinator's run operations on a deployed federation: launch, watch, stop, collect,
resume. Status always comes from `flwr ls --format json` (never `flwr run`'s exit code);
every operation is written to the federation's audit log."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcrm.config import TrainPlan
from fedcrm.ops.deployment import FederationLayout
from fedcrm.errors import ConfigError
from fedcrm.ops.app import default_app_dir
from fedcrm.ops.launcher import TERMINAL, RunFailed
from fedcrm.reports.tables import RoundRow, read_rounds
from fedcrm.rundir import RunDir

LAUNCH_ACTIONS = ("run-launched", "run-resume-launched")


def _deployed(plan: TrainPlan, layout: FederationLayout, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """The run config of a deployed run: the plan, plus where this coordinator keeps things."""
    return plan.model_copy(update={"federation_config": str(layout.manifest), "run_dir": str(run_dir),
                                   "audit_log": str(layout.audit.path), "contract_digest": layout.config().contract_digest(),
                                   "resume_from": str(run_dir) if resume else ""}).to_run_config()


def launch(layout: FederationLayout, out: Path, overrides: dict[str, Any], app_dir: Path | None = None) -> int:
    """Submit a run to the federation's SuperLink; results go to `out` on this machine."""
    out = out.resolve()
    if RunDir.open(out) is not None:
        raise ConfigError(f"{out} already holds a run; choose a new directory (or `resume` it)")
    plan = TrainPlan.from_run_config(overrides)  # refuse a bad config here, not in the ServerApp
    run_id = layout.cli().submit(app_dir or default_app_dir(), _deployed(plan, layout, out))
    layout.audit.record("run-launched", run_id=run_id, run_dir=str(out), config=overrides)
    return run_id


def resume(layout: FederationLayout, run_dir: Path, app_dir: Path | None = None) -> int:
    """A new Flower run that continues `run_dir` after its last completed round."""
    run = RunDir(run_dir.resolve())
    state = run.state()
    if state.completed_rounds >= state.total_rounds:
        raise ConfigError(f"{run.path}: all {state.total_rounds} rounds are complete; nothing to resume")
    run_id = layout.cli().submit(app_dir or default_app_dir(), _deployed(run.plan, layout, run.path, resume=True))
    layout.audit.record("run-resume-launched", run_id=run_id, job_id=state.job_id, run_dir=str(run.path),
                        from_round=state.completed_rounds)
    return run_id


def run_dir_of(layout: FederationLayout, run_id: int) -> Path:
    for action in LAUNCH_ACTIONS:
        entry = layout.audit.find(action, run_id)
        if entry is not None:
            return Path(entry.details["run_dir"])
    raise ConfigError(f"run {run_id} was not launched from {layout.root} (no entry in its audit log)")


def watch(layout: FederationLayout, run_id: int, on_round: Callable[[RoundRow], None] | None = None,
          timeout: float = 3600, poll: float = 2.0) -> str:
    """Until the run ends: each round as it lands, then Flower's final status."""
    cli, run_dir = layout.cli(), run_dir_of(layout, run_id)
    shown: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = cli.status(run_id)
        for row in read_rounds(run_dir):
            if row.round not in shown:
                shown.add(row.round)
                if on_round:
                    on_round(row)
        if status in TERMINAL:
            return status
        time.sleep(poll)
    raise RunFailed(f"run {run_id} still {status} after {timeout:.0f}s")


def stop(layout: FederationLayout, run_id: int) -> str:
    message = layout.cli().stop(run_id)
    layout.audit.record("run-stop-requested", run_id=run_id, reply=message[-200:])
    return message


def collect(layout: FederationLayout, run_id: int, out: Path | None = None) -> Path:
    """Model, metrics, per-partner ε and the run's logs in one local directory."""
    cli, run_dir = layout.cli(), run_dir_of(layout, run_id)
    out = (out or run_dir).resolve()
    if out != run_dir:
        shutil.copytree(run_dir, out, dirs_exist_ok=True)
    status = cli.status(run_id)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"flower-run-{run_id}.log").write_text(cli.logs(run_id))
    (out / "logs" / f"flower-run-{run_id}.status.json").write_text(json.dumps({"run_id": str(run_id), "status": status}))
    run = RunDir.open(run_dir)  # a resumed job is collected under the job's id, as it was launched
    job_id = run.state().job_id if run is not None else str(run_id)
    layout.audit.record("run-collected", run_id=job_id, flower_run=str(run_id), out=str(out), status=status)
    return out
