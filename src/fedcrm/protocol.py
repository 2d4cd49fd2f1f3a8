"""The wire protocol between the coordinator and the partner nodes, in one place.

Every message of a run is a Flower `RecordDict`. The coordinator sends a `config` record
(`RoundConfig`) and, for train and evaluate, the global model as the `arrays` record. A
node answers with a `metrics` record (`TrainReply`, `EvaluateReply` or `QueryReply`) and,
for train only, the new weights as `arrays`; a query reply may also name the frequent values
of the contract's learned categories in a `vocabulary` record (feature -> spellings, their
noised counts in `stat-vocab`). Each record is a pydantic model here whose
field names, spelt with dashes, are the keys on the wire: no other module spells a key.

The same models are the node's egress allow-list (`allowed_metrics`): a reply may carry
exactly the keys its model declares, numeric values only, lists only where the model has a
list. Error replies carry one of the `ERROR_*` codes below and a reason.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

if TYPE_CHECKING:  # Flower is imported where records are built: the CLI reads keys without it
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

# Record names inside a message's RecordDict.
ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"
VOCABULARY = "vocabulary"  # a query reply's named values of learned categories (`fedcrm.ml.vocabulary`)

# Codes a node puts on the error replies it sends the coordinator.
ERROR_FEDCRM = 4100  # the partner's pipeline or config refused the request
ERROR_EGRESS = 4101  # the reply would have carried more than arrays and metrics
ERROR_BUDGET = 4102  # the partner's privacy rules refused: cap reached, ledger does not verify, ...
ERROR_POLICY = 4103  # the run config is outside the partner's privacy policy: DP off, ε or rounds above its limits, ...


# A job's id: Flower's run id (an unsigned 64-bit integer) written as text everywhere,
# since JSON readers that use doubles (jq among them) corrupt integers above 2^53.
RunId = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)]


def wire_key(field: str) -> str:
    """The one spelling rule: Python's `epsilon_cap` is `epsilon-cap` on the wire, in node
    configs and in run configs (`fedcrm.config.TrainPlan`)."""
    return field.replace("_", "-")


class WireModel(BaseModel):
    """A record whose field names, with dashes, are its keys on the wire."""

    model_config = ConfigDict(alias_generator=wire_key, populate_by_name=True, extra="forbid")

    @classmethod
    def keys(cls) -> frozenset[str]:
        return frozenset(f.alias or n for n, f in cls.model_fields.items())

    @classmethod
    def key(cls, field: str) -> str:
        """The wire key of one field (raises for a field the model does not have)."""
        return cls.model_fields[field].alias or field

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)

    @classmethod
    def from_dict(cls, values: Any) -> Self:
        return cls.model_validate(dict(values))

    def record(self) -> MetricRecord:
        """Numeric metrics only: the whole model as one Flower `MetricRecord`."""
        from flwr.app import MetricRecord

        return MetricRecord(self.to_dict())


class _Reply(WireModel):
    list_fields: ClassVar[frozenset[str]] = frozenset()


# ---------------------------------------------------------------- coordinator → node
class RoundConfig(WireModel):
    """The `config` record of every message. `server_round` is set by Flower's strategy;
    the rest by the coordinator. A resumed run is a new Flower run whose rounds start at 1
    again: `job_id` names the original run and `round_offset` its completed rounds, so a
    partner's ledger keys every charge by the job's own round and never charges one twice."""

    model_config = ConfigDict(extra="ignore")  # Flower may add keys of its own

    job_id: RunId | None = None
    server_round: int = 0
    round_offset: int = 0
    feature_mean: list[float] | None = Field(None, description="the federation's normalisation, sent every round")
    feature_std: list[float] | None = None
    feature_levels: str | None = Field(None, description="the levels of the contract's learned categories (JSON: "
                                       "feature -> spellings), from the federation's vocabulary; sent every round")
    value_edges: list[float] | None = Field(
        None, description="a value or time-to-churn task's evaluation: the predicted-side edges of the joint "
        "histogram (the deciles of the last pooled release; checked on the node, `fedcrm.ml.predicted_side`)")
    ledger_receipt: int | None = Field(
        None, description="entries of this partner's ledger at the coordinator's last receipt: the node answers with "
        "the hash of its own entry of that number (`LedgerHead.ledger_receipt_hash`), proving its ledger still "
        "begins with what the coordinator saw. Set per node, only for a partner the coordinator holds a receipt of")

    def record(self) -> ConfigRecord:
        from flwr.app import ConfigRecord

        return ConfigRecord(self.to_dict())

    @classmethod
    def of(cls, content: RecordDict) -> RoundConfig:
        return cls.from_dict(content[CONFIG]) if CONFIG in content else cls()

    def job_round(self, flower_run_id: int) -> tuple[str, int]:
        """The job this message belongs to and its round in that job."""
        return (self.job_id or str(flower_run_id)), self.server_round + self.round_offset


class NodeConfig(WireModel):
    """What a SuperNode's `--node-config` (deployment) or the simulation engine tells the node."""

    model_config = ConfigDict(extra="ignore")

    partner_config: str | None = None  # deployment: the partner config on this machine
    partition_id: int | None = None  # simulation: member i of the federation config

    def flag(self) -> str:
        """The SuperNode `--node-config` value naming the partner config."""
        return f'{self.key("partner_config")}="{self.partner_config}"'


