"""The coordinator's side of a run: aggregation rules, per-partner records, run outputs.

`RecordingStrategy` wraps any Flower strategy (FedAvg by default) the way Flower's own DP
wrappers do: it sees every reply before the inner strategy aggregates it, and records each
partner's numeric metrics — including the ε the partner's node computed for itself — into
the run directory after every round. The server never computes anyone's ε: the partner's
node is the authority on its own budget.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy
from pydantic import BaseModel, Field

from fedcrm.config import FederationConfig, TrainPlan
from fedcrm.node.egress import received_inventory
from fedcrm.coordinator.auditlog import AuditLog
from fedcrm.errors import ERROR_BUDGET, ConfigError
from fedcrm.ml.evaluation import HIST_BINS, pooled_from_histograms
from fedcrm.data.features import feature_names
from fedcrm.ml.fedstats import FeatureStats, Normalisation, PartnerSums, combine
from fedcrm.ml.models import build_model

WEIGHT_KEY = "num-examples"
UNIT_WEIGHT_KEY = "unit-weight"


# ---------------------------------------------------------------- aggregation rules
def _weighted(values: list[float], weights: list[float]) -> float:
    return float(np.average(values, weights=weights)) if sum(weights) > 0 else float("nan")


def aggregate_train_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Weighted mean loss; ε is the *maximum* over partners (budgets never average)."""
    ms = [next(iter(r.metric_records.values())) for r in records]
    w = [float(m[weight_key]) for m in ms]
    out = MetricRecord({"train-loss": _weighted([float(m["train-loss"]) for m in ms], w),
                        "num-partners": len(ms), "num-examples": int(sum(w))})
    eps = [float(m["epsilon"]) for m in ms if "epsilon" in m]
    if eps:
        out["max-epsilon"] = max(eps)
    return out


def _finite_mean(ms: list[MetricRecord], w: list[float], key: str) -> float | None:
    """Weighted mean of `key` over the partners that sent a finite value (NaN: undefined there)."""
    have = [(float(m[key]), wi) for m, wi in zip(ms, w) if key in m and math.isfinite(float(m[key]))]
    return _weighted([v for v, _ in have], [wi for _, wi in have]) if have else None


EXAMPLE_MEANS = ("log-loss", "brier", "accuracy")  # means over rows: the weighted mean is exact
PARTNER_METRICS = ("auc", "pr-auc", "lift-top-decile", "capture-top-decile", "ece")


def aggregate_evaluate_metrics(records: list[RecordDict], weight_key: str = WEIGHT_KEY) -> MetricRecord:
    """Pooled ranking and calibration metrics from summed score histograms; example-weighted
    log-loss, Brier and accuracy; and the example-weighted mean of each partner's own
    ranking metrics (`mean-partner-…`), which ignores the signal between partners."""
    ms = [next(iter(r.metric_records.values())) for r in records]
    w = [float(m[weight_key]) for m in ms]
    out = MetricRecord({"num-examples": int(sum(w)), "num-partners": len(ms)})
    for key in EXAMPLE_MEANS:
        if (mean := _finite_mean(ms, w, key)) is not None:
            out[key] = mean
    pos = np.sum([np.asarray(m["score-hist-pos"]) for m in ms], axis=0)
    neg = np.sum([np.asarray(m["score-hist-neg"]) for m in ms], axis=0)
    for key, value in pooled_from_histograms(pos, neg).items():
        out[key] = value
    for key in PARTNER_METRICS:  # NaN: that partner's held-out rows have one class only
        if (mean := _finite_mean(ms, w, key)) is not None:
            out[f"mean-partner-{key}"] = mean
    return out


# ---------------------------------------------------------------- run records
class RunState(BaseModel):
    """What `resume` needs: the job (the first Flower run id, which keys every partner's
    ledger entries), the Flower runs that worked on it, and the last completed round."""

    job_id: int
    flower_runs: list[int]
    total_rounds: int
    completed_rounds: int = 0

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = run_dir / "state.json"
        if not path.is_file():
            raise ConfigError(f"{run_dir} has no state.json: not a run directory, or it stopped before round 0")
        return cls.model_validate_json(path.read_text())


class PartnerRound(BaseModel):
    query: dict[str, float] = Field(default_factory=dict)  # round 0: the feature-statistics sums
    train: dict[str, float] = Field(default_factory=dict)
    evaluate: dict[str, float] = Field(default_factory=dict)


