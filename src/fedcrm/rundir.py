"""The run directory: every file a run leaves, its name, its schema, one writer, one reader.

    plan.json            the run id and its TrainPlan
    state.json           what `resume` needs: job id, Flower runs, last completed round
    metrics.json         per round: global and per-partner metrics, failures, absent members
    epsilon.json         each partner's cumulative ε after every round (and client-level ε)
    received.json        every record received from each partner: names, types, shapes, no values
    histograms.json      held-out score counts per bin, per partner and round
    feature_stats.json   the federation's feature statistics (before round 0)
    model.pt, model.json the published global model and its layout
    checkpoints/round-NNN.pt
    summary.json         status, rounds completed, final global metrics, final ε
    metrics.csv, .parquet metrics.json flat (CSV every round, Parquet at the end): a row per round and partner (and the pooled
                         "(global)" row), a column per metric, for spreadsheets and dataframes
    flower.json          a simulated run's Flower home (`fedcrm flower ls|log`)
    ledger_receipts.json the coordinator's receipt of each partner's ledger head as the run
                         left it, with every rollback flag and acknowledgement
                         (`fedcrm.coordinator.receipts`); each round's heads are in metrics.json
    audits/, baselines.json, compliance.*, report.html: added by later commands

`json_schemas()` gives the JSON Schema of every JSON file here (`fedcrm report schemas`).

The coordinator writes through `RunDir` while the run goes (each file replaced atomically,
so a watcher never reads half a file); reports, scoring, audits and the CLI read through
it. Run ids are written as strings (see `fedcrm.protocol.RunId`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from fedcrm.config import TrainPlan
from fedcrm.coordinator.receipts import PartnerReceipts
from fedcrm.errors import ConfigError
from fedcrm.data.layout import FeatureLayout
from fedcrm.ml.fedstats import FeatureStats, Normalisation
from fedcrm.protocol import EvaluateAggregate, RunId, TrainReply

if TYPE_CHECKING:
    import torch

PLAN, STATE, METRICS, EPSILON, RECEIVED = "plan.json", "state.json", "metrics.json", "epsilon.json", "received.json"
HISTOGRAMS, FEATURE_STATS, SUMMARY = "histograms.json", "feature_stats.json", "summary.json"
MODEL_META, MODEL_WEIGHTS, CHECKPOINTS, AUDITS, BASELINES = "model.json", "model.pt", "checkpoints", "audits", "baselines.json"
LEDGER_RECEIPTS = "ledger_receipts.json"
METRICS_FLAT = "metrics"  # metrics.csv and metrics.parquet
FLOWER_HOME = "flower.json"  # a simulated run's Flower state, for `fedcrm flower`
TREES = "trees.json"  # boosted trees as plain data (model.pt holds the same arrays)
TREES_LIGHTGBM = "trees.lightgbm.txt"  # the same trees as a LightGBM model of the unstandardised columns


class PlanFile(BaseModel):
    run_id: RunId
    plan: TrainPlan


class RunState(BaseModel):
    """What `resume` needs: the job (the first Flower run id, which keys every partner's
    ledger entries), the Flower runs that worked on it, and the last completed round."""

    job_id: RunId
    flower_runs: list[RunId]
    total_rounds: int
    completed_rounds: int = 0


class Failure(BaseModel):
    kind: str
    node_id: int
    partner: str = ""
    code: int
    reason: str


class PartnerRound(BaseModel):
    """One partner's scalar metrics in one round, keyed as on the wire."""

    query: dict[str, float] = Field(default_factory=dict)  # round 0: the feature-statistics sums
    train: dict[str, float] = Field(default_factory=dict)
    evaluate: dict[str, float] = Field(default_factory=dict)
    baseline: dict[str, float] = Field(default_factory=dict, description="last round only, when the run asks for it: "
                                       "the hold-out metrics of a model trained on this partner's rows alone")

    def trained(self) -> TrainReply | None:
        return TrainReply.from_dict(self.train) if self.train else None


class RoundRecord(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    round: int
    global_metrics: dict[str, float] = Field(default_factory=dict, alias="global")
    train: dict[str, float] = Field(default_factory=dict)
    partners: dict[str, PartnerRound] = Field(default_factory=dict)
    failures: list[Failure] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list, description="members that did not train this round")

    def evaluated(self) -> EvaluateAggregate | None:
        """The round's federated evaluation, once it has landed."""
        return EvaluateAggregate.from_dict(self.global_metrics) if self.global_metrics else None

    def epsilon(self) -> dict[str, float]:
        """Each partner's cumulative ε after this round (its training, its evaluation and, in
        the last round, its local-only baseline), as its node stated it. Round 0's
        evaluation shows in round 1's figure."""
        key, out = TrainReply.key("epsilon"), {}
        for name, p in self.partners.items():
            stated = [v[key] for v in (p.train, p.evaluate if self.round > 0 else {}, p.baseline) if key in v]
            if stated:
                out[name] = max(stated)
        return out