# ---------------------------------------------------------------- node → coordinator
class LedgerHead(_Reply):
    """The node's ledger as it verified it: entry count, intact or not, head hash prefix;
    and, when the round config carried a receipt, the hash of the entry it names."""

    ledger_entries: int | None = None
    ledger_ok: int | None = None
    ledger_head: int | None = Field(None, description="first 13 hex digits of the head hash, as an int")
    ledger_receipt: int | None = Field(None, description="the receipt's entry count the node was asked to prove")
    ledger_receipt_hash: int | None = Field(
        None, description="first 13 hex digits of the hash of the node's own entry number `ledger-receipt`, as an "
        "int; absent when its ledger has fewer entries or does not verify")


class TrainReply(LedgerHead):
    partner_id: int
    num_examples: int
    unit_weight: int = 1
    dp_enabled: int
    train_loss: float = Field(math.nan, description="mean loss over the round's batches; NaN under DP (not a DP release)")
    local_steps: int
    train_seconds: float
    epsilon: float | None = Field(None, description="cumulative ε by the partner's own accountant")
    epsilon_prv: float | None = None
    epsilon_rdp: float | None = None
    epsilon_run: float | None = Field(None, description="the rise of cumulative ε over this run")
    epsilon_cap: float | None = None
    epsilon_remaining: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    max_grad_norm: float | None = None


class HeldOutMetrics(WireModel):
    """A model's quality on held-out rows; NaN where a metric is undefined (one class only).
    Every partner sends every key: Flower refuses to aggregate records whose keys differ."""

    log_loss: float = math.nan
    brier: float = math.nan
    accuracy: float = math.nan
    ece: float = math.nan
    auc: float = math.nan
    pr_auc: float = math.nan
    lift_top_decile: float = math.nan
    capture_top_decile: float = math.nan

    RANKING: ClassVar[tuple[str, ...]] = ("auc", "pr_auc", "lift_top_decile", "capture_top_decile")
    EXAMPLE_MEANS: ClassVar[tuple[str, ...]] = ("log_loss", "brier", "accuracy")  # exact as weighted means


class EvaluateReply(HeldOutMetrics, LedgerHead):
    """Metrics of a model on the partner's hold-out. Under DP the score histograms are the
    release (noised counts, charged to the ledger) and every other figure, the row counts
    included, is computed from them on the node."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"score_hist_pos", "score_hist_neg"})

    partner_id: int
    num_examples: int
    unit_weight: int = 1
    num_positives: int
    score_hist_pos: list[int] = Field(description="held-out positives per score bin (noised counts may be negative)")
    score_hist_neg: list[int]
    eval_seconds: float
    epsilon: float | None = Field(None, description="cumulative ε after this evaluation, by the partner's accountant")
    delta: float | None = None
    noise_multiplier: float | None = Field(None, description="σ on every count of the histograms (absent: exact)")


class ValueHeldOutMetrics(WireModel):
    """A value model's quality on held-out rows (`fedcrm.ml.value`): errors and fit of the
    capped log spend, the rank correlation of predicted and actual value, and the share of
    the hold-out's spend in the top 10 % of predictions. NaN where undefined."""

    mae_log: float = math.nan
    rmse_log: float = math.nan
    r2_log: float = math.nan
    spearman: float = math.nan
    value_capture_top_decile: float = math.nan


