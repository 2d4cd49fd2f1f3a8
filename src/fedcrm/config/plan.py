"""One run's training plan: what the coordinator asks every partner to do.

`TrainPlan` is the one place a run setting and its default are declared. Flower's run
config spells the same fields with dashes (`num-server-rounds`): the alias generator below
(`fedcrm.protocol.wire_key`) is the only dash/underscore rule, `to_run_config()` and `from_run_config()` the only
conversions. The Flower app's `[tool.flwr.app.config]` is generated from `TrainPlan()`
(`fedcrm.ops.app`), and the CLI's run options take their defaults and help from here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from fedcrm.config.loading import Strict, pretty
from fedcrm.errors import ConfigError
from fedcrm.protocol import wire_key

# Bounds on everything a (possibly malicious) coordinator can ask of a node. Each is far
# beyond what the demo, tests and benchmarks use, and each keeps one node's memory and time
# bounded: the run config must never be able to knock a node over (issue 12).
# Least and most noise any Gaussian mechanism may use (DP-SGD, noised statistics, client
# DP): below σ ≈ 0.3 one full-batch release costs ε ≈ 19 at δ = 1e-5 (no meaningful
# guarantee), and Opacus' PRV grid grows like 1/σ² (σ = 1e-4 asked for 265 GiB). The node's
# accountant (`fedcrm.privacy.accounting`) uses the same floor when it calibrates.
NOISE_MIN = 0.3
NOISE_MAX = 1e4
# ε a run may target: past ~50 no (ε, δ) statement means anything, and a looser target only
# pins σ at NOISE_MIN. Rounds: the node projects ε for every round when it plans a run.
EPSILON_MAX = 50.0
# Per-example gradients under DP hold batch × parameters floats; an MLP has about
# hidden × (hidden/2 + n_features) weights. 1e8 floats ≈ 400 MB for the largest batch.
PER_SAMPLE_FLOATS_MAX = 100_000_000
_FEATURES_APPROX = 100  # the feature vector has ~66 columns; config does not import data/


class TrainPlan(Strict):
    """One run's training settings, read from Flower's run config on both sides."""

    model_config = ConfigDict(alias_generator=wire_key, populate_by_name=True)

    task: str = Field("churn", pattern=r"^[a-z][a-z0-9_-]*$",
                      description="what the model predicts: a task of the consortium's contract")
    model: Literal["logistic", "mlp", "gbdt"] = Field(
        "logistic", description="logistic regression, a small MLP, or gradient-boosted trees")
    model_hidden: int = Field(32, ge=2, le=1024, description="width of the MLP's first hidden layer")
    # Boosted trees (`fedcrm.ml.tree_rounds`). Bounds: 2^8 leaves a tree.
    gbdt_splits: Literal["auto", "histogram", "random"] = Field(
        "auto", description="gbdt: 'histogram' grows each tree level by level from the partners' gradient "
        "histograms (depth + 1 rounds a tree); 'random' picks random splits (a round adds a batch of trees); "
        "'auto': random with DP, histogram without")
    gbdt_depth: int = Field(4, ge=1, le=8, description="gbdt: depth of every tree (2^depth leaves)")
    gbdt_trees_per_round: int = Field(40, ge=1, le=64, description="gbdt, random splits: trees a round adds (one "
                                      "release of their leaf sums)")
    gbdt_learning_rate: float = Field(0.0, ge=0, le=10, description="gbdt: shrinkage (0: 1.0 on a random batch's "
                                      "average, 0.3 a tree with histogram splits)")
    gbdt_bins: int = Field(16, ge=2, le=256, description="gbdt: candidate thresholds of a numeric column (its "
                           "standard-normal quantiles after the federation's normalisation)")
    gbdt_grad_clip: float = Field(0.0, ge=0, le=1.0, description="gbdt: per-row gradient clip, which sets the "
                                  "release's sensitivity (0: 0.5 with DP, 1.0 (no clipping) without)")
    gbdt_l2: float = Field(1.0, ge=0, le=1e6, description="gbdt: L2 penalty on leaf values")
    gbdt_min_hessian: float = Field(0.0, ge=0, le=1e6, description="gbdt: least hessian sum a leaf value divides by "
                                    "(noise can make a sum small or negative) and a histogram split leaves on each "
                                    "side (0: 40 with DP, 5 without)")
    num_server_rounds: int = Field(5, ge=1, le=200, description="federated rounds")
    local_epochs: int = Field(1, ge=1, le=100, description="passes over its own rows per round on every partner")
    batch_size: int = Field(64, ge=8, le=4096, description="rows per local step (expected size under DP's Poisson sampling)")
    learning_rate: float = Field(0.5, gt=0, le=100, description="step size of the local optimiser")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="the local optimiser")
    seed: int = Field(42, description="seed of the initial model and of the partners' local training")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of every partner's rows held out for evaluation")
    min_partners: int = Field(2, ge=1, le=10_000, description="partners every round needs")
    dp_enabled: bool = Field(True, description="DP-SGD on every partner")
    dp_target_epsilon: float = Field(3.0, ge=0.01, le=EPSILON_MAX, description="target ε this run may add per partner")
    dp_delta: float = Field(1e-5, ge=1e-12, lt=1, description="δ of every partner's (ε, δ) guarantee")
    dp_max_grad_norm: float = Field(1.0, gt=0, le=1e6, description="DP-SGD's per-example gradient clipping norm")
    # Client-level (central) DP: Flower's server-side fixed-clipping wrapper and its RDP
    # accountant. Protects whole partners, not customers; see README "Client-level DP".
    client_dp: bool = Field(False, description="client-level DP on the coordinator (protects whole partners)")
    client_dp_noise_multiplier: float = Field(1.0, ge=NOISE_MIN, le=NOISE_MAX)
    client_dp_clipping_norm: float = Field(1.0, gt=0, le=1e6)
    client_dp_max_epsilon: float = Field(0.0, ge=0, le=1000, description="0: no limit")
    round_timeout: float = Field(600.0, ge=1, le=86_400, description="seconds a round waits for replies")
    pull_interval: float = Field(0.5, ge=0.05, le=10, description="seconds between the ServerApp's requests for "
                                 "replies on a deployment (Flower's own grid waits 3 s; simulation pulls every 0.1 s)")
    evaluate_every: int = Field(
        1, ge=1, le=200, description="evaluate every this many rounds (and the first and last; gbdt with histogram "
        "splits: every this many trees): each is a charged DP release")
    local_baseline: bool = Field(
        False, description="after the last round each partner also trains alone (the run's DP-SGD) and evaluates "
        "on its hold-out: 2 more charged releases")
    federated_stats: bool = Field(True, description="normalise with statistics over all partners' rows")
    stats_noise_multiplier: float = Field(0.0, ge=0, le=NOISE_MAX, description="noise on the partners' sums (0: none); charged to ledgers")
    federation_config: str = Field("", description="the federation config, as the nodes see its path")
    contract_digest: str = Field("", description="sha256 of the consortium's contract, set by the coordinator from the "
                                 "federation config; a node whose own copy differs refuses the run")
    run_dir: str = Field("", description="where the coordinator writes the run")
    resume_from: str = Field("", description="run directory of an interrupted run to continue")
    audit_log: str = Field("", description="the coordinator's audit log (a deployed federation's coordinator folder; beside a simulated federation's config)")

    @field_validator("stats_noise_multiplier")
    @classmethod
    def _stats_noise(cls, value: float) -> float:
        if 0 < value < NOISE_MIN:
            raise ValueError(f"must be 0 (no noise) or at least {NOISE_MIN:g}")
        return value

    @model_validator(mode="after")
    def _trees(self) -> TrainPlan:
        if self.model != "gbdt":
            return self
        if self.local_baseline:
            raise ValueError("local-baseline trains a partner's model alone with DP-SGD: it is for logistic and mlp "
                             "models (boosted trees are grown by the coordinator)")
        if self.client_dp:
            raise ValueError("client-level DP clips and noises averaged model updates; boosted trees send leaf sums, "
                             "noised on every partner: use record-level DP (dp-enabled) with gbdt")
        if self.tree_splits == "histogram" and self.num_server_rounds % self.rounds_per_tree:
            raise ValueError(f"with histogram splits a tree of depth {self.gbdt_depth} takes {self.rounds_per_tree} "
                             f"rounds: num-server-rounds must be a multiple of it (not {self.num_server_rounds})")
        return self

    @property
    def tree_splits(self) -> Literal["histogram", "random"]:
        """How a gbdt run picks splits (`gbdt_splits`, 'auto' resolved): with DP, random
        splits leave the whole budget to leaf values, which measured better at ε ≤ 3
        (benchmarks/results/gbdt_utility.md); without DP, histogram splits are the pooled ones."""
        if self.gbdt_splits != "auto":
            return self.gbdt_splits
        return "random" if self.dp_enabled else "histogram"

    @property
    def tree_learning_rate(self) -> float:
        if self.gbdt_learning_rate > 0:
            return self.gbdt_learning_rate
        return 1.0 if self.tree_splits == "random" else 0.3

    @property
    def tree_grad_clip(self) -> float:
        """|g| ≤ this for every row's gradient p - y (`gbdt_grad_clip`, 0 resolved). With DP,
        0.5 halves the noise on every leaf sum for a bias only on rows the model gets badly
        wrong (|p - y| > 0.5). Against 1.0 on the three shared data sets (mean AUC of 5 noise
        draws, benchmarks/results/gbdt_settings.md): +0.005 to +0.019 at ε = 3, +0.016 to
        +0.063 at ε = 1, -0.003 to +0.002 at ε = 8; 0.3 was better at ε = 1 only. Without DP
        nothing is gained by clipping."""
        if self.gbdt_grad_clip > 0:
            return self.gbdt_grad_clip
        return 0.5 if self.dp_enabled else 1.0

    @property
    def tree_min_hessian(self) -> float:
        """The leaf hessian floor (`gbdt_min_hessian`, 0 resolved). With DP a small leaf's
        noised hessian sum is what wrecks its value; 40 against 5, clip 0.5, on the three
        shared data sets (3 noise draws, benchmarks/results/gbdt_settings_leaf_floor.md):
        +0.036 to +0.053 AUC at ε = 1, +0.000 to +0.003 at ε = 3, -0.001 at ε = 8; in the
        real runs of benchmarks/results/gbdt_utility.md +0.025 to +0.055 at ε = 1."""
        if self.gbdt_min_hessian > 0:
            return self.gbdt_min_hessian
        return 40.0 if self.dp_enabled else 5.0

    @property
    def rounds_per_tree(self) -> int:
        """Rounds one step of the model takes: a tree's levels and its leaves with histogram
        splits, one round otherwise."""
        return self.gbdt_depth + 1 if self.model == "gbdt" and self.tree_splits == "histogram" else 1

    @model_validator(mode="after")
    def _bounded_per_sample_gradients(self) -> TrainPlan:
        if self.model == "mlp" and self.dp_enabled:
            floats = self.batch_size * self.model_hidden * (self.model_hidden // 2 + _FEATURES_APPROX)
            if floats > PER_SAMPLE_FLOATS_MAX:
                raise ValueError(f"batch-size × model-hidden needs ~{floats:.2g} per-example gradient floats under "
                                 f"DP (limit {PER_SAMPLE_FLOATS_MAX:.2g}); use a smaller batch or model")
        return self

    def short_run_warning(self, usual_rounds: int = 20) -> str | None:
        """A DP run's target ε is spent whatever its length: a 2-round smoke test costs each
        partner as much as a 20-round run, ten times more per round. Said before it starts."""
        if not self.dp_enabled or self.num_server_rounds >= usual_rounds // 4:
            return None
        per_round = self.dp_target_epsilon / self.num_server_rounds
        return (f"{self.num_server_rounds} round{'s' if self.num_server_rounds > 1 else ''} will still spend the whole "
                f"target ε = {self.dp_target_epsilon:g} of every partner ({per_round:.2g} a round; a "
                f"{usual_rounds}-round run spends {self.dp_target_epsilon / usual_rounds:.2g}). For a smoke test, "
                "lower --epsilon or use --no-dp on test data.")

    def evaluation_rounds(self) -> list[int]:
        """The job rounds whose model the partners evaluate: 0 (the starting model), every
        `evaluate_every`-th, and the last. A node calibrates its evaluation noise to this
        many releases and refuses an evaluation at any other round."""
        every = self.evaluate_every * self.rounds_per_tree  # trees grown level by level: whole trees only
        return sorted({0, self.num_server_rounds} | set(range(every, self.num_server_rounds, every)))

    @property
    def baseline_round(self) -> int | None:
        """The job round a local-only baseline is charged under (after the last), if the run asks for one."""
        return self.num_server_rounds + 1 if self.local_baseline else None

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> TrainPlan:
        """From Flower's run config (dash keys; underscore keys are accepted too)."""
        try:
            return cls.model_validate(run_config)
        except ValidationError as exc:
            raise ConfigError(f"run config: {pretty(exc)}") from None

    def to_run_config(self, exclude_unset: bool = False) -> dict[str, Any]:
        """Flower's run config (dash keys). `exclude_unset`: only the fields given when
        this plan was made, e.g. the options a user typed."""
        return self.model_dump(by_alias=True, exclude_unset=exclude_unset)
