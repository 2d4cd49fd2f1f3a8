"""Per-round latency of a real deployment on loopback, and where the time goes.

    .venv/bin/python benchmarks/deployment_latency.py   # writes benchmarks/results/deployment_latency.json

A TLS SuperLink with node authentication and three SuperNodes (the demo partners) on
127.0.0.1, one churn run of 3 rounds at ε = 3 with every partner required. Per round:
the wall time between consecutive checkpoints (a round = train + evaluate exchanges), the
partners' own training and evaluation time (from their `train-seconds` / `eval-seconds`
metrics), and the cold start of one ClientApp process (Flower starts a fresh
`flwr-clientapp` per message, which imports torch, Opacus and Flower).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedcrm.sandbox.demo_data import generate
from fedcrm.ops.launcher import FLWR_ENV
from fedcrm.sandbox.loopback import LoopbackFederation
from fedcrm.ops.runs import launch, watch
from fedcrm.protocol import EvaluateReply
from fedcrm.rundir import RunDir

EVAL_SECONDS = EvaluateReply.key("eval_seconds")

RESULTS = Path(__file__).resolve().parent / "results" / "deployment_latency.json"
ROUNDS = 3


def clientapp_import_seconds(repeats: int = 3) -> float:
    """What a fresh ClientApp process spends before it can handle a message."""
    root = Path(__file__).resolve().parents[1]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import clients.client_app"], cwd=root, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def concurrent_imports_seconds(n: int = 3) -> float:
    """n ClientApps starting at once, as when every partner of a round is on this 2-core machine."""
    root = Path(__file__).resolve().parents[1]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import clients.client_app"], cwd=root) for _ in range(n)]
    for p in procs:
        p.wait()
    return time.perf_counter() - t0


def main() -> None:
    os.environ.update(FLWR_ENV)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                 "date": time.strftime("%Y-%m-%d"), "rounds": ROUNDS, "partners": 3}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        federation = LoopbackFederation(root, generate(root / "consortium"), name="latency")
        t0 = time.monotonic()
        federation.start()
        out["startup_seconds"] = round(time.monotonic() - t0, 1)  # SuperLink healthy, keys registered, nodes up
        try:
            run_dir = root / "run"
            t0, submitted = time.monotonic(), time.time()
            run_id = launch(federation.layout, run_dir, {"num-server-rounds": ROUNDS, "min-partners": 3,
                                                         "round-timeout": 300})
            status = watch(federation.layout, run_id, timeout=900, poll=0.5)
            out["run_wall_seconds"] = round(time.monotonic() - t0, 1)
            out["status"] = status
            stamps = [(run_dir / "checkpoints" / f"round-{r:03d}.pt").stat().st_mtime for r in range(ROUNDS + 1)]
            out["submit_to_round_0_seconds"] = round(stamps[0] - submitted, 1)  # ServerApp start + one evaluate
            out["round_seconds"] = [round(b - a, 1) for a, b in zip(stamps, stamps[1:])]
            rounds = [r for r in RunDir(run_dir).rounds() if r.round > 0]
            out["partner_train_seconds_max"] = [round(max(p.trained().train_seconds for p in r.partners.values()), 2)
                                                for r in rounds]
            out["partner_eval_seconds_max"] = [round(max(p.evaluate[EVAL_SECONDS] for p in r.partners.values()), 2)
                                               for r in rounds]
        finally:
            federation.stop()
    out["clientapp_import_seconds"] = round(clientapp_import_seconds(), 2)
    out["clientapp_import_seconds_3_at_once"] = round(concurrent_imports_seconds(3), 2)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
