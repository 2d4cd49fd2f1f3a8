"""Reading a finished run directory: the plan, the published model, the records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fedcrm.config import TrainPlan
from fedcrm.errors import ConfigError
from fedcrm.data.features import feature_names
from fedcrm.ml.fedstats import Normalisation
from fedcrm.ml.models import build_model


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "plan.json").is_file():
            raise ConfigError(f"{self.path} is not a fedcrm run directory (no plan.json)")

    def _json(self, name: str) -> Any:
        file = self.path / name
        if not file.is_file():
            raise ConfigError(f"run directory {self.path} has no {name} (did the run finish?)")
        return json.loads(file.read_text())

    @property
    def run_id(self) -> int:
        return int(self._json("plan.json")["run_id"])

    @property
    def plan(self) -> TrainPlan:
        data = {k: v for k, v in self._json("plan.json").items() if k != "run_id"}
        return TrainPlan.model_validate(data)

    def summary(self) -> dict[str, Any]:
        return self._json("summary.json")

    def metrics(self) -> dict[str, Any]:
        return self._json("metrics.json")

    def normalisation(self) -> Normalisation | None:
        """The federation's feature normalisation the model was trained with, if any."""
        meta = self._json("model.json")
        return Normalisation.model_validate(meta["normalisation"]) if meta.get("normalisation") else None

    def model(self) -> torch.nn.Module:
        """The published global model, as every partner received it."""
        meta = self._json("model.json")
        if meta["features"] != feature_names():
            raise ConfigError(f"{self.path}/model.json: the model's feature layout differs from this fedcrm's")
        model = build_model(meta["kind"], len(meta["features"]), hidden=int(meta.get("hidden", 32)))
        model.load_state_dict(torch.load(self.path / "model.pt", weights_only=True))
        return model