class JointEvaluateFields(LedgerHead):
    """What every joint-histogram evaluation reply (value, time to churn) carries beside its
    task's metrics and histogram. Under DP the histogram is the release (noised counts,
    charged to the ledger like the score histograms) and every other figure is computed
    from it on the node."""

    partner_id: int
    num_examples: int
    unit_weight: int = 1
    eval_seconds: float
    epsilon: float | None = Field(None, description="cumulative ε after this evaluation, by the partner's accountant")
    delta: float | None = None
    noise_multiplier: float | None = Field(None, description="σ on every count of the histogram (absent: exact)")


class ValueEvaluateReply(ValueHeldOutMetrics, JointEvaluateFields):
    """Metrics of a value model on the partner's hold-out, and its joint histogram."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"value_hist"})

    value_hist: list[int] = Field(description="held-out customers per (predicted, actual) value bin, row-major "
                                  "(noised counts may be negative)")


class SurvivalHeldOutMetrics(WireModel):
    """A time-to-churn model's quality on held-out rows (`fedcrm.ml.survival`): Harrell's
    concordance of the predicted risk with the period customers left in, the integrated
    Brier score of the survival curves over the horizon's period ends, and the share that
    left within the horizon, observed and predicted (calibration in the large)."""

    c_index: float = math.nan
    integrated_brier: float = math.nan
    left_observed: float = math.nan
    left_predicted: float = math.nan


class SurvivalEvaluateReply(SurvivalHeldOutMetrics, JointEvaluateFields):
    """Metrics of a time-to-churn model on the partner's hold-out, and its joint histogram."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"survival_hist"})

    survival_hist: list[int] = Field(description="held-out customers per (risk bin, period left in or still "
                                     "there), row-major (noised counts may be negative)")


class QueryReply(LedgerHead):
    """Column sums over the training rows, for the federation's feature statistics."""

    list_fields: ClassVar[frozenset[str]] = frozenset({"stat_sum", "stat_sumsq", "stat_onehot", "stat_vocab",
                                                       "stat_sketch"})

    partner_id: int
    num_examples: int
    stat_n: float = Field(description="rows (noised)")
    stat_sum: list[float] = Field(description="per numeric column: the sum (noised)")
    stat_sumsq: list[float] = Field(description="per numeric column: the sum of squares (noised)")
    stat_onehot: list[float] = Field(description="per category level: the count (noised)")
    stat_vocab: list[float] | None = None  # noised counts of the `vocabulary` record's values, in its order
    stat_sketch: list[float] | None = None  # gbdt runs: noised rows per grid cell of each numeric column (`fedcrm.ml.sketch`)
    epsilon: float | None = None
    delta: float | None = None


REPLIES: dict[str, type[_Reply]] = {"train": TrainReply, "evaluate": EvaluateReply, "query": QueryReply,
                                     "baseline": EvaluateReply}
# Flower message type of the local-only baseline (`TrainPlan.local_baseline`): an evaluate
# message the node answers with the metrics of a model it trained on its own rows alone
BASELINE_MESSAGE = "evaluate.baseline"


TaskKind = Literal["binary", "value", "survival"]
# a value or time-to-churn task's evaluations (and baselines) answer with that task's
# metrics and joint histogram, not score histograms
TASK_REPLIES: dict[str, dict[str, type[_Reply]]] = {
    "value": {"evaluate": ValueEvaluateReply, "baseline": ValueEvaluateReply},
    "survival": {"evaluate": SurvivalEvaluateReply, "baseline": SurvivalEvaluateReply},
}


def reply_model(kind: str, task: TaskKind = "binary") -> type[_Reply]:
    """The record a reply of `kind` carries in a run whose task is of kind `task`."""
    return TASK_REPLIES.get(task, {}).get(kind) or REPLIES[kind]


def allowed_metrics(kind: str, task: TaskKind = "binary") -> frozenset[str]:
    """The egress allow-list of a reply kind: exactly the keys its model declares."""
    return reply_model(kind, task).keys()


def list_keys(kind: str, task: TaskKind = "binary") -> dict[str, str]:
    """Wire key → field name of the metrics that may be lists in a reply of `kind`."""
    model = reply_model(kind, task)
    return {model.key(f): f for f in model.list_fields}


