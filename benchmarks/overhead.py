"""How close fedcrm stays to the engines it stands on (issue 17), measured side by side in
one run: the local training loop against a plain torch loop on the same tensors, DP-SGD
per Opacus grad-sample mode against our own loop without DP, the command line's start-up
against Flower's, and simulated rounds against a bare Flower app.

    .venv/bin/python benchmarks/overhead.py            # → benchmarks/results/overhead.{json,md}, ~60 min
    .venv/bin/python benchmarks/overhead.py --sections simulation --partners 5 100

- **Training loop.** 40,000 rows × 66 columns (UCI Bank Marketing's size), batch 256,
  2 epochs, one thread (a node sharing 2 cores), models logistic, MLP(32) and MLP(256).
  The plain loop: a fresh permutation per epoch, tensors sliced by it, BCE, SGD, nothing
  else. `train_local` without DP, then with DP-SGD at σ 1, C 1, in each grad-sample mode.
  Each variant's repeats are interleaved with the others' (median of 5), after one
  warm-up pass of everything, so warm-up and drift fall on all alike.
  One more DP run per model, in the mode `grad_sample_mode` picks, under cProfile: the
  share of it under Opacus' hooks, clipping, noise, the backward passes and our sampler.
- **Start-up.** Wall time of `fedcrm --help`, `fedcrm partner check --help`,
  `flwr --help` and `python -c pass` as subprocesses (median of 5), and of importing our
  ClientApp (with and without Opacus) and the bare one in a fresh process: what every
  message of a deployed SuperNode pays before it starts.
- **Simulation.** IBM Telco split IID over N partners (copies with new ids where N needs
  more rows, about 60 rows a partner), prepared beforehand (the node's cache), no DP, one
  local epoch of batch 64 (one step), evaluation every round. The reference is
  `benchmarks/bare_flower/`: Flower's own FedAvg over a model of the same width, one SGD
  step a partner on rows of the same count, a federated evaluation every round. Both go
  through the same launcher (our SuperLink, `flwr run`, 1 CPU a simulated node, so two
  Ray actors on 2 cores), alternately, `--repeats` times. Round times come from the runs'
  own files (our per-round checkpoints, the bare app's marks), never from polling Flower:
  per round = (round R − round 1) / (R − 1); start-up = from `flwr run` to round 1's end,
  less one such round. Ours evaluates the starting model at round 0 (one more federated
  evaluation inside its start-up); the bare app's round 0 is its ServerApp alone. While a
  run goes, the CPU seconds of its processes are sampled (`CpuMeter`: the ServerApp's
  process, the Ray actors), so a round's CPU is read beside its wall time. At 100
  partners both ClientApps also answer every partner's messages in this process, as an
  actor would (`message_costs`): milliseconds a message and where ours spends them.
- **Deployment.** One loopback federation (`fedcrm.sandbox.loopback`: a TLS SuperLink
  with node authentication and three SuperNodes, the demo's partners over IBM Telco's
  split, every process real) serves both apps in turn, `--repeats` times: ours without
  DP (as the bare app), ours at ε = 3 (what a consortium runs), and the bare app, every
  partner required, evaluation every round. Per round and start-up as in the simulation.
  Its SuperNodes log at Flower's DEBUG level, and each message is cut into the phases of
  its `flwr-clientapp` process (`benchmarks/clientapp_phases.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedcrm.ml.models import build_model
from fedcrm.ml.training import DPSettings, grad_sample_mode, train_local

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "overhead"
BARE_APP = ROOT / "benchmarks" / "bare_flower"
SIM_ROUNDS, SIM_ROWS = 8, 60
DEPLOY_ROUNDS = 4
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


# Where a DP-SGD step goes: cumulative seconds under these functions in one profiled run
# (cProfile, so slower than the timed runs; read them as shares of `total`).
DP_PARTS = {
    "per-sample gradients or norms (Opacus' backward hooks)": ("capture_backprops_hook", "capture_activations_hook"),
    "clipping and summing (hooks mode)": ("clip_and_accumulate",),
    "noise": ("add_noise",),
    "scaling and bookkeeping": ("scale_grad", "accumulate", "zero_grad"),
    "every backward pass (ghost: two a step), hooks included": ("run_backward",),
    "forward passes": ("_wrapped_call_impl",),
    "Poisson batches (our sampler)": ("PoissonBatches.__iter__",),
}


def dp_profile(kind: str, hidden: int, x: np.ndarray, y: np.ndarray, mode: str) -> dict:
    """One DP run in `mode` under cProfile: the seconds under each of `DP_PARTS`."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    ours(kind, hidden, x, y, 7, mode)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    under: dict[str, float] = {}
    for (file, line, func), (_, _, _, cum, callers) in stats.items():
        name = func.split("'")[1] if func.startswith("<method '") else func  # a C method: its own name
        if any(c[2] == func and c != (file, line, func) for c in callers):
            continue  # an override calling the method it overrides: count the outer one
        if func == "__iter__" and file.endswith("training.py"):
            name = "PoissonBatches.__iter__"
        under[name] = under.get(name, 0.0) + cum
    parts = {label: round(sum(under.get(f, 0.0) for f in funcs), 3) for label, funcs in DP_PARTS.items()}
    return {"mode": mode, "total": round(under["train_local"], 3), "parts": parts}


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
        default_mode = grad_sample_mode(kind)
        out[name] = {"seconds_median": {v: round(t, 3) for v, t in med.items()},
                     "train_local_over_plain": round(med["train_local"] / med["plain_torch"], 2),
                     **{f"dp_{m}_over_train_local": round(med[f"dp_{m}"] / med["train_local"], 2) for m in MODES},
                     "fastest_dp_mode": best, "default_dp_mode": default_mode,
                     "dp_profile": dp_profile(kind, hidden, x, y, default_mode)}
        print(name, json.dumps(out[name]), flush=True)
    return out


