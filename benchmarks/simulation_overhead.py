"""Simulation overhead: a federated run in Flower's simulation engine vs the same local SGD
steps run one after another in a single process.

    .venv/bin/python benchmarks/simulation_overhead.py [--partners 5 100 1000]
    .venv/bin/python benchmarks/simulation_overhead.py --partners 5 --rows-per-partner 8000 --local-epochs 5
    # writes benchmarks/results/simulation_overhead.json (one entry per partners × epochs × rows)

IBM Telco cut IID into N partners (for 1,000 partners, copies of Telco with new ids, about
60 rows each); 3 rounds, 1 local epoch, batch 64, no DP (the overhead
of the engine, not of Opacus). Partner data is prepared once beforehand (on-disk cache), so
both sides only train. `federated_seconds` is from submit to the run's end; `after_startup`
subtracts the time until round 0's evaluation landed. The local side runs every partner's
rounds × steps with `train_local` in this process. Memory: the peak summed RSS of the
SuperLink's process tree (ServerApp, Ray and its workers), sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.ops.app import default_app_dir
from fedcrm.ops.launcher import FLWR_ENV, SimulationLink
from fedcrm.ml.models import build_model
from fedcrm.data.prepare import prepare
from fedcrm.sandbox.public_data import TELCO_CSV, split_telco
from fedcrm.ml.training import train_local

RESULTS = Path(__file__).resolve().parent / "results" / "simulation_overhead.json"
ROUNDS = 3
CONFIG = {"num-server-rounds": ROUNDS, "dp-enabled": False, "local-epochs": 1, "batch-size": 64,
          "federated-stats": False, "round-timeout": 3600}


class PeakRSS(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.5)


def telco_at_least(rows: int, work: Path) -> Path:
    """Telco itself, or copies of it with new customer ids: the engine's overhead does not
    depend on who the customers are, and 1,000 partners need more than 7 rows each."""
    frame = pd.read_csv(TELCO_CSV, dtype=str, keep_default_na=False)
    copies = -(-rows // len(frame))
    if copies == 1:
        return TELCO_CSV
    big = pd.concat([frame.assign(customerID=frame["customerID"] + f"-{k}") for k in range(copies)])
    path = work / "telco-x{copies}.csv".format(copies=copies)
    work.mkdir(parents=True, exist_ok=True)
    big.to_csv(path, index=False)
    return path


def measure(n: int, work: Path, local_epochs: int = 1, min_rows: int = 60) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    csv = telco_at_least(min_rows * n, work)
    fed = split_telco(work / "consortium", by="iid", partners=n, seed=0, csv=csv, benchmark_policy=True)
    configs = [PartnerConfig.load(m.config) for m in FederationConfig.load(fed).members]
    t0 = time.monotonic()
    data = [prepare(c, "churn") for c in configs]
    prepare_seconds = time.monotonic() - t0

    t0 = time.monotonic()
    for r in range(ROUNDS):
        for i, d in enumerate(data):
            train_local(build_model("logistic", d.x_train.shape[1]), d.x_train, d.y_train, epochs=local_epochs, batch_size=64,
                        lr=0.5, optimizer="sgd", seed=r * 7919 + i, dp=None)
    local_seconds = time.monotonic() - t0

    run_dir = work / "run"
    plan = TrainPlan.from_run_config({**CONFIG, "federation-config": str(fed.resolve()), "run-dir": str(run_dir.resolve()),
                                      "min-partners": n, "local-epochs": local_epochs})
    config = plan.to_run_config(exclude_unset=True)
    with SimulationLink(work / "flower") as link:
        watcher = PeakRSS(link.process.pid)
        watcher.start()
        t0 = time.monotonic()
        run_id = link.submit(default_app_dir(), config, n, num_cpus_per_node=1)
        while not (run_dir / "checkpoints" / "round-000.pt").exists():
            if link.cli.status(run_id).startswith("finished"):
                raise SystemExit(f"run with {n} partners ended early: {link.cli.logs(run_id)[-3000:]}")
            time.sleep(0.5)
        startup = time.monotonic() - t0
        status = link.cli.wait(run_id, timeout=7200, poll=0.5)
        federated_seconds = time.monotonic() - t0
        watcher.stop.set()
    return {"partners": n, "local_epochs": local_epochs, "min_rows": min_rows, "dataset": csv.name, "rows_per_partner": round(sum(len(d.x_train) for d in data) / n, 1), "status": status,
            "prepare_seconds": round(prepare_seconds, 1), "local_seconds": round(local_seconds, 2),
            "federated_seconds": round(federated_seconds, 1), "startup_to_round_0_seconds": round(startup, 1),
            "after_startup_seconds": round(federated_seconds - startup, 1),
            "ratio_after_startup": round((federated_seconds - startup) / local_seconds, 1),
            "peak_rss_gb": round(watcher.peak / 2**30, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partners", type=int, nargs="+", default=[5, 100, 1000])
    parser.add_argument("--local-epochs", type=int, default=1, help="more local work per round")
    parser.add_argument("--rows-per-partner", type=int, default=60,
                        help="at least this many rows per partner (Telco copied with new ids when needed)")
    args = parser.parse_args()
    if not TELCO_CSV.is_file():
        raise SystemExit(f"IBM Telco not found at {TELCO_CSV}")
    os.environ.update(FLWR_ENV)
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
           "date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "runs": []}
    def key(r: dict) -> tuple[int, int, int]:
        return r["partners"], r.get("local_epochs", 1), r.get("min_rows", 60)

    now = {(n, args.local_epochs, args.rows_per_partner) for n in args.partners}
    if RESULTS.is_file():  # keep the settings measured earlier, replace the ones measured now
        out["runs"] = [r for r in json.loads(RESULTS.read_text())["runs"] if key(r) not in now]
    root = Path(__file__).resolve().parents[1] / ".work" / "sim-overhead"
    for n in args.partners:
        result = measure(n, root / f"n{n}-e{args.local_epochs}-r{args.rows_per_partner}", args.local_epochs,
                         args.rows_per_partner)
        out["runs"].append(result)
        print(json.dumps(result), flush=True)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2))  # after every size: a long one may be cut short
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