EGRESS_RECORDS = {  # reply kind -> the records besides `metrics` it may carry (`fedcrm.node.egress` enforces)
    "train": {ARRAYS: "the model's arrays, same names and shapes as the global model received, float only; for "
                      "boosted trees, the noised leaf or histogram sums of the trees the round sent"},
    "evaluate": {},
    "baseline": {},
    "query": {VOCABULARY: "the values of the contract's learned categories whose noised counts are `stat-vocab`; "
                          "learned-vocabulary runs only"},
}
REPLY_PURPOSE = {"train": "a training round", "evaluate": "an evaluation on the partner's hold-out",
                 "baseline": "a local-only baseline (a model trained with DP-SGD on the partner's rows alone, "
                             "evaluated on its hold-out; only when the run asks for one)",
                 "query": "the federation's feature statistics (round 0)"}


def egress_markdown() -> str:
    """What leaves a node, reply by reply, generated from the reply models: the README's
    list (`scripts/readme_sync.py`) is this text, so it cannot fall behind the code."""
    lines = []
    replies = [(kind, kind, model) for kind, model in REPLIES.items()] + [
        (kind, f"{kind} ({task} task)", model) for task, replies in TASK_REPLIES.items() for kind, model in replies.items()]
    for kind, title, model in replies:
        records = "; ".join(f"`{name}` ({what})" for name, what in EGRESS_RECORDS[kind].items())
        keys = ", ".join(f"`{f.alias or n}`" + ("[]" if n in model.list_fields else "")
                         for n, f in model.model_fields.items())
        lines.append(f"- **{title}** replies, {REPLY_PURPOSE[kind]}: " + (f"{records}; " if records else "")
                     + f"`metrics` with only {keys} ([] a list; every other value a number).")
    lines.append("- Anything else is refused on the node (`fedcrm.node.egress`) and logged in its "
                 "`work/egress.jsonl`; the coordinator lists what it received, by name, type and shape, "
                 "in the run's `received.json`.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the coordinator's aggregates
class TrainAggregate(WireModel):
    """Over the partners that trained a round: example-weighted loss, and the *largest* ε
    (budgets never average)."""

    train_loss: float = math.nan  # NaN when every partner trained with DP
    num_partners: int
    num_examples: int
    max_epsilon: float | None = None


class EvaluateAggregate(HeldOutMetrics):
    """Pooled ranking and calibration metrics from the summed score histograms,
    example-weighted log-loss, Brier and accuracy, and the example-weighted mean of each
    partner's own ranking metrics (`mean_partner_*`), which ignores the signal between
    partners. Metrics that are undefined over the pool are left out (None)."""

    num_examples: int
    num_partners: int
    log_loss: float | None = None
    brier: float | None = None
    accuracy: float | None = None
    ece: float | None = None
    auc: float | None = None
    pr_auc: float | None = None
    lift_top_decile: float | None = None
    capture_top_decile: float | None = None
    mean_partner_auc: float | None = None
    mean_partner_pr_auc: float | None = None
    mean_partner_lift_top_decile: float | None = None
    mean_partner_capture_top_decile: float | None = None
    mean_partner_ece: float | None = None
    # a value task's (`ValueHeldOutMetrics`), pooled from the summed joint histograms; the
    # 0/1 metrics above stay None in such a run, and these in a 0/1 one
    mae_log: float | None = None
    rmse_log: float | None = None
    r2_log: float | None = None
    spearman: float | None = None
    value_capture_top_decile: float | None = None
    mean_partner_spearman: float | None = None
    # a time-to-churn task's (`SurvivalHeldOutMetrics`), pooled the same way
    c_index: float | None = None
    integrated_brier: float | None = None
    left_observed: float | None = None
    left_predicted: float | None = None
    mean_partner_c_index: float | None = None

    PARTNER_MEANS: ClassVar[tuple[str, ...]] = ("auc", "pr_auc", "lift_top_decile", "capture_top_decile", "ece")
    VALUE: ClassVar[tuple[str, ...]] = ("mae_log", "rmse_log", "r2_log", "spearman", "value_capture_top_decile")
    SURVIVAL: ClassVar[tuple[str, ...]] = ("c_index", "integrated_brier", "left_observed", "left_predicted")