class MetricsFile(BaseModel):
    run_id: RunId
    rounds: list[RoundRecord]


class EpsilonPoint(BaseModel):
    round: int
    epsilon: float


class ClientLevelPoint(EpsilonPoint):
    delta: float
    noise_multiplier: float
    clipping_norm: float


class EpsilonFile(BaseModel):
    delta: float
    partners: dict[str, list[EpsilonPoint]] = Field(default_factory=dict)
    client_level: list[ClientLevelPoint] = Field(default_factory=list)


Inventory = dict[str, dict[str, str]]  # record name → key → type and shape


class ReceivedFile(BaseModel):
    run_id: RunId
    partners: dict[str, dict[str, Inventory]] = Field(default_factory=dict, description="partner → message kind → inventory")


class ScoreHistogram(BaseModel):
    pos: list[int]
    neg: list[int]


class ValueHistogram(BaseModel):
    """A value task's release: hold-out customers by (predicted bin, actual bin), row-major,
    noised on the node; `edges` are the predicted side's, as the round was sent them."""

    counts: list[int]
    edges: list[float]
    cap: float = Field(description="the task's value cap: the scale's top is log1p(cap)")


class SurvivalHistogram(BaseModel):
    """A time-to-churn task's release: hold-out customers by (risk bin, period left in or
    periods + 1: still there), row-major, noised on the node; `edges` are the risk side's
    and `alpha` the period intercepts of the model evaluated, as the round was sent them."""

    counts: list[int]
    edges: list[float]
    periods: int
    period_days: int
    alpha: list[float] = Field(default_factory=list)


class HistogramsFile(BaseModel):
    bins: int
    rounds: dict[int, dict[str, ScoreHistogram]] = Field(default_factory=dict)
    value_rounds: dict[int, dict[str, ValueHistogram]] = Field(
        default_factory=dict, description="a value task's joint histograms, by round and partner")
    survival_rounds: dict[int, dict[str, SurvivalHistogram]] = Field(
        default_factory=dict, description="a time-to-churn task's joint histograms, by round and partner")


class ModelMeta(BaseModel):
    kind: str
    hidden: int = 32
    features: list[str]
    layout: FeatureLayout | None = Field(None, description="how each partner builds the model's inputs from its data")
    task: str
    normalisation: Normalisation | None = None
    contract_digest: str = ""  # the consortium's contract the model was trained under


class FlowerHome(BaseModel):
    """Where a simulated run's Flower state lives (FLWR_HOME, superlink.db, superlink.log),
    so `fedcrm flower ls|log RUN_DIR` can serve it again after the run's SuperLink stopped."""

    home: str
    connection: str
    runs: list[RunId]


class RunSummary(BaseModel):
    run_id: RunId
    status: str
    rounds_completed: int
    flower_runs: list[RunId]
    final_global: dict[str, float]
    epsilon: dict[str, float]
    client_level_epsilon: float | None = None


class LedgerReceiptsFile(BaseModel):
    """The federation's receipts of the run's partners, copied from its receipts file."""

    book: str = Field(description="the federation's receipts file this was copied from")
    partners: dict[str, PartnerReceipts] = Field(default_factory=dict)