def startup() -> dict:
    bin_dir = Path(sys.executable).parent
    commands = {"python -c pass": [sys.executable, "-c", "pass"],
                "fedcrm --help": [str(bin_dir / "fedcrm"), "--help"],
                "fedcrm partner check --help": [str(bin_dir / "fedcrm"), "partner", "check", "--help"],
                "flwr --help": [str(bin_dir / "flwr"), "--help"],
                # what a deployed SuperNode's fresh ClientApp process imports before its message
                "import our ClientApp": [sys.executable, "-c", "import clients.client_app"],
                "import our ClientApp and Opacus (a DP message)": [sys.executable, "-c",
                                                                   "import clients.client_app, opacus"],
                "import the bare ClientApp": [sys.executable, "-c",
                                              f"import sys; sys.path.insert(0, {str(BARE_APP)!r}); import bare_flower.app"]}
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


def consortium(n: int, work: Path) -> tuple[Path, int]:
    """N partners of IBM Telco, each node's prepared data cached; the matrix width."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from simulation_overhead import telco_at_least

    from fedcrm.config import FederationConfig, PartnerConfig
    from fedcrm.data.prepare import prepare
    from fedcrm.sandbox.public_data import split_telco

    shutil.rmtree(work, ignore_errors=True)
    fed = split_telco(work / "consortium", by="iid", partners=n, seed=0, csv=telco_at_least(SIM_ROWS * n, work),
                      benchmark_policy=True)
    widths = {prepare(PartnerConfig.load(m.config), "churn").x_train.shape[1] for m in FederationConfig.load(fed).members}
    return fed, max(widths)


def round_times(ends: list[float], rounds: int) -> dict:
    """Per round = (round R − round 1) / (R − 1); start-up = round 1's end less one round."""
    per_round = (ends[rounds] - ends[1]) / (rounds - 1)
    return {"per_round": round(per_round, 3), "startup": round(ends[1] - per_round, 2),
            "round_0": round(ends[0], 2), "last_round": round(ends[rounds], 2)}


