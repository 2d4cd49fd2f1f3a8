"""The models partners train together: small, BatchNorm-free (DP-SGD needs per-sample gradients)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ModelKind = Literal["logistic", "mlp"]


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


def build_model(kind: ModelKind, n_features: int, seed: int = 0, hidden: int = 32) -> nn.Module:
    """Same seed → same initial weights on the server, so round 0 is reproducible."""
    torch.manual_seed(seed)
    if kind == "logistic":
        return LogisticModel(n_features)
    if kind == "mlp":
        return MLPModel(n_features, hidden)
    raise ValueError(f"unknown model {kind!r}; choose 'logistic' or 'mlp'")