class RunDir:
    """One run's directory. `RunDir(path)` opens an existing run; `RunDir.create` starts one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / PLAN).is_file():
            raise ConfigError(f"{self.path} is not a fedcrm run directory (no {PLAN})")

    @classmethod
    def create(cls, path: Path, run_id: int | str, plan: TrainPlan) -> RunDir:
        (Path(path) / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        _write(Path(path) / PLAN, PlanFile(run_id=run_id, plan=plan))
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> RunDir | None:
        """The run in `path`, or None while it has not started writing."""
        return cls(path) if (Path(path) / PLAN).is_file() else None

    # ------------------------------------------------------------ reading
    def _read(self, name: str, model: type[BaseModel]) -> Any:
        file = self.path / name
        if not file.is_file():
            raise ConfigError(f"run directory {self.path} has no {name} (did the run finish?)")
        return model.model_validate_json(file.read_text())

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def run_id(self) -> str:
        return self._read(PLAN, PlanFile).run_id

    @property
    def plan(self) -> TrainPlan:
        return self._read(PLAN, PlanFile).plan

    def state(self) -> RunState:
        if not self.has(STATE):
            raise ConfigError(f"{self.path} has no {STATE}: the run stopped before round 0")
        return self._read(STATE, RunState)

    def metrics(self) -> MetricsFile:
        return self._read(METRICS, MetricsFile)

    def rounds(self) -> list[RoundRecord]:
        """The rounds recorded so far (none before the first lands)."""
        return self.metrics().rounds if self.has(METRICS) else []

    def epsilon(self) -> EpsilonFile | None:
        return self._read(EPSILON, EpsilonFile) if self.has(EPSILON) else None

    def received(self) -> ReceivedFile | None:
        return self._read(RECEIVED, ReceivedFile) if self.has(RECEIVED) else None

    def histograms(self) -> HistogramsFile | None:
        return self._read(HISTOGRAMS, HistogramsFile) if self.has(HISTOGRAMS) else None

    def feature_stats(self) -> FeatureStats:
        return self._read(FEATURE_STATS, FeatureStats)

    def ledger_receipts(self) -> LedgerReceiptsFile | None:
        """None for a run without receipts (before they existed, or no federation config)."""
        return self._read(LEDGER_RECEIPTS, LedgerReceiptsFile) if self.has(LEDGER_RECEIPTS) else None

    def summary(self) -> RunSummary:
        return self._read(SUMMARY, RunSummary)

    def flower_home(self) -> FlowerHome:
        if not self.has(FLOWER_HOME):
            raise ConfigError(f"{self.path} records no Flower home: only a finished `fedcrm run` (simulation) does; "
                              "a deployed run is inspected on its federation's SuperLink (`fedcrm coordinator`)")
        return self._read(FLOWER_HOME, FlowerHome)

    def model_meta(self) -> ModelMeta:
        return self._read(MODEL_META, ModelMeta)

    def layout(self) -> FeatureLayout:
        """How a partner builds the model's inputs: the run's layout (a model published
        before layouts travelled with it: the standard contract's)."""
        from fedcrm.data.layout import standard_layout

        meta = self.model_meta()
        if meta.layout is not None:
            return meta.layout
        layout = standard_layout()
        if layout.names() != meta.features:
            raise ConfigError(f"{self.path}/{MODEL_META}: the model names no layout and its features are not the "
                              "standard contract's")
        return layout

    def normalisation(self) -> Normalisation | None:
        """The federation's feature normalisation the model was trained with, if any."""
        return self.model_meta().normalisation

    def model(self) -> torch.nn.Module:
        """The published global model, as every partner received it."""
        import torch

        from fedcrm.ml.models import model_with_state

        meta = self.model_meta()
        if meta.layout is not None and meta.layout.names() != meta.features:
            raise ConfigError(f"{self.path}/{MODEL_META}: the model's feature layout does not match its feature list")
        return model_with_state(meta.kind, len(meta.features), torch.load(self.path / MODEL_WEIGHTS, weights_only=True),
                                hidden=meta.hidden)

    def checkpoint(self, server_round: int) -> dict[str, torch.Tensor]:
        import torch

        return torch.load(self.checkpoint_path(server_round), weights_only=True)

    def checkpoint_path(self, server_round: int) -> Path:
        return self.path / CHECKPOINTS / f"round-{server_round:03d}.pt"

    def baselines(self, override: Path | None = None) -> dict[str, Any] | None:
        """A baseline table (title, columns, rows) shown beside the run, if there is one."""
        file = override or self.path / BASELINES
        return json.loads(file.read_text()) if file.is_file() else None

    # ------------------------------------------------------------ writing (the coordinator's)
    def write_state(self, state: RunState) -> None:
        _write(self.path / STATE, state)

    def write_records(self, metrics: MetricsFile, received: ReceivedFile, epsilon: EpsilonFile,
                      histograms: dict[int, dict[str, ScoreHistogram]], bins: int,
                      value_histograms: dict[int, dict[str, ValueHistogram]] | None = None,
                      survival_histograms: dict[int, dict[str, SurvivalHistogram]] | None = None) -> None:
        """The per-round records; histograms of earlier Flower runs of the job are kept."""
        _write(self.path / METRICS, metrics)
        _write_csv(self.path / f"{METRICS_FLAT}.csv", flat_metrics(metrics))
        _write(self.path / RECEIVED, received)
        if histograms or value_histograms or survival_histograms:
            kept = self.histograms()
            _write(self.path / HISTOGRAMS, HistogramsFile(
                bins=bins, rounds={**(kept.rounds if kept else {}), **histograms},
                value_rounds={**(kept.value_rounds if kept else {}), **(value_histograms or {})},
                survival_rounds={**(kept.survival_rounds if kept else {}), **(survival_histograms or {})}))
        _write(self.path / EPSILON, epsilon)

    def write_flower_home(self, home: FlowerHome) -> None:
        _write(self.path / FLOWER_HOME, home)

    def write_ledger_receipts(self, receipts: LedgerReceiptsFile) -> None:
        _write(self.path / LEDGER_RECEIPTS, receipts)

    def write_feature_stats(self, stats: FeatureStats) -> None:
        _write(self.path / FEATURE_STATS, stats)

    def save_checkpoint(self, server_round: int, state: dict[str, torch.Tensor]) -> None:
        import torch

        torch.save(state, self.checkpoint_path(server_round))

    def publish(self, state: dict[str, torch.Tensor], meta: ModelMeta, summary: RunSummary) -> None:
        """The final model, its layout and the run's summary."""
        import torch

        torch.save(state, self.path / MODEL_WEIGHTS)
        _write(self.path / MODEL_META, meta)
        if meta.kind == "gbdt":  # the trees as plain data and as LightGBM reads them, for a partner's own tools
            from fedcrm.ml.fedstats import VALUE_CLIP
            from fedcrm.ml.tree_ensemble import to_lightgbm, to_plain

            norm = meta.normalisation
            for name, text in ((TREES, json.dumps(to_plain(state, meta.features), indent=1)),
                               (TREES_LIGHTGBM, to_lightgbm(state, meta.features, norm.mean if norm else None,
                                                            norm.std if norm else None, VALUE_CLIP))):
                tmp = (self.path / name).with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(self.path / name)
        if self.has(METRICS):  # the flat table as Parquet too, once the run is over
            _write_parquet(self.path / f"{METRICS_FLAT}.parquet", flat_metrics(self.metrics()))
        _write(self.path / SUMMARY, summary)


def flat_metrics(metrics: MetricsFile) -> list[dict[str, Any]]:
    """A row per round and partner, and a "(global)" row per evaluated round: every scalar
    the coordinator recorded (train_*, evaluate_*, query_*), refusals as text."""
    rows: list[dict[str, Any]] = []
    for r in metrics.rounds:
        if r.global_metrics:
            rows.append({"run_id": str(metrics.run_id), "round": r.round, "partner": "(global)",
                         **{f"evaluate_{k}": v for k, v in r.global_metrics.items()}})
        refused: dict[str, list[str]] = {}
        for f in r.failures:
            refused.setdefault(f.partner or f"node {f.node_id}", []).append(f"{f.kind}: {f.reason}")
        for name in sorted(set(r.partners) | set(refused) | set(r.absent)):
            p = r.partners.get(name, PartnerRound())
            rows.append({"run_id": str(metrics.run_id), "round": r.round, "partner": name,
                         "trained": bool(p.train), "absent": name in r.absent,
                         "refused": "; ".join(refused.get(name, [])),
                         **{f"{kind}_{k}": v for kind in ("query", "train", "evaluate", "baseline")
                            for k, v in getattr(p, kind).items()}})
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for row in rows for k in row))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The flat table as CSV, replaced atomically (the csv module: no pandas in every round)."""
    import csv

    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _columns(rows)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table({c: [row.get(c) for row in rows] for c in columns}), tmp)
    tmp.replace(path)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every JSON file of a run directory, by file name."""
    from fedcrm.reports.compliance import ComplianceReport

    models: dict[str, type[BaseModel]] = {
        PLAN: PlanFile, STATE: RunState, METRICS: MetricsFile, EPSILON: EpsilonFile, RECEIVED: ReceivedFile,
        HISTOGRAMS: HistogramsFile, FEATURE_STATS: FeatureStats, MODEL_META: ModelMeta, SUMMARY: RunSummary,
        LEDGER_RECEIPTS: LedgerReceiptsFile, FLOWER_HOME: FlowerHome, "compliance.json": ComplianceReport}
    return {name: model.model_json_schema(by_alias=True, mode="serialization") for name, model in models.items()}


def _write(path: Path, data: BaseModel) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data.model_dump_json(indent=2, by_alias=True))
    tmp.replace(path)
