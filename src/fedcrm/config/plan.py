"""One run's training plan: what the coordinator asks every partner to do."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError

from fedcrm.config.loading import Strict, pretty
from fedcrm.errors import ConfigError


class TrainPlan(Strict):
    """One run's training settings, read from Flower's run config on both sides."""

    task: Literal["churn", "propensity"] = "churn"
    model: Literal["logistic", "mlp"] = "logistic"
    model_hidden: int = Field(32, ge=2, description="width of the MLP's first hidden layer")
    num_server_rounds: int = Field(5, ge=1)
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(0.5, gt=0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    seed: int = 42
    test_fraction: float = Field(0.2, gt=0, lt=1)
    min_partners: int = Field(2, ge=1)
    dp_enabled: bool = True
    dp_target_epsilon: float = Field(3.0, gt=0)
    dp_delta: float = Field(1e-5, gt=0, lt=1)
    dp_max_grad_norm: float = Field(1.0, gt=0)
    # Client-level (central) DP: Flower's server-side fixed-clipping wrapper and its RDP
    # accountant. Protects whole partners, not customers; see README "Client-level DP".
    client_dp: bool = False
    client_dp_noise_multiplier: float = Field(1.0, gt=0)
    client_dp_clipping_norm: float = Field(1.0, gt=0)
    client_dp_max_epsilon: float = Field(0.0, ge=0, description="0: no limit")
    round_timeout: float = Field(600.0, gt=0, description="seconds a round waits for replies")
    federated_stats: bool = Field(True, description="normalise with statistics over all partners' rows")
    stats_noise_multiplier: float = Field(0.0, ge=0, description="noise on the partners' sums (0: none); charged to ledgers")
    federation_config: str = ""
    run_dir: str = ""
    resume_from: str = Field("", description="run directory of an interrupted run to continue")
    audit_log: str = Field("", description="the coordinator's audit log (deployment)")

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> TrainPlan:
        data = {k.replace("-", "_"): v for k, v in run_config.items()}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"run config: {pretty(exc)}") from None