class CpuMeter:
    """CPU seconds of a simulation's processes, sampled while its run goes: the process
    that runs the ServerApp, Flower's link state and the Ray driver (`flwr-simulation`),
    and the Ray actors that run the ClientApp. On 2 cores a round is bound by their sum."""

    GROUPS = {"serverapp": "flwr-simulation", "actors": "ClientAppActor"}

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.procs: dict[int, tuple[str, object]] = {}
        self.last: dict[int, float] = {}
        self.scanned = -math.inf

    def sample(self) -> None:
        import psutil

        now = time.time()
        if now - self.scanned > 5:  # new processes (the actors start after the ServerApp)
            self.scanned = now
            for proc in psutil.process_iter(["pid", "cmdline"]):
                line = " ".join(proc.info["cmdline"] or [])
                group = next((g for g, mark in self.GROUPS.items() if mark in line), None)
                if group and proc.pid not in self.procs:
                    self.procs[proc.pid] = (group, proc)
        totals = dict.fromkeys(self.GROUPS, 0.0)
        for pid, (group, proc) in self.procs.items():
            try:
                t = proc.cpu_times()  # type: ignore[attr-defined]
                self.last[pid] = t.user + t.system
            except psutil.Error:
                pass  # ended: its last reading stands
            totals[group] += self.last.get(pid, 0.0)
        self.samples.append((now, totals))

    def at(self, when: float) -> dict[str, float]:
        """The readings of the last sample taken by `when`."""
        before = [totals for t, totals in self.samples if t <= when]
        return before[-1] if before else dict.fromkeys(self.GROUPS, 0.0)


def timed_run(link_dir: Path, app: Path, config: dict, n: int, marks: Callable[[], list[float]]) -> dict:
    """One run on a SuperLink of its own: seconds from `flwr run` to each round's end, and
    the CPU seconds a round costs each group of processes (`CpuMeter`)."""
    from fedcrm.ops.launcher import SimulationLink

    meter = CpuMeter()

    def ended() -> bool:
        meter.sample()
        return len(marks()) > SIM_ROUNDS

    with SimulationLink(link_dir) as link:
        t0 = time.time()
        run_id = link.cli.submit(app, config, {"num-supernodes": n, "client-resources-num-cpus": 1})
        status = link.cli.wait(run_id, timeout=3600, poll=0.5, ended=ended)
    stamps = marks()
    ends = [t - t0 for t in stamps]
    if status != "finished:completed" or len(ends) != SIM_ROUNDS + 1:
        raise SystemExit(f"{app.name} with {n} partners ended {status} after {len(ends)} rounds")
    first, last = meter.at(stamps[1]), meter.at(stamps[SIM_ROUNDS])
    cpu = {g: round((last[g] - first[g]) / (SIM_ROUNDS - 1), 2) for g in CpuMeter.GROUPS}
    return {**round_times(ends, SIM_ROUNDS), "cpu_per_round": cpu}


def checkpoint_times(run_dir: Path) -> list[float]:
    folder = run_dir / "checkpoints"
    return sorted(p.stat().st_mtime for p in folder.glob("round-*.pt")) if folder.is_dir() else []


def mark_times(marks: Path) -> list[float]:
    return sorted(float(p.read_text()) for p in marks.glob("round-*")) if marks.is_dir() else []


def deployed_times(cli, run_id: int, t0: float, ends: Callable[[], list[float]], label: str) -> dict:  # noqa: ANN001
    """Wait for a deployed run to end, then its round times from its own files (`ends`);
    a run that did not complete every round stops the benchmark."""
    status = cli.wait(run_id, timeout=3600, poll=1.0, ended=lambda: len(ends()) > DEPLOY_ROUNDS)
    got = [t - t0 for t in ends()]
    if status != "finished:completed" or len(got) != DEPLOY_ROUNDS + 1:
        raise SystemExit(f"deployed {label} ended {status} after {len(got)} rounds")
    return round_times(got, DEPLOY_ROUNDS)