class RoundRecord(BaseModel):
    round: int
    global_metrics: dict[str, float] = Field(default_factory=dict, alias="global")
    train: dict[str, float] = Field(default_factory=dict)
    partners: dict[str, PartnerRound] = Field(default_factory=dict)
    failures: list[dict[str, str | int]] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list, description="members that did not train this round")

    model_config = {"populate_by_name": True}


class RunRecorder:
    """Writes the run directory as the run goes, so a watcher sees each round land."""

    def __init__(self, run_dir: Path, names: dict[int, str], plan: TrainPlan, run_id: int,
                 state: RunState | None = None) -> None:
        """`state` given: continue an interrupted run's records (its job id stays the run id)."""
        self.dir, self.names, self.plan = run_dir, names, plan
        self.rounds: dict[int, RoundRecord] = {}
        self.node_names: dict[int, str] = {}  # Flower node id → partner, learnt from its replies
        self.client_level: list[dict[str, float]] = []  # central DP: ε after each round
        self.received: dict[str, dict[str, dict]] = {}  # partner → kind → value-free inventory
        self.histograms: dict[int, dict[str, dict[str, list[int]]]] = {}  # round → partner → held-out score counts
        self.normalisation: Normalisation | None = None  # the federation's, published with the model
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        if state is None:
            self.state = RunState(job_id=run_id, flower_runs=[run_id], total_rounds=plan.num_server_rounds)
            (run_dir / "plan.json").write_text(json.dumps({"run_id": run_id, **plan.model_dump()}, indent=2))
        else:
            self.state = state.model_copy(update={"flower_runs": [*state.flower_runs, run_id]})
            self._load_records()
        self.run_id = self.state.job_id

    def _load_records(self) -> None:
        for r in json.loads((self.dir / "metrics.json").read_text())["rounds"]:
            if r["round"] <= self.state.completed_rounds:  # a round cut off mid-way is re-run
                self.rounds[r["round"]] = RoundRecord.model_validate(r)
        eps = json.loads((self.dir / "epsilon.json").read_text())
        self.client_level = [c for c in eps.get("client_level", []) if c["round"] <= self.state.completed_rounds]
        received = self.dir / "received.json"
        if received.is_file():
            self.received = json.loads(received.read_text())["partners"]

    def record_missing(self, server_round: int, kind: str, node_ids: set[int]) -> None:
        """Partners sent a message that did not answer within the round timeout."""
        rec = self.rounds.setdefault(server_round, RoundRecord(round=server_round))
        for node_id in sorted(node_ids):
            rec.failures.append({"kind": kind, "node_id": node_id, "partner": self.node_names.get(node_id, ""),
                                 "code": 0, "reason": "no reply within the round timeout"})

    def name(self, metrics: MetricRecord | dict) -> str:
        pid = int(metrics.get("partner-id", -1))
        return self.names.get(pid, f"partner-{pid}")

    def record(self, server_round: int, kind: str, replies: list[Message]) -> None:
        rec = self.rounds.setdefault(server_round, RoundRecord(round=server_round))
        for msg in replies:
            node_id = int(msg.metadata.src_node_id)
            if msg.has_error():
                rec.failures.append({"kind": kind, "node_id": node_id, "partner": self.node_names.get(node_id, ""),
                                     "code": int(msg.error.code), "reason": str(msg.error.reason)})
                continue
            metrics = msg.content["metrics"]
            scalars = {k: float(v) for k, v in metrics.items() if not isinstance(v, list) and math.isfinite(float(v))}
            self.node_names[node_id] = self.name(metrics)
            self.received.setdefault(self.name(metrics), {})[kind] = received_inventory(msg.content)
            if kind == "evaluate" and "score-hist-pos" in metrics:
                self.histograms.setdefault(server_round, {})[self.name(metrics)] = {
                    "pos": list(metrics["score-hist-pos"]), "neg": list(metrics["score-hist-neg"])}
            part = rec.partners.setdefault(self.name(metrics), PartnerRound())
            setattr(part, kind, scalars)

    def mark_absent(self, server_round: int) -> None:
        """Members that did not train this round — refused, silent, or not connected at all."""
        rec = self.rounds.setdefault(server_round, RoundRecord(round=server_round))
        trained = {n for n, p in rec.partners.items() if p.train}
        rec.absent = sorted(set(self.names.values()) - trained)

    def set_aggregate(self, server_round: int, kind: str, metrics: MetricRecord | None) -> None:
        if metrics is None:
            return
        rec = self.rounds.setdefault(server_round, RoundRecord(round=server_round))
        values = {k: float(v) for k, v in metrics.items() if not isinstance(v, list)}
        if kind == "train":
            rec.train = values
        else:
            rec.global_metrics = values

    def epsilon_by_partner(self) -> dict[str, list[dict[str, float]]]:
        out: dict[str, list[dict[str, float]]] = {}
        for r in sorted(self.rounds):
            for name, part in self.rounds[r].partners.items():
                if "epsilon" in part.train:
                    out.setdefault(name, []).append({"round": r, "epsilon": part.train["epsilon"]})
        return out

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        """The global model after `server_round`, then the state that says it is complete."""
        torch.save(arrays.to_torch_state_dict(), self.checkpoint_path(server_round))
        self.state.completed_rounds = server_round
        _write_json(self.dir / "state.json", self.state.model_dump())

    def checkpoint_path(self, server_round: int) -> Path:
        return self.dir / "checkpoints" / f"round-{server_round:03d}.pt"

    def flush(self) -> None:
        rounds = [self.rounds[r].model_dump(by_alias=True) for r in sorted(self.rounds)]
        _write_json(self.dir / "metrics.json", {"run_id": self.run_id, "rounds": rounds})
        _write_json(self.dir / "received.json", {"run_id": self.run_id, "partners": self.received})
        if self.histograms:  # aggregate counts per score bin; the run report draws ROC, lift and calibration from them
            path = self.dir / "histograms.json"
            kept = {int(k): v for k, v in json.loads(path.read_text())["rounds"].items()} if path.is_file() else {}
            _write_json(path, {"bins": HIST_BINS, "rounds": {**kept, **self.histograms}})
        _write_json(self.dir / "epsilon.json", {"delta": self.plan.dp_delta, "partners": self.epsilon_by_partner(),
                                                "client_level": self.client_level})

    def finish(self, arrays: ArrayRecord, status: str) -> None:
        torch.save(arrays.to_torch_state_dict(), self.dir / "model.pt")
        _write_json(self.dir / "model.json", {"kind": self.plan.model, "hidden": self.plan.model_hidden,
                                               "features": feature_names(), "task": self.plan.task,
                                               "normalisation": self.normalisation.model_dump() if self.normalisation else None})
        self.flush()
        last = self.rounds[max(self.rounds)] if self.rounds else RoundRecord(round=0)
        _write_json(self.dir / "summary.json", {
            "run_id": self.run_id, "status": status, "rounds_completed": self.state.completed_rounds,
            "flower_runs": self.state.flower_runs,
            "final_global": last.global_metrics,
            "epsilon": {n: v[-1]["epsilon"] for n, v in self.epsilon_by_partner().items()},
            "client_level_epsilon": self.client_level[-1]["epsilon"] if self.client_level else None,
        })


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# ---------------------------------------------------------------- the wrapper strategy
class QuorumLost(RuntimeError):
    """Fewer partners than `min_partners` answered a round; the run stops rather than
    publish a model that most of the consortium never saw.

    `budget` is True when every refusal came from a partner's privacy rules (its cap, its
    ledger): the run then *stops* — an expected end, recorded with the partners' reasons
    — rather than fails."""

    def __init__(self, message: str, budget: bool) -> None:
        super().__init__(message)
        self.budget = budget


