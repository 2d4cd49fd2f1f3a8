"""DP-SGD time vs plain SGD time for the models we ship, per Opacus grad-sample mode.

    .venv/bin/python benchmarks/dp_overhead.py         # writes benchmarks/results/dp_overhead.json
    .venv/bin/python benchmarks/dp_overhead.py --noise-source   # cost of OS-entropy noise (issue 12) → results/noise_source.json

`fedcrm.training.train_local` on 40,000 rows × the shared features (66 since the banking fields; the size of UCI
Bank Marketing), batch 256, 2 epochs, one thread per process as on a node sharing 2 cores;
median of 3 repeats. Plain = the same loop without Opacus; DP = Poisson sampling,
per-sample clipping and noise, with each `grad_sample_mode`. Goal: DP ≤ 1.5× plain.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fedcrm.data.layout import standard_layout
from fedcrm.ml.models import build_model
from fedcrm.ml.training import DPSettings, train_local

RESULTS = Path(__file__).resolve().parent / "results" / "dp_overhead.json"
ROWS, BATCH, EPOCHS, REPEATS = 40_000, 256, 2, 3
MODES = ("hooks", "ew", "functorch", "ghost")


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, len(standard_layout().names()))).astype(np.float32)
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] - 1)))).astype(np.float32)
    return x, y


def seconds(kind: str, x: np.ndarray, y: np.ndarray, mode: str | None) -> float:
    times = []
    for r in range(REPEATS):
        model = build_model(kind, x.shape[1], seed=r)
        dp = DPSettings(1.0, 1.0, 1e-5, [], grad_sample_mode=mode) if mode else None
        t0 = time.perf_counter()
        train_local(model, x, y, epochs=EPOCHS, batch_size=BATCH, lr=0.1, optimizer="sgd", seed=r, dp=dp)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def noise_source(repeats: int = 7) -> None:
    """DP training with the generator reseeded from os.urandom before every step (the node's
    noise source) vs the same generator never reseeded (the cost of the old seeded stream),
    interleaved in one process; median of `repeats`."""
    import sys

    import fedcrm.ml.training as training
    torch.set_num_threads(1)
    x, y = data()
    fresh = training.reseed_from_os
    out: dict[str, object] = {"rows": len(x), "batch": BATCH, "epochs": EPOCHS, "repeats": repeats, "threads": 1,
                              "seconds_median": {}}
    for kind in ("logistic", "mlp"):
        times: dict[str, list[float]] = {"seeded": [], "os-entropy": []}
        for r in range(repeats):
            for name in times:
                training.reseed_from_os = fresh if name == "os-entropy" else (lambda g: g)
                model = build_model(kind, x.shape[1], seed=r)
                t0 = time.perf_counter()
                train_local(model, x, y, epochs=EPOCHS, batch_size=BATCH, lr=0.1, optimizer="sgd", seed=r,
                            dp=DPSettings(1.0, 1.0, 1e-5, []))
                times[name].append(time.perf_counter() - t0)
        training.reseed_from_os = fresh
        med = {k: statistics.median(v) for k, v in times.items()}
        out["seconds_median"][kind] = {**{k: round(v, 3) for k, v in med.items()},
                                       "ratio": round(med["os-entropy"] / med["seeded"], 3)}
        print(kind, out["seconds_median"][kind], file=sys.stdout, flush=True)
    path = RESULTS.with_name("noise_source.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


def main() -> None:
    import sys
    if "--noise-source" in sys.argv:
        noise_source()
        return
    torch.set_num_threads(1)
    x, y = data()
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "torch": torch.__version__, "threads": torch.get_num_threads()},
                 "date": time.strftime("%Y-%m-%d"), "rows": ROWS, "batch": BATCH, "epochs": EPOCHS, "models": {}}
    for kind in ("logistic", "mlp"):
        plain = seconds(kind, x, y, None)
        row: dict = {"plain_seconds": round(plain, 3), "dp": {}}
        for mode in MODES:
            try:
                t = seconds(kind, x, y, mode)
                row["dp"][mode] = {"seconds": round(t, 3), "ratio": round(t / plain, 2)}
            except Exception as exc:  # noqa: BLE001 - a mode Opacus refuses for this model is a result too
                row["dp"][mode] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        out["models"][kind] = row
        print(kind, json.dumps(row), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