def deployment(repeats: int) -> dict:
    """Ours (no DP, ε = 3) and the bare app in turn on one loopback federation (module docstring)."""
    import tempfile

    from fedcrm.config import FederationConfig, PartnerConfig
    from fedcrm.data.prepare import prepare
    from fedcrm.ops.launcher import FLWR_ENV
    from fedcrm.ops.runs import launch
    from fedcrm.sandbox.loopback import LoopbackFederation
    from fedcrm.sandbox.public_data import split_telco

    os.environ.update(FLWR_ENV)
    os.environ["FLWR_LOG_LEVEL"] = "DEBUG"  # every phase of a ClientApp process, timestamped (`clientapp_phases`)
    times: dict[str, list[dict]] = {"fedcrm_no_dp": [], "fedcrm_eps3": [], "bare_flower": []}
    windows: dict[str, list[tuple[float, float]]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory(prefix="fedcrm-overhead-") as tmp:
        root = Path(tmp)
        fed = split_telco(root / "consortium", by="iid", partners=3, seed=0, benchmark_policy=True)
        federation = LoopbackFederation(root, fed, name="overhead").start()
        try:
            cli, common = federation.layout.cli(), {"num-server-rounds": DEPLOY_ROUNDS, "min-partners": 3,
                                                    "round-timeout": 600}
            width = prepare(PartnerConfig.load(FederationConfig.load(fed).members[0].config), "churn").x_train.shape[1]
            for r in range(repeats):
                for variant, extra in (("fedcrm_no_dp", {"dp-enabled": False}),
                                       ("fedcrm_eps3", {"dp-target-epsilon": 3.0})):
                    run_dir = root / f"run-{variant}-{r}"
                    t0 = time.time()
                    run_id = launch(federation.layout, run_dir, {**common, **extra})
                    times[variant].append(deployed_times(cli, run_id, t0, lambda d=run_dir: checkpoint_times(d), variant))
                    windows[variant].append((t0, time.time()))
                marks = root / f"marks-{r}"
                t0 = time.time()
                run_id = cli.submit(BARE_APP, {"num-server-rounds": DEPLOY_ROUNDS, "width": width, "rows": 1500,
                                               "nodes": 3, "marks": str(marks)})
                times["bare_flower"].append(deployed_times(cli, run_id, t0, lambda m=marks: mark_times(m), "bare app"))
                windows["bare_flower"].append((t0, time.time()))
                print("deployment", r, json.dumps({k: v[-1] for k, v in times.items()}), flush=True)
        finally:
            federation.stop()
            os.environ.pop("FLWR_LOG_LEVEL", None)
        from clientapp_phases import phases  # benchmarks/, beside this script

        message_phases = phases(sorted(root.rglob("supernode.log")), windows)
    med = {k: {f: round(statistics.median(t[f] for t in v), 2) for f in ("per_round", "startup")}
           for k, v in times.items()}
    return {"partners": 3, "rounds": DEPLOY_ROUNDS, "runs": times, "median": med, "phases": message_phases,
            "per_round_ratio_no_dp": round(med["fedcrm_no_dp"]["per_round"] / med["bare_flower"]["per_round"], 2),
            "per_round_ratio_eps3": round(med["fedcrm_eps3"]["per_round"] / med["bare_flower"]["per_round"], 2)}


# Where our ClientApp spends a warm message (`message_costs`): cumulative seconds under these.
MESSAGE_PARTS = {
    "egress allow-list check and log": ("egress_guard", "-fresh_only"),
    "train: the local step (train_local)": ("train_local",),
    "train: the rest of the node's round": ("PartnerNode.train", "-train_local"),
    "evaluate: scoring and exact metrics (evaluate_local)": ("evaluate_local",),
    "evaluate: the rest of the node's release": ("PartnerNode.evaluate", "-evaluate_local"),
    "handlers: message in, records out": ("train", "evaluate", "-PartnerNode.train", "-PartnerNode.evaluate"),
}


def message_costs(fed: Path, width: int, n: int) -> dict:
    """Our ClientApp and the bare app's, each answering a train and an evaluate message for
    every one of `n` partners in this one process, as a Ray actor runs them: milliseconds a
    message, warm (the second round; the first builds each node), and where ours spends a
    warm round (one more, under cProfile: shares, since the profiler slows it)."""
    import cProfile
    import pstats

    from flwr.app import ArrayRecord, Context, MessageType, RecordDict
    from fresh_message import message  # benchmarks/, beside this script

    from clients.client_app import app as ours_app
    from fedcrm.config import TrainPlan

    sys.path.insert(0, str(BARE_APP))
    from bare_flower.app import client as bare_app
    from bare_flower.app import model as bare_model

    torch.set_num_threads(1)
    plan = TrainPlan.from_run_config({
        "num-server-rounds": SIM_ROUNDS, "dp-enabled": False, "local-epochs": 1, "batch-size": 64,
        "federated-stats": False, "round-timeout": 3600, "min-partners": n, "federation-config": str(fed.resolve()),
        "run-dir": str((fed.parent / "messages-run").resolve())})
    apps = {
        "fedcrm": (ours_app, plan.to_run_config(exclude_unset=True),
                   ArrayRecord(build_model("logistic", width).state_dict())),
        "bare_flower": (bare_app, {"num-server-rounds": SIM_ROUNDS, "width": width, "hidden": 0, "rows": SIM_ROWS,
                                   "nodes": n, "marks": "unused"}, ArrayRecord(bare_model(width, 0).state_dict())),
    }

    def answer(name: str, server_round: int) -> float:
        app, run_config, arrays = apps[name]
        t0 = time.perf_counter()
        for i in range(n):
            context = contexts[name][i]
            for kind in (MessageType.TRAIN, MessageType.EVALUATE):
                reply = app(message(kind, i + 1, server_round, arrays, 77), context)
                if reply.has_error():
                    raise SystemExit(f"{name}: {reply.error.reason}")
        return (time.perf_counter() - t0) / (2 * n) * 1000

    contexts = {name: [Context(run_id=77, node_id=i + 1, node_config={"partition-id": i, "num-partitions": n},
                               state=RecordDict(), run_config=run_config) for i in range(n)]
                for name, (_, run_config, _) in apps.items()}
    out: dict = {}
    for name in apps:
        first = answer(name, 1)
        out[name] = {"first_ms": round(first, 2), "warm_ms": round(statistics.median(answer(name, r) for r in (2, 3, 4)), 2)}
    profiler = cProfile.Profile()
    profiler.enable()
    answer("fedcrm", 5)
    profiler.disable()
    under: dict[str, float] = {}
    for (file, _, func), (_, _, _, cum, _) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        if func == "__call__" and file.endswith(os.path.join("clientapp", "client_app.py")):
            func = "ClientApp.__call__"
        elif file.endswith("partner.py") and func in ("train", "evaluate"):
            func = f"PartnerNode.{func}"
        elif func in ("train", "evaluate") and not file.endswith("client_app.py"):
            continue
        under[func] = under.get(func, 0.0) + cum
    total = under["ClientApp.__call__"]
    parts = {label: round(sum(-under.get(f[1:], 0.0) if f.startswith("-") else under.get(f, 0.0) for f in funcs)
                          / total, 3) for label, funcs in MESSAGE_PARTS.items()}
    out["fedcrm"]["profile_shares"] = parts
    out["ratio_warm"] = round(out["fedcrm"]["warm_ms"] / out["bare_flower"]["warm_ms"], 2)
    return out


def fresh_messages(root: Path) -> dict:
    """One partner's messages of a run, each in a fresh process as a deployed SuperNode
    answers them (`benchmarks/fresh_message.py`), one after another, without DP and at
    ε = 3: where a deployed message's seconds go, without the polling around it."""
    from fedcrm.config import FederationConfig, PartnerConfig
    from fedcrm.data.prepare import prepare
    from fedcrm.sandbox.public_data import split_telco

    config = FederationConfig.load(split_telco(root / "fresh", by="iid", partners=3, seed=0, benchmark_policy=True))
    partner = config.members[0].config
    width = prepare(PartnerConfig.load(partner), "churn").x_train.shape[1]
    out: dict = {}
    for variant, extra, run_id in (("fedcrm_no_dp", {"dp-enabled": False}, 901),
                                   ("fedcrm_eps3", {"dp-target-epsilon": 3.0}, 902)):
        run_config = {"num-server-rounds": DEPLOY_ROUNDS, "min-partners": 1, "federated-stats": False,
                      "contract-digest": config.contract_digest(), **extra}
        state = root / f"fresh-{variant}.pt"
        torch.save(build_model("logistic", width).state_dict(), state)
        rows = []
        for server_round in range(1, DEPLOY_ROUNDS + 1):
            for kind in ("train", "evaluate"):
                proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fresh_message.py"), kind, str(partner),
                                       str(server_round), str(state), json.dumps(run_config), str(run_id)],
                                      capture_output=True, text=True, cwd=ROOT, check=False)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("{")), None)
                if line is None:
                    raise SystemExit(f"fresh {variant} {kind} round {server_round}: {proc.stderr[-600:]}")
                rows.append(json.loads(line))
        later = [r["answer_s"] for r in rows if r["kind"] == "train" and r["round"] > 1]
        out[variant] = {"messages": rows, "import_s": round(statistics.median(r["import_s"] for r in rows), 2),
                        "train_round_1_s": rows[0]["answer_s"], "train_later_s": round(statistics.median(later), 2),
                        "evaluate_s": round(statistics.median(r["answer_s"] for r in rows if r["kind"] == "evaluate"), 2),
                        "opacus_loaded": {k: sum(r["opacus_loaded"] for r in rows if r["kind"] == k)
                                          for k in ("train", "evaluate")},
                        "pandas_loaded": sum(r.get("pandas_loaded", False) for r in rows)}
        print("fresh messages", variant, json.dumps({k: v for k, v in out[variant].items() if k != "messages"}),
              flush=True)
    return out


