"""How close fedcrm stays to the engines it stands on (issue 17), measured side by side in
one run: the local training loop against a plain torch loop on the same tensors, DP-SGD
per Opacus grad-sample mode against our own loop without DP, and the command line's
start-up against Flower's.

    .venv/bin/python benchmarks/overhead.py            # → benchmarks/results/overhead.{json,md}, ~3 min

- **Training loop.** 40,000 rows × 66 columns (UCI Bank Marketing's size), batch 256,
  2 epochs, one thread (a node sharing 2 cores), models logistic, MLP(32) and MLP(256).
  The plain loop: a fresh permutation per epoch, tensors sliced by it, BCE, SGD, nothing
  else. `train_local` without DP, then with DP-SGD at σ 1, C 1, in each grad-sample mode.
  Each variant's repeats are interleaved with the others' (median of 5), after one
  warm-up pass of everything, so warm-up and drift fall on all alike.
- **Start-up.** Wall time of `fedcrm --help`, `fedcrm partner check --help`,
  `flwr --help` and `python -c pass` as subprocesses (median of 5).
- Not here yet: per-round simulation against bare Flower (`simulation_overhead.py`) and
  deployed rounds (`deployment_latency.py`) keep their own scripts and results.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedcrm.ml.models import build_model
from fedcrm.ml.training import DPSettings, train_local

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "overhead"
ROWS, WIDTH, BATCH, EPOCHS, REPEATS = 40_000, 66, 256, 2, 5
MODELS = (("logistic", 32), ("mlp", 32), ("mlp", 256))
MODES = ("hooks", "functorch", "ghost")


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, WIDTH)).astype(np.float32)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] - 1)))).astype(np.float32)
    return x, y


def plain_loop(kind: str, hidden: int, x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """The reference: what a torch user writes for the same steps on the same tensors."""
    model = build_model(kind, WIDTH, seed=seed, hidden=hidden)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt, loss = torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), BATCH):
            at = order[i:i + BATCH]
            opt.zero_grad()
            loss(model(xt[at]), yt[at]).backward()
            opt.step()
    return time.perf_counter() - t0


def ours(kind: str, hidden: int, x: np.ndarray, y: np.ndarray, seed: int, mode: str | None) -> float:
    model = build_model(kind, WIDTH, seed=seed, hidden=hidden)
    dp = DPSettings(1.0, 1.0, 1e-5, [], grad_sample_mode=mode) if mode else None
    t0 = time.perf_counter()
    train_local(model, x, y, epochs=EPOCHS, batch_size=BATCH, lr=0.1, optimizer="sgd", seed=seed, dp=dp)
    return time.perf_counter() - t0


def training() -> dict:
    torch.set_num_threads(1)
    x, y = data()
    out: dict = {}
    for kind, hidden in MODELS:
        name = kind if kind == "logistic" else f"mlp{hidden}"
        variants: dict[str, Callable[[int], float]] = {
            "plain_torch": lambda s, k=kind, h=hidden: plain_loop(k, h, x, y, s),
            "train_local": lambda s, k=kind, h=hidden: ours(k, h, x, y, s, None),
            **{f"dp_{m}": (lambda s, k=kind, h=hidden, m=m: ours(k, h, x, y, s, m)) for m in MODES}}
        times: dict[str, list[float]] = {v: [] for v in variants}
        for run in variants.values():  # warm-up, not counted
            run(99)
        for r in range(REPEATS):
            for v, run in variants.items():
                times[v].append(run(r))
        med = {v: statistics.median(t) for v, t in times.items()}
        best = min(MODES, key=lambda m: med[f"dp_{m}"])
        out[name] = {"seconds_median": {v: round(t, 3) for v, t in med.items()},
                     "train_local_over_plain": round(med["train_local"] / med["plain_torch"], 2),
                     **{f"dp_{m}_over_train_local": round(med[f"dp_{m}"] / med["train_local"], 2) for m in MODES},
                     "fastest_dp_mode": best}
        print(name, json.dumps(out[name]), flush=True)
    return out


def startup() -> dict:
    bin_dir = Path(sys.executable).parent
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "fedcrm --help": [str(bin_dir / "fedcrm"), "--help"],
                "fedcrm partner check --help": [str(bin_dir / "fedcrm"), "partner", "check", "--help"],
                "flwr --help": [str(bin_dir / "flwr"), "--help"]}
    out = {}
    for name, cmd in commands.items():
        subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
        times = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times), 3)
        print(name, out[name], flush=True)
    return out


def markdown(result: dict) -> str:
    lines = ["Command: `.venv/bin/python benchmarks/overhead.py`", "",
             f"Training loop: {ROWS:,} rows × {WIDTH} columns, batch {BATCH}, {EPOCHS} epochs, 1 thread, median of "
             f"{REPEATS} interleaved repeats (seconds; ratios in brackets):", "",
             "| model | plain torch | train_local | DP hooks | DP functorch | DP ghost |", "|---|---|---|---|---|---|"]
    for name, r in result["training"].items():
        s = r["seconds_median"]
        lines.append(f"| {name} | {s['plain_torch']:.3f} | {s['train_local']:.3f} ({r['train_local_over_plain']}× plain) | "
                     + " | ".join(f"{s[f'dp_{m}']:.3f} ({r[f'dp_{m}_over_train_local']}×)" for m in MODES) + " |")
    lines += ["", "DP ratios are against `train_local` without DP. Start-up, wall seconds (median of "
              f"{REPEATS}):", "", "| command | seconds |", "|---|---|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in result["startup"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "processor": platform.processor() or platform.machine()},
              "training": training(), "startup": startup()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=2))
    RESULTS.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
