"""The models partners train together: small, BatchNorm-free (DP-SGD needs per-sample gradients)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ModelKind = Literal["logistic", "mlp", "gbdt"]


class LogisticModel(nn.Module):
    """One linear layer on the shared features; outputs a logit."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class MLPModel(nn.Module):
    """Two small hidden layers; enough for feature interactions, small enough for DP noise."""

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden // 2), nn.ReLU(),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def build_model(kind: ModelKind, n_features: int, seed: int = 0, hidden: int = 32, depth: int = 3,
                periods: int | None = None) -> nn.Module:
    """Same seed → same initial weights on the server, so round 0 is reproducible. Boosted
    trees start with no tree (`depth`: of the trees to come; a loaded state sets it).
    `periods`: a time-to-churn model, the network's output plus an intercept per period
    (`fedcrm.ml.survival.HazardModel`). Seeds the CPU generator only: `torch.manual_seed`
    also queues a seed for every accelerator, recording a stack trace each time (3-4 ms a
    call deep in a Ray actor, a tenth of a simulated partner's round)."""
    torch.default_generator.manual_seed(seed)
    if periods is not None and kind != "gbdt":
        from fedcrm.ml.survival import HazardModel

        return HazardModel(build_model(kind, n_features, seed, hidden), periods)
    if kind == "logistic":
        return LogisticModel(n_features)
    if kind == "mlp":
        return MLPModel(n_features, hidden)
    if kind == "gbdt":
        from fedcrm.ml.tree_ensemble import BoostedTrees

        return BoostedTrees(n_features, depth)
    raise ValueError(f"unknown model {kind!r}; choose 'logistic', 'mlp' or 'gbdt'")


def model_with_state(kind: ModelKind, n_features: int, state: dict[str, torch.Tensor], hidden: int = 32) -> nn.Module:
    """The model of `kind` holding `state` (a checkpoint, a message's arrays): boosted trees
    take their depth from the state, a time-to-churn model its periods; a state that does
    not fit raises ValueError."""
    from fedcrm.ml.survival import PERIODS_KEY

    depth, periods = 3, None
    if kind == "gbdt":
        from fedcrm.ml.tree_ensemble import depth_of

        depth = depth_of(state)
    elif PERIODS_KEY in state:
        periods = int(state[PERIODS_KEY].shape[0])
    model = build_model(kind, n_features, hidden=hidden, depth=depth, periods=periods)
    model.load_state_dict(state)
    return model