def simulation(partners: list[int], repeats: int) -> dict:
    """Ours and the bare app, alternately, `repeats` times per size (module docstring); at
    100 partners also both ClientApps in this process (`message_costs`)."""
    from fedcrm.config import TrainPlan
    from fedcrm.ops.app import default_app_dir
    from fedcrm.ops.launcher import FLWR_ENV

    os.environ.update(FLWR_ENV)
    out: dict = {}
    for n in partners:
        work = ROOT / ".work" / "overhead" / f"n{n}"
        fed, width = consortium(n, work)
        if n == 100:
            out["messages"] = {"partners": n, **message_costs(fed, width, n)}
            print("messages", json.dumps(out["messages"]), flush=True)
        times: dict[str, list[dict]] = {"fedcrm": [], "bare_flower": []}
        for r in range(repeats):
            run_dir = work / f"run-{r}"
            plan = TrainPlan.from_run_config({
                "num-server-rounds": SIM_ROUNDS, "dp-enabled": False, "local-epochs": 1, "batch-size": 64,
                "federated-stats": False, "round-timeout": 3600, "min-partners": n,
                "federation-config": str(fed.resolve()), "run-dir": str(run_dir.resolve())})
            times["fedcrm"].append(timed_run(
                work / "flower", default_app_dir(), plan.to_run_config(exclude_unset=True), n,
                lambda d=run_dir: checkpoint_times(d)))
            marks = work / f"marks-{r}"
            times["bare_flower"].append(timed_run(
                work / "flower", BARE_APP, {"num-server-rounds": SIM_ROUNDS, "width": width, "rows": SIM_ROWS,
                                            "nodes": n, "marks": str(marks)}, n,
                lambda m=marks: mark_times(m)))
            print(n, r, json.dumps({k: v[-1] for k, v in times.items()}), flush=True)
        med = {k: {**{f: round(statistics.median(t[f] for t in v), 3) for f in ("per_round", "startup", "round_0")},
                   "cpu_per_round": {g: round(statistics.median(t["cpu_per_round"][g] for t in v), 2)
                                     for g in CpuMeter.GROUPS}}
               for k, v in times.items()}
        out[str(n)] = {"width": width, "runs": times, "median": med,
                       "per_round_ratio": round(med["fedcrm"]["per_round"] / med["bare_flower"]["per_round"], 2),
                       "startup_gap": round(med["fedcrm"]["startup"] - med["bare_flower"]["startup"], 1)}
    return out