class RecordingStrategy(Strategy):
    """Delegates to `inner`; records every reply, every silence and every aggregate in a
    `RunRecorder`, and stops the run when fewer than `min_partners` answer without error.

    `offset` maps Flower's round numbers (from 1 in every Flower run) to the job's rounds,
    so a resumed run records round 3 as round 3."""

    def __init__(self, inner: Strategy, recorder: RunRecorder, min_partners: int = 1, offset: int = 0) -> None:
        self.inner, self.recorder, self.min_partners, self.offset = inner, recorder, min_partners, offset
        self.sent: dict[tuple[int, str], set[int]] = {}

    def _check_quorum(self, server_round: int, kind: str, replies: list[Message], asked: int) -> None:
        ok = sum(not m.has_error() for m in replies)
        if ok < self.min_partners:
            errors = [m.error for m in replies if m.has_error()]
            silent = asked - len(replies)
            reasons = "; ".join([str(e.reason) for e in errors] + [f"{silent} gave no reply within the round timeout"] * bool(silent))
            raise QuorumLost(f"round {server_round} {kind}: {ok} of {asked} partners answered, "
                             f"{self.min_partners} needed. Failures: {reasons or 'no replies'}",
                             budget=bool(errors) and not silent and all(int(e.code) == ERROR_BUDGET for e in errors))

    def track_sent(self, server_round: int, kind: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self.sent[(server_round, kind)] = {int(m.metadata.dst_node_id) for m in messages}
        return messages

    def track_replies(self, server_round: int, kind: str, replies: list[Message]) -> int:
        """Record replies and silences under the job's round; returns how many were asked."""
        job_round = server_round + self.offset
        self.recorder.record(job_round, kind, replies)
        asked = self.sent.pop((server_round, kind), set())
        self.recorder.record_missing(job_round, kind, asked - {int(m.metadata.src_node_id) for m in replies})
        if kind == "train":
            self.recorder.mark_absent(job_round)
        self._check_quorum(job_round, kind, replies, max(len(asked), len(replies)))
        return len(asked)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.track_sent(server_round, "train", self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.track_replies(server_round, "train", replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "train", metrics)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.track_sent(server_round, "evaluate", self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        self.track_replies(server_round, "evaluate", replies)
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "evaluate", metrics)
        return metrics


def partner_names(plan: TrainPlan) -> dict[int, str]:
    return FederationConfig.load(plan.federation_config).names() if plan.federation_config else {}


def client_level_dp(inner: FedAvg, plan: TrainPlan, num_partners: int) -> DifferentialPrivacyServerSideFixedClipping:
    """Flower's central DP: clip each partner's update on the server, noise the average,
    account with Flower's RDP accountant (every partner every round: no amplification)."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=plan.dp_delta, population_size=num_partners,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE, sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=plan.client_dp_max_epsilon or None))
    return DifferentialPrivacyServerSideFixedClipping(
        inner, plan.client_dp_noise_multiplier, plan.client_dp_clipping_norm, num_partners, accountant=accountant)


def _audit_round(audit: AuditLog | None, recorder: RunRecorder, job_round: int) -> None:
    if audit is None:
        return
    rec = recorder.rounds.get(job_round)
    if rec is None:
        return
    audit.record("round-completed", actor="serverapp", run_id=recorder.run_id, round=job_round,
                 participants=sorted(n for n, p in rec.partners.items() if p.train),
                 failures=[{"partner": f.get("partner", ""), "kind": f["kind"], "reason": f["reason"]} for f in rec.failures],
                 auc=rec.global_metrics.get("auc"))


def wait_for_nodes(grid: Grid, needed: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= needed or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def federated_statistics(grid: Grid, strategy: RecordingStrategy, plan: TrainPlan, job_id: int) -> FeatureStats:
    """Ask every connected partner for its column sums (a Flower query) and combine them."""
    nodes = wait_for_nodes(grid, plan.min_partners, plan.round_timeout)
    config = ConfigRecord({"job-id": str(job_id)})
    messages = strategy.track_sent(0, "query", [
        Message(RecordDict({"config": config}), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes])
    replies = list(grid.send_and_receive(messages, timeout=plan.round_timeout))
    strategy.track_replies(0, "query", replies)
    sums = []
    for msg in replies:
        if not msg.has_error():
            m = msg.content["metrics"]
            sums.append(PartnerSums(n=float(m["stat-n"]), sum=list(m["stat-sum"]), sumsq=list(m["stat-sumsq"]),
                                    onehot=list(m["stat-onehot"])))
    return combine(sums, noised=plan.stats_noise_multiplier > 0)


def run_federation(grid: Grid, plan: TrainPlan, run_id: int, run_dir: Path) -> Path:
    """Round 0 evaluation, then `num_server_rounds` of FedAvg; outputs in `run_dir`.

    With `plan.resume_from`, continue that run directory after its last completed round:
    same job id (so partners' ledgers see the same run), rounds numbered on, nothing re-run."""
    state = RunState.load(Path(plan.resume_from)) if plan.resume_from else None
    run_dir = Path(plan.resume_from) if state else run_dir
    names = partner_names(plan)
    recorder = RunRecorder(run_dir, names, plan, run_id, state=state)
    audit = AuditLog(Path(plan.audit_log)) if plan.audit_log else None
    offset = state.completed_rounds if state else 0
    inner: Strategy = FedAvg(
        fraction_train=1.0, fraction_evaluate=1.0,
        min_train_nodes=plan.min_partners, min_evaluate_nodes=plan.min_partners,
        min_available_nodes=plan.min_partners,
        # client-level DP bounds each partner's influence, so every partner weighs the same
        weighted_by_key=UNIT_WEIGHT_KEY if plan.client_dp else WEIGHT_KEY,
        train_metrics_aggr_fn=aggregate_train_metrics, evaluate_metrics_aggr_fn=aggregate_evaluate_metrics,
    )
    central = client_level_dp(inner, plan, len(names)) if plan.client_dp else None
    strategy = RecordingStrategy(central or inner, recorder, min_partners=plan.min_partners, offset=offset)
    if state:
        initial = ArrayRecord(torch.load(recorder.checkpoint_path(offset), weights_only=True))
    else:
        initial = ArrayRecord(build_model(plan.model, len(feature_names()), seed=plan.seed,
                                          hidden=plan.model_hidden).state_dict())
    latest = {"arrays": initial}
    if audit:
        audit.record("run-resumed" if state else "run-started", actor="serverapp", run_id=recorder.run_id,
                     flower_run=run_id, from_round=offset, rounds=plan.num_server_rounds, task=plan.task,
                     target_epsilon=plan.dp_target_epsilon if plan.dp_enabled else None, run_dir=str(run_dir))

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        job_round = server_round + offset
        if state and server_round == 0:
            return None  # the resumed-from checkpoint is already on disk
        latest["arrays"] = arrays
        if central is not None and server_round > 0:
            spent = central.privacy_spent()
            recorder.client_level.append({"round": job_round, "epsilon": spent.epsilon, "delta": spent.delta,
                                          "noise_multiplier": plan.client_dp_noise_multiplier,
                                          "clipping_norm": plan.client_dp_clipping_norm})
        recorder.flush()
        recorder.save_checkpoint(job_round, arrays)
        if server_round > 0:
            _audit_round(audit, recorder, job_round)
        return None

    def finish(arrays: ArrayRecord, status: str) -> None:
        recorder.finish(arrays, status=status)
        if audit:
            audit.record("run-finished", actor="serverapp", run_id=recorder.run_id, flower_run=run_id,
                         status=status, rounds_completed=recorder.state.completed_rounds)

    # Every train message says which job and which of its rounds it is: the partner's
    # ledger keys its charges by them, across resumes.
    train_config = ConfigRecord({"job-id": str(recorder.run_id), "round-offset": offset})
    stats_file = run_dir / "feature_stats.json"
    try:
        if plan.federated_stats and not state:
            stats = federated_statistics(grid, strategy, plan, recorder.run_id)
            stats_file.write_text(stats.model_dump_json(indent=2))
        if plan.federated_stats:
            recorder.normalisation = FeatureStats.model_validate_json(stats_file.read_text()).normalisation
            train_config["feature-mean"] = recorder.normalisation.mean
            train_config["feature-std"] = recorder.normalisation.std
        if not state:  # Round 0: how good is the starting model on every partner's held-out data?
            messages = strategy.configure_evaluate(0, initial, train_config, grid)
            strategy.aggregate_evaluate(0, grid.send_and_receive(messages, timeout=plan.round_timeout))
        remaining = plan.num_server_rounds - offset
        if remaining > 0:
            result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=remaining,
                                    timeout=plan.round_timeout, train_config=train_config,
                                    evaluate_config=train_config, evaluate_fn=checkpoint)
            latest["arrays"] = result.arrays if len(result.arrays) else latest["arrays"]
    except QuorumLost as exc:
        if not exc.budget:
            finish(latest["arrays"], status=f"failed: {exc}")
            raise
        # The partners' own caps ended the run: the last aggregated model stands, and the
        # run ends normally with their reasons on record.
        finish(latest["arrays"], status=f"stopped: {exc}")
        return run_dir
    except PrivacyBudgetExhausted as exc:
        finish(latest["arrays"], status=f"stopped: client-level budget: {exc}")
        return run_dir
    finish(latest["arrays"], status="completed")
    return run_dir
