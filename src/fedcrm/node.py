"""A partner node: its own data, its own privacy account, local train and evaluate.

This is everything a ClientApp does, as plain Python: it takes the global weights and
returns new weights plus numeric metrics. The Flower adapter in `clients/` only converts
messages to and from these calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.errors import ConfigError, PrivacyBudgetError
from fedcrm.models import build_model
from fedcrm.prepare import PreparedData, prepare
from fedcrm.privacy import AccountStore, Release, calibrate_noise, epsilon
from fedcrm.training import DPSettings, evaluate_local, steps_per_epoch, train_local

Metrics = dict[str, int | float | list[int]]


def resolve_partner_config(node_config: dict[str, Any], plan: TrainPlan) -> PartnerConfig:
    """Deployment: the node config names the partner config. Simulation: partition i of
    the federation config. Either way the node only ever opens its own partner's files."""
    if node_config.get("partner-config"):
        return PartnerConfig.load(str(node_config["partner-config"]))
    if "partition-id" in node_config and plan.federation_config:
        members = FederationConfig.load(plan.federation_config).members
        pid = int(node_config["partition-id"])
        if pid >= len(members) or members[pid].config is None:
            raise ConfigError(f"simulated node {pid}: federation config has no partner config for it")
        return PartnerConfig.load(members[pid].config)
    raise ConfigError("node has no partner config: set node config 'partner-config' "
                      "(deployment) or run config 'federation-config' (simulation)")


_DATA: dict[tuple[object, ...], PreparedData] = {}


class PartnerNode:
    def __init__(self, cfg: PartnerConfig, plan: TrainPlan) -> None:
        self.cfg, self.plan = cfg, plan
        self.accounts = AccountStore(cfg.work_dir)

    @property
    def egress_log(self) -> Path:
        return self.cfg.work_dir / "egress.jsonl"

    def data(self) -> PreparedData:
        """Prepared once per process; the on-disk cache serves later processes and runs."""
        # a re-exported file is prepared (and accounted) anew
        files = [t.path for t in (self.cfg.customers, self.cfg.transactions, self.cfg.interactions) if t]
        stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        key = (str(self.cfg.source), self.plan.task, self.plan.test_fraction, stamps)
        if key not in _DATA:
            _DATA[key] = prepare(self.cfg, self.plan.task, self.plan.test_fraction)
        return _DATA[key]

    def _model(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = build_model(self.plan.model, self.data().x_train.shape[1])
        model.load_state_dict(state)
        return model

    def planned_steps(self) -> tuple[int, float]:
        """Steps per round and Poisson sample rate for this partner's data size."""
        per_epoch = steps_per_epoch(len(self.data().x_train), self.plan.batch_size)
        return self.plan.local_epochs * per_epoch, 1.0 / per_epoch

    def noise_multiplier(self) -> float:
        """σ calibrated so that all rounds of this run together cost the run's target ε."""
        steps, q = self.planned_steps()
        return calibrate_noise(self.plan.dp_target_epsilon, self.plan.dp_delta, q,
                               steps * self.plan.num_server_rounds)

    def train(self, state: dict[str, torch.Tensor], server_round: int, run_id: int) -> tuple[dict[str, torch.Tensor], Metrics]:
        data, plan = self.data(), self.plan
        model = self._model(state)
        seed = plan.seed * 100_003 + server_round * 1_009 + self.cfg.partner_id
        common = dict(epochs=plan.local_epochs, batch_size=plan.batch_size, lr=plan.learning_rate,
                      optimizer=plan.optimizer, seed=seed)
        metrics: Metrics = {"num-examples": int(len(data.y_train)), "partner-id": self.cfg.partner_id,
                            "dp-enabled": int(plan.dp_enabled)}
        if not plan.dp_enabled:
            out = train_local(model, data.x_train, data.y_train, dp=None, **common)
        else:
            account = self.accounts.load(data.dataset_fingerprint)
            if account.charged(run_id, server_round):
                raise PrivacyBudgetError(f"partner {self.cfg.name}: run {run_id} round {server_round} "
                                         "was already charged; refusing to train it twice")
            sigma = self.noise_multiplier()
            dp = DPSettings(sigma, plan.dp_max_grad_norm, plan.dp_delta, list(account.history))
            out = train_local(model, data.x_train, data.y_train, dp=dp, **common)
            account.history = list(out.history)
            eps = epsilon(account.history, plan.dp_delta)  # recomputed from what we persist
            account.releases.append(Release(
                run_id=run_id, server_round=server_round, noise_multiplier=sigma,
                sample_rate=out.sample_rate, steps=out.steps, delta=plan.dp_delta,
                max_grad_norm=plan.dp_max_grad_norm, epsilon_after=eps))
            self.accounts.save(account)
            metrics.update({"epsilon": eps, "delta": plan.dp_delta, "noise-multiplier": sigma,
                            "sample-rate": out.sample_rate, "max-grad-norm": plan.dp_max_grad_norm})
        metrics.update({"train-loss": out.mean_loss, "local-steps": out.steps})
        return out.state_dict, metrics

    def evaluate(self, state: dict[str, torch.Tensor]) -> Metrics:
        data = self.data()
        out = evaluate_local(self._model(state), data.x_test, data.y_test)
        metrics: Metrics = {"num-examples": out.n, "partner-id": self.cfg.partner_id,
                            "num-positives": int(np.sum(data.y_test)),
                            "score-hist-pos": out.pos_hist, "score-hist-neg": out.neg_hist}
        metrics.update(out.metrics)
        return metrics