def markdown(result: dict) -> str:
    lines = [f"Command: `{result['command']}` ({result['date']})", ""]
    if result.get("kept_from_earlier"):
        lines += [f"Kept from an earlier run of the script (not measured by this command): "
                  f"{', '.join(result['kept_from_earlier'])}.", ""]
    if "training" in result:
        lines += [f"Training loop: {ROWS:,} rows × {WIDTH} columns, batch {BATCH}, {EPOCHS} epochs, 1 thread, median "
                  f"of {REPEATS} interleaved repeats (seconds; ratios in brackets):", "",
                  "| model | plain torch | train_local | DP hooks | DP functorch | DP ghost |", "|---|---|---|---|---|---|"]
        for name, r in result["training"].items():
            s = r["seconds_median"]
            lines.append(f"| {name} | {s['plain_torch']:.3f} | {s['train_local']:.3f} ({r['train_local_over_plain']}× "
                         "plain) | " + " | ".join(f"{s[f'dp_{m}']:.3f} ({r[f'dp_{m}_over_train_local']}×)" for m in MODES)
                         + " |")
        lines += ["", "DP ratios are against `train_local` without DP.", ""]
        profiled = {name: r["dp_profile"] for name, r in result["training"].items() if "dp_profile" in r}
        if profiled:
            labels = list(next(iter(profiled.values()))["parts"])
            lines += ["Where a DP-SGD run goes, in the mode `grad_sample_mode` picks (one run under cProfile, which "
                      "slows it: share of the run under each; the parts overlap, hooks run inside backward passes):", "",
                      "| part | " + " | ".join(f"{n} ({p['mode']}, {p['total']:.2f} s profiled)"
                                                for n, p in profiled.items()) + " |",
                      "|---|" + "---|" * len(profiled)]
            lines += [f"| {label} | " + " | ".join(f"{p['parts'][label] / p['total']:.0%}" for p in profiled.values())
                      + " |" for label in labels]
            lines.append("")
    if "startup" in result:
        lines += [f"Start-up, wall seconds (median of {REPEATS}):", "", "| command | seconds |", "|---|---|"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in result["startup"].items()] + [""]
    if "simulation" in result:
        lines += [f"Simulation, {SIM_ROUNDS} rounds, no DP, median of the repeats (seconds; module docstring):", "",
                  "| partners | per round, fedcrm | per round, bare Flower | ratio | start-up, fedcrm "
                  "| start-up, bare Flower | gap | round 0 ends, fedcrm / bare |", "|---|---|---|---|---|---|---|---|"]
        for n, r in result["simulation"].items():
            m = r["median"]
            lines.append(f"| {n} | {m['fedcrm']['per_round']:.2f} | {m['bare_flower']['per_round']:.2f} | "
                         f"{r['per_round_ratio']}× | {m['fedcrm']['startup']:.1f} | {m['bare_flower']['startup']:.1f} | "
                         f"{r['startup_gap']:+.1f} | " + " / ".join(
                             f"{m[a]['round_0']:.1f}" if "round_0" in m[a] else "-" for a in ("fedcrm", "bare_flower"))
                         + " |")
        cpu = {n: r["median"] for n, r in result["simulation"].items() if "cpu_per_round" in r["median"]["fedcrm"]}
        if cpu:
            lines += ["", "CPU seconds a round (median of the repeats; `CpuMeter`): the process running the ServerApp, "
                      "Flower's link state and the Ray driver, and the Ray actors running the ClientApp. Two cores "
                      "give at most 2 CPU seconds a wall second.", "",
                      "| partners | ServerApp process, fedcrm | ServerApp process, bare | actors, fedcrm | actors, bare |",
                      "|---|---|---|---|---|"]
            lines += [f"| {n} | {m['fedcrm']['cpu_per_round']['serverapp']:.1f} | "
                      f"{m['bare_flower']['cpu_per_round']['serverapp']:.1f} | "
                      f"{m['fedcrm']['cpu_per_round']['actors']:.1f} | {m['bare_flower']['cpu_per_round']['actors']:.1f} |"
                      for n, m in cpu.items()]
    if result.get("messages"):
        msgs = result["messages"]
        ours, bare = msgs["fedcrm"], msgs["bare_flower"]
        lines += ["", f"One ClientApp process answering a train and an evaluate message for each of {msgs['partners']} "
                  "partners, as a Ray actor runs them (milliseconds a message; first: the round that builds each "
                  "node; warm: median of three later rounds):", "",
                  "| app | first round | warm |", "|---|---|---|",
                  f"| fedcrm | {ours['first_ms']:.2f} | {ours['warm_ms']:.2f} ({msgs['ratio_warm']}×) |",
                  f"| bare Flower | {bare['first_ms']:.2f} | {bare['warm_ms']:.2f} |", "",
                  "Where ours spends a warm message (one round under cProfile; share of the ClientApp call):", "",
                  "| part | share |", "|---|---|"]
        lines += [f"| {label} | {share:.0%} |" for label, share in ours["profile_shares"].items()]
    if "deployment" in result:
        d = result["deployment"]
        m = d["median"]
        lines += ["", f"Deployment on loopback, {d['partners']} partners, TLS, {d['rounds']} rounds, median of the repeats "
                  "(seconds):", "", "| app | per round | start-up |", "|---|---|---|"]
        for k, label in (("fedcrm_no_dp", "fedcrm, no DP"), ("fedcrm_eps3", "fedcrm, ε = 3"),
                         ("bare_flower", "bare Flower")):
            lines.append(f"| {label} | {m[k]['per_round']:.1f} | {m[k]['startup']:.1f} |")
        if d.get("phases"):
            from clientapp_phases import PHASES

            lines += ["", "Where a deployed message's seconds go, from the SuperNodes' DEBUG logs (`clientapp_phases`; "
                      "median seconds a message, every repeat; only 'ClientApp import and answer' is the app's):", "",
                      "| app | message | count | " + " | ".join(PHASES) + " |", "|---|---|---|" + "---|" * len(PHASES)]
            for k, label in (("fedcrm_no_dp", "fedcrm, no DP"), ("fedcrm_eps3", "fedcrm, ε = 3"),
                             ("bare_flower", "bare Flower")):
                for kind, ph in d["phases"].get(k, {}).items():
                    lines.append(f"| {label} | {kind} | {ph['messages']} | "
                                 + " | ".join(f"{ph[name]:.2f}" for name in PHASES) + " |")
    if "fresh" in result:
        lines += ["", f"One partner's {DEPLOY_ROUNDS} rounds, each message in a fresh process as a deployed SuperNode "
                  "answers it, one after another on an idle machine (seconds; `fresh_messages`; answering includes "
                  "any import of Opacus):", "",
                  "| app | importing the ClientApp | train, round 1 | train, later rounds | evaluate "
                  "| messages that loaded Opacus (train, evaluate) | messages that loaded pandas |",
                  "|---|---|---|---|---|---|---|"]
        for k, label in (("fedcrm_no_dp", "fedcrm, no DP"), ("fedcrm_eps3", "fedcrm, ε = 3")):
            f = result["fresh"][k]
            lines.append(f"| {label} | {f['import_s']:.2f} | {f['train_round_1_s']:.2f} | {f['train_later_s']:.2f} | "
                         f"{f['evaluate_s']:.2f} | {f['opacus_loaded']['train']} of {DEPLOY_ROUNDS}, "
                         f"{f['opacus_loaded']['evaluate']} of {DEPLOY_ROUNDS} | "
                         f"{f.get('pandas_loaded', '–')} of {2 * DEPLOY_ROUNDS} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="*", default=["training", "startup", "simulation", "deployment", "fresh"],
                        choices=["training", "startup", "simulation", "deployment", "fresh"])
    parser.add_argument("--partners", nargs="*", type=int, default=[5, 100, 1000])
    parser.add_argument("--repeats", type=int, default=2, help="simulated runs of each app per size")
    args = parser.parse_args()
    result: dict = {"command": " ".join([".venv/bin/python benchmarks/overhead.py", *sys.argv[1:]]),
                    "date": time.strftime("%Y-%m-%d %H:%M"),
                    "machine": {"python": platform.python_version(), "torch": torch.__version__,
                                "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}}
    if "training" in args.sections:
        result["training"] = training()
    if "startup" in args.sections:
        result["startup"] = startup()
    if "simulation" in args.sections:
        result["simulation"] = simulation(args.partners, args.repeats)
        if messages := result["simulation"].pop("messages", None):
            result["messages"] = messages
    if "deployment" in args.sections:
        result["deployment"] = deployment(args.repeats)
    if "fresh" in args.sections:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="fedcrm-fresh-") as tmp:
            result["fresh"] = fresh_messages(Path(tmp))
    old = json.loads(RESULTS.with_suffix(".json").read_text()) if RESULTS.with_suffix(".json").is_file() else {}
    # sections not measured by this command keep their last figures
    for section in ("training", "startup", "simulation", "messages", "deployment", "fresh"):
        if section not in result and section in old:
            result[section] = old[section]
            result.setdefault("kept_from_earlier", []).append(section)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=2))
    RESULTS.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
