"""A partner node: its own data, its own privacy account, local train and evaluate.

This is everything a ClientApp does, as plain Python: it takes the global weights and
returns new weights plus numeric metrics. The Flower adapter in `clients/` only converts
messages to and from these calls.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcrm.config import FederationConfig, PartnerConfig, PrivacyPolicy, TrainPlan
from fedcrm.errors import ConfigError, PrivacyBudgetError
from fedcrm.ml.models import build_model
from fedcrm.data.prepare import PreparedData, prepare
from fedcrm.privacy.membership import AuditResult, membership_audit
from fedcrm.ml.fedstats import Normalisation, PartnerSums, numeric_count, partner_sums, row_bound
from fedcrm.privacy.ledger import Ledger, LedgerEntry
from fedcrm.privacy.replies import ReplyCache
from fedcrm.privacy.accounting import RunPlan, epsilon, plan_run, run_noise
from fedcrm.rundir import RunDir
from fedcrm.ml.training import DPSettings, evaluate_local, train_local

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


class BudgetExceeded(PrivacyBudgetError):
    """The next round would take the partner past the ε cap it set for itself."""


class PartnerNode:
    def __init__(self, cfg: PartnerConfig, plan: TrainPlan, normalisation: Normalisation | None = None) -> None:
        """`normalisation`: the federation's feature statistics for this run, if it has them."""
        self.cfg, self.plan, self.normalisation = cfg, plan, normalisation
        self.ledger = Ledger(cfg.work_dir)
        self.replies = ReplyCache(cfg.work_dir / "privacy" / "replies")

    @property
    def policy(self) -> PrivacyPolicy:
        return self.cfg.privacy

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

    def _x(self, x: np.ndarray) -> np.ndarray:
        return self.normalisation.apply(x) if self.normalisation is not None else x

    def feature_sums(self, run_id: int) -> tuple[PartnerSums, Metrics]:
        """Column sums over the training rows for the federation's statistics; noised and
        charged to the ledger (as round 0 of the run) when the run asks for noise."""
        data, sigma = self.data(), self.plan.stats_noise_multiplier
        metrics: Metrics = {"partner-id": self.cfg.partner_id, "num-examples": int(len(data.x_train))}
        if sigma <= 0:
            return partner_sums(data.x_train), metrics
        entries = self.counted_entries()
        self._charge_check(entries, run_id, 0, sigma, 1.0, 1)
        sums = partner_sums(data.x_train, sigma)
        eps = self._epsilon_after(entries, sigma, 1.0, 1)
        self._charge(run_id, 0, sigma, 1.0, 1, row_bound(numeric_count()), eps)
        metrics["num-examples"] = round(sums.n)
        return sums, {**metrics, "epsilon": eps[self.policy.accountant], "delta": self.policy.delta,
                      **self._ledger_metrics()}

    def _model(self, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        model = build_model(self.plan.model, self.data().x_train.shape[1], hidden=self.plan.model_hidden)
        model.load_state_dict(state)
        return model

    # ------------------------------------------------------------ privacy budget
    def counted_entries(self) -> list[LedgerEntry]:
        """The verified ledger entries that compose into this partner's ε (raises if tampered)."""
        entries = self.ledger.entries()
        if self.policy.compose_over == "dataset":
            fingerprint = self.data().dataset_fingerprint
            entries = [e for e in entries if e.dataset_fingerprint == fingerprint]
        return entries

    def _run_inputs(self, run_id: int | None, entries: list[LedgerEntry] | None = None) -> dict:
        """Prior history and run shape. Within a run σ is fixed by its first charged round,
        so a node restarted mid-run keeps training with the noise the run started with."""
        entries = self.counted_entries() if entries is None else entries
        this_run = [e for e in entries if run_id is not None and e.run_id == run_id]
        return dict(prior=[e.history_entry for e in entries if run_id is None or e.run_id != run_id],
                    rows=len(self.data().x_train), batch_size=self.plan.batch_size,
                    local_epochs=self.plan.local_epochs, rounds=self.plan.num_server_rounds,
                    target_run_epsilon=self.plan.dp_target_epsilon, delta=self.policy.delta,
                    accountant=self.policy.accountant, sigma=this_run[0].noise_multiplier if this_run else None)

    def plan_run(self, run_id: int | None = None) -> RunPlan:
        """What this run costs: σ calibrated against everything spent before it, ε per round."""
        return plan_run(partner=self.cfg.name, epsilon_cap=self.policy.epsilon_cap,
                        max_grad_norm=self.plan.dp_max_grad_norm, **self._run_inputs(run_id))

    def _charge_check(self, entries: list[LedgerEntry], run_id: int, server_round: int,
                      sigma: float, q: float, steps: int) -> tuple[float, float]:
        """ε now and ε after the round; refuses a round charged before or one past the cap."""
        if any(e.run_id == run_id and e.server_round == server_round for e in entries):
            raise PrivacyBudgetError(f"partner {self.cfg.name}: run {run_id} round {server_round} "
                                     "was already charged; refusing to train it twice")
        history = [e.history_entry for e in entries]
        kind, delta, cap = self.policy.accountant, self.policy.delta, self.policy.epsilon_cap
        now = epsilon(history, delta, kind)
        after = epsilon(history + [(sigma, q, steps)], delta, kind)
        if after > cap:
            raise BudgetExceeded(
                f"partner {self.cfg.name}: round {server_round} of run {run_id} would raise ε from {now:.3f} "
                f"to {after:.3f} (δ={delta:g}, {kind.upper()}), above the cap of {cap:g} this partner set; "
                f"remaining budget {max(cap - now, 0):.3f}. The node refuses to train.")
        return now, after

    def _epsilon_after(self, entries: list[LedgerEntry], sigma: float, q: float, steps: int) -> dict[str, float]:
        """ε (PRV and RDP) over the ledger plus one more release."""
        history = [e.history_entry for e in entries] + [(sigma, q, steps)]
        return {k: epsilon(history, self.policy.delta, k) for k in ("prv", "rdp")}

    def _charge(self, run_id: int, server_round: int, sigma: float, q: float, steps: int, max_grad_norm: float,
                eps: dict[str, float]) -> None:
        """Append one release, with the ε after it, to the ledger."""
        kind, delta = self.policy.accountant, self.policy.delta
        self.ledger.append(
            partner=self.cfg.name, run_id=run_id, server_round=server_round,
            dataset_fingerprint=self.data().dataset_fingerprint, noise_multiplier=sigma, sample_rate=q, steps=steps,
            delta=delta, max_grad_norm=max_grad_norm, accountant=kind, epsilon_after=eps[kind],
            epsilon_rdp_after=eps["rdp"], epsilon_cap=self.policy.epsilon_cap)

    def train(self, state: dict[str, torch.Tensor], server_round: int, run_id: int) -> tuple[dict[str, torch.Tensor], Metrics]:
        """One round of local training on the global `state`; with DP, charged to the ledger
        under (run_id, server_round) — or, if that round was charged for this very input
        before (a resumed or retried round), the same release sent again at no cost."""
        started = time.perf_counter()
        data, plan = self.data(), self.plan
        entries = self.counted_entries() if plan.dp_enabled else []  # read and verified once per round
        if plan.dp_enabled:
            replayed = self._replay(state, server_round, run_id, entries)
            if replayed is not None:
                return replayed
        model = self._model(state)
        seed = plan.seed * 100_003 + server_round * 1_009 + self.cfg.partner_id
        common = dict(epochs=plan.local_epochs, batch_size=plan.batch_size, lr=plan.learning_rate,
                      optimizer=plan.optimizer, seed=seed)
        metrics: Metrics = {"num-examples": int(len(data.y_train)), "partner-id": self.cfg.partner_id,
                            "dp-enabled": int(plan.dp_enabled), "unit-weight": 1}
        if not plan.dp_enabled:
            out = train_local(model, self._x(data.x_train), data.y_train, dp=None, **common)
            metrics.update({"train-loss": out.mean_loss, "local-steps": out.steps,
                            "train-seconds": time.perf_counter() - started})
            return out.state_dict, metrics
        run_plan = run_noise(**self._run_inputs(run_id, entries))
        sigma, q, steps = run_plan.noise_multiplier, run_plan.sample_rate, run_plan.steps_per_round
        self._charge_check(entries, run_id, server_round, sigma, q, steps)
        history = [e.history_entry for e in entries]
        dp = DPSettings(sigma, plan.dp_max_grad_norm, self.policy.delta, history)
        out = train_local(model, self._x(data.x_train), data.y_train, dp=dp, **common)
        delta, kind = self.policy.delta, self.policy.accountant
        eps = self._epsilon_after(entries, sigma, out.sample_rate, out.steps)
        metrics.update({
            "epsilon": eps[kind], "epsilon-prv": eps["prv"], "epsilon-rdp": eps["rdp"],
            "epsilon-run": eps[kind] - run_plan.spent_before, "epsilon-cap": self.policy.epsilon_cap,
            "epsilon-remaining": max(self.policy.epsilon_cap - eps[kind], 0.0), "delta": delta,
            "noise-multiplier": sigma, "sample-rate": out.sample_rate, "max-grad-norm": plan.dp_max_grad_norm,
            "train-loss": out.mean_loss, "local-steps": out.steps})
        metrics["train-seconds"] = time.perf_counter() - started  # data, noise planning, DP-SGD
        # the release is kept before it is charged, so every charged round can be re-sent
        self.replies.save(run_id, server_round, state, out.state_dict, metrics)
        self._charge(run_id, server_round, sigma, out.sample_rate, out.steps, plan.dp_max_grad_norm, eps)
        return out.state_dict, {**metrics, **self._ledger_metrics()}

    def _replay(self, state: dict[str, torch.Tensor], server_round: int, run_id: int,
                entries: list[LedgerEntry]) -> tuple[dict, Metrics] | None:
        charged = any(e.run_id == run_id and e.server_round == server_round for e in entries)
        cached = self.replies.load(run_id, server_round, state) if charged else None
        if cached is None:
            return None  # not charged yet, or charged for another input: `_charge_check` refuses that
        new_state, metrics = cached
        return new_state, {**metrics, **self._ledger_metrics()}

    def _ledger_metrics(self) -> Metrics:
        status = self.ledger.verify()
        return {"ledger-entries": status.entries, "ledger-ok": int(status.ok), "ledger-head": status.head_short}

    def audit(self, run: RunDir, seed: int = 0) -> AuditResult:
        """Membership audit of the run's published model on this partner's own rows."""
        data = self.data()
        run_id = run.run_id
        spent = [e for e in self.counted_entries() if e.run_id == run_id]
        norm = run.normalisation()
        x_in, x_out = (norm.apply(data.x_train), norm.apply(data.x_test)) if norm else (data.x_train, data.x_test)
        return membership_audit(
            run.model(), (x_in, data.y_train), (x_out, data.y_test), partner=self.cfg.name,
            run_id=run_id, model_kind=run.plan.model, seed=seed,
            epsilon=spent[-1].epsilon_after if spent else None, delta=self.policy.delta if spent else None)

    def evaluate(self, state: dict[str, torch.Tensor]) -> Metrics:
        started = time.perf_counter()
        data = self.data()
        out = evaluate_local(self._model(state), self._x(data.x_test), data.y_test)
        metrics: Metrics = {"num-examples": out.n, "unit-weight": 1, "partner-id": self.cfg.partner_id,
                            "num-positives": int(np.sum(data.y_test)),
                            "score-hist-pos": out.pos_hist, "score-hist-neg": out.neg_hist}
        metrics.update(out.metrics)
        metrics["eval-seconds"] = time.perf_counter() - started
        return metrics
