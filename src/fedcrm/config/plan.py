"""One run's training plan: what the coordinator asks every partner to do.

`TrainPlan` is the one place a run setting and its default are declared. Flower's run
config spells the same fields with dashes (`num-server-rounds`): the alias generator below
(`fedcrm.protocol.wire_key`) is the only dash/underscore rule, `to_run_config()` and `from_run_config()` the only
conversions. The Flower app's `[tool.flwr.app.config]` is generated from `TrainPlan()`
(`fedcrm.ops.app`), and the CLI's run options take their defaults and help from here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from fedcrm.config.loading import Strict, pretty
from fedcrm.errors import ConfigError
from fedcrm.protocol import wire_key


class TrainPlan(Strict):
    """One run's training settings, read from Flower's run config on both sides."""

    model_config = ConfigDict(alias_generator=wire_key, populate_by_name=True)

    task: Literal["churn", "propensity"] = Field("churn", description="what the model predicts")
    model: Literal["logistic", "mlp"] = Field("logistic", description="logistic regression or a small MLP")
    model_hidden: int = Field(32, ge=2, description="width of the MLP's first hidden layer")
    num_server_rounds: int = Field(5, ge=1, description="federated rounds")
    local_epochs: int = Field(1, ge=1, description="passes over its own rows per round on every partner")
    batch_size: int = Field(64, ge=1, description="rows per local step (expected size under DP's Poisson sampling)")
    learning_rate: float = Field(0.5, gt=0, description="step size of the local optimiser")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="the local optimiser")
    seed: int = Field(42, description="seed of the initial model and of the partners' local training")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of every partner's rows held out for evaluation")
    min_partners: int = Field(2, ge=1, description="partners every round needs")
    dp_enabled: bool = Field(True, description="DP-SGD on every partner")
    dp_target_epsilon: float = Field(3.0, gt=0, description="target ε this run may add per partner")
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="δ of every partner's (ε, δ) guarantee")
    dp_max_grad_norm: float = Field(1.0, gt=0, description="DP-SGD's per-example gradient clipping norm")
    # Client-level (central) DP: Flower's server-side fixed-clipping wrapper and its RDP
    # accountant. Protects whole partners, not customers; see README "Client-level DP".
    client_dp: bool = Field(False, description="client-level DP on the coordinator (protects whole partners)")
    client_dp_noise_multiplier: float = Field(1.0, gt=0)
    client_dp_clipping_norm: float = Field(1.0, gt=0)
    client_dp_max_epsilon: float = Field(0.0, ge=0, description="0: no limit")
    round_timeout: float = Field(600.0, gt=0, description="seconds a round waits for replies")
    federated_stats: bool = Field(True, description="normalise with statistics over all partners' rows")
    stats_noise_multiplier: float = Field(0.0, ge=0, description="noise on the partners' sums (0: none); charged to ledgers")
    federation_config: str = Field("", description="the federation config, as the nodes see its path")
    run_dir: str = Field("", description="where the coordinator writes the run")
    resume_from: str = Field("", description="run directory of an interrupted run to continue")
    audit_log: str = Field("", description="the coordinator's audit log (deployment)")

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
