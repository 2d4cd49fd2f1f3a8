"""The coordinator's ServerApp: reads the run config, hands the grid to `fedcrm.coordinator.loop`."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcrm.config import TrainPlan
from fedcrm.coordinator.loop import run_federation
from fedcrm.coordinator.polling import prompt

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    plan = TrainPlan.from_run_config(dict(context.run_config))
    run_id = int(context.run_id)
    run_dir = Path(plan.run_dir) if plan.run_dir else Path.cwd() / "fedcrm-runs" / f"run-{run_id}"
    logging.getLogger("flwr").info("fedcrm run %s: writing results to %s", run_id, run_dir)
    run_federation(prompt(grid, plan.pull_interval), plan, run_id, run_dir)
