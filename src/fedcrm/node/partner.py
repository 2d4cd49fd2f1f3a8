"""A partner node: its own data, its own privacy account, local train and evaluate.

This is everything a ClientApp does, as plain Python: it takes the global weights and
returns new weights plus the reply records of `fedcrm.protocol`. The Flower adapter in
`clients/` only converts messages to and from these calls. The node orchestrates; the
privacy account (`fedcrm.privacy.account`) decides and records what may be released.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from fedcrm.config import PartnerConfig, PrivacyPolicy, TrainPlan
from fedcrm.config.partner import ReleaseKind
from fedcrm.data.layout import FeatureLayout
from fedcrm.data.secret import load_secret
from fedcrm.data.prepared import PreparedData, holdout_split, partner_layout, prepared, task_of
from fedcrm.ml.fedstats import Normalisation, partner_sums, row_bound
from fedcrm.ml.sketch import sketch_counts
from fedcrm.ml.vocabulary import VocabularyRelease, noised_vocabulary
from fedcrm.ml.models import build_model, model_with_state
from fedcrm.ml.evaluation import metrics_from_histograms, noised_histograms
from fedcrm.ml.training import DPSettings, TrainOutcome, evaluate_local, grad_sample_mode, train_local
from fedcrm.ml import survival
from fedcrm.ml.value import (joint_histogram, metrics_from_joint, noised_joint, predict_log_value,
                             value_metrics)
from fedcrm.ml.tree_rounds import (GROW_GRAD, GROW_HESS, HIST_GRAD, HIST_HESS, bin_codes, check_request,
                                   gradients, histograms, leaf_sums, node_at_level, sensitivity)
from fedcrm.errors import AlreadyCharged, DataError, PolicyRefusal, PrivacyBudgetError
from fedcrm.node.policy import check, check_holdout, log_refusal
from fedcrm.node.kept_statistics import KeptRelease, KeptStatistics, layout_key
from fedcrm.privacy.account import PrivacyAccount, Release, RunShape
from fedcrm.privacy.accounting import RunPlan, remember_in, round_shape
from fedcrm.privacy.ledger import REPLIES_DIR, Ledger, LedgerEntry, privacy_dir
from fedcrm.privacy.memo import MEMO_FILE, EpsilonMemo
from fedcrm.privacy.noise import os_normal
from fedcrm.privacy.parallel import Scope, Side
from fedcrm.privacy.replies import ReplyCache
from fedcrm.protocol import EvaluateReply, QueryReply, SurvivalEvaluateReply, TrainReply, ValueEvaluateReply
from fedcrm.rundir import RunDir

if TYPE_CHECKING:
    from fedcrm.contract.model import Task
    from fedcrm.ml.survival import SurvivalScale
    from fedcrm.ml.value import ValueScale
    from fedcrm.privacy.membership import AuditResult

State = dict[str, torch.Tensor]
R = TypeVar("R")


def _digest_text(digest: str, holder: str) -> str:
    return digest[:16] if digest else f"none ({holder} names no contract)"


class PartnerNode:
    def __init__(self, cfg: PartnerConfig, plan: TrainPlan, run_id: str | int | None = None) -> None:
        """One per partner and run: the ClientApp keeps it for every message of the run.
        `run_id` (Flower's) only names the run in the node's refusal log."""
        self.cfg, self.plan = cfg, plan
        self.run_id = None if run_id is None else str(run_id)
        folder = privacy_dir(cfg)  # the ledger and kept replies: apart from the work dir (a cache)
        self.ledger = Ledger.at(folder)
        self.replies = ReplyCache(folder / REPLIES_DIR)
        self._data: dict[str, tuple[tuple[object, ...], PreparedData]] = {}
        self._scorers: dict[tuple[object, ...], torch.nn.Module] = {}  # `_scoring_model`

    @property
    def policy(self) -> PrivacyPolicy:
        return self.cfg.privacy

    @property
    def egress_log(self) -> Path:
        return self.cfg.work_dir / "egress.jsonl"

    def data(self, layout: FeatureLayout | None = None) -> PreparedData:
        """Prepared once per node and layout; the on-disk cache serves later processes and
        runs. A re-exported file is prepared (and accounted) anew. The hold-out is the
        partner's (`holdout_fraction` of its policy): the run config's `test-fraction` is
        ignored. Default layout: the contract's, learned categories left out (and counted)."""
        layout = layout or self.layout
        files = [t.path for t in (self.cfg.customers, self.cfg.transactions, self.cfg.interactions) if t]
        for f in files:
            if not f.is_file():
                raise DataError(f, f"partner {self.cfg.name!r}: the export named in its config does not exist")
        stamps = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        key = layout.model_dump_json()
        if key not in self._data or self._data[key][0] != stamps:
            self._data[key] = stamps, prepared(self.cfg, self.plan.task, self.policy.holdout_fraction, layout=layout)
        return self._data[key][1]

    @cached_property
    def task(self) -> Task:
        """The run's task as this node's contract defines it."""
        return task_of(self.cfg, self.plan.task)

    @cached_property
    def value_scale(self) -> ValueScale | None:
        """A value task's target scale (`fedcrm.ml.value`); None for a 0/1 label."""
        return self.task.value_scale()

    @cached_property
    def survival_scale(self) -> SurvivalScale | None:
        """A time-to-churn task's periods (`fedcrm.ml.survival`); None for other tasks."""
        return self.task.survival_scale()

    @property
    def scale(self) -> ValueScale | SurvivalScale | None:
        """The task's joint-histogram scale (value or time to churn); None for a 0/1 label."""
        return self.value_scale or self.survival_scale

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """What the model is trained on: the 0/1 label, a value task's capped log spend on
        the unit scale (`ValueScale.unit_target`, a fractional logit), or the period a
        customer left in (`fedcrm.ml.survival`)."""
        return y if self.value_scale is None else self.value_scale.unit_target(y)

    @cached_property
    def layout(self) -> FeatureLayout:
        """The feature layout of this node's contract (learned categories without levels)."""
        return partner_layout(self.cfg)

    def run_layout(self, levels: str | None) -> FeatureLayout:
        """The run's layout: this node's contract with the levels the coordinator sends for
        its learned categories (`RoundConfig.feature_levels`), checked: every learned
        category and no other, a bounded number of short spellings (it sets the work a
        round costs). No learned category: the contract's layout, whatever was sent."""
        if not self.layout.unresolved():
            return self.layout
        try:
            parsed = json.loads(levels) if levels else None
            if not isinstance(parsed, dict):
                raise ValueError("no levels for the contract's learned categories (they come with the "
                                 "federation's statistics: a run needs federated statistics on)")
            self.layout.check_levels(parsed)
        except ValueError as exc:  # JSONDecodeError is one
            raise PolicyRefusal("train", f"feature levels: {exc}") from None
        return self.layout.with_vocabularies(parsed)

    def _admit(self, kind: str, run_id: str | int | None = None, server_round: int | None = None) -> None:
        """Refuse, and log the refusal, if the run is outside the partner's privacy policy.
        Called first thing by every release, so a refused run prepares, trains and charges nothing."""
        try:
            self._same_contract(kind)
            check(self.plan, self.policy, kind, server_round)  # type: ignore[arg-type]
            if self.plan.model == "gbdt" and kind != "query" and self.scale is not None:
                raise PolicyRefusal(kind, f"task {self.plan.task!r} predicts a {self.task.kind}: trees fit 0/1 labels "
                                          "only")
        except PolicyRefusal as refusal:
            self._refused(refusal, run_id)
            raise

    @cached_property
    def contract_digest(self) -> str:
        """The digest of this node's own copy of the consortium's contract ('' without one)."""
        if self.cfg.contract is None:
            return ""
        from fedcrm.contract.model import Contract

        return Contract.load(self.cfg.contract).digest()

    def _same_contract(self, kind: str) -> None:
        """The run must be under the contract this node holds: the fields, rules and tasks it
        prepares its data by. Both digests are named so the two sides can find the difference."""
        run, mine = self.plan.contract_digest, self.contract_digest
        if run != mine:
            raise PolicyRefusal(kind, f"the run's contract is {_digest_text(run, 'the federation config')}, this "
                                      f"node's copy is {_digest_text(mine, 'partner.toml')}: every partner must hold "
                                      "the contract the consortium agreed on")

    def _refused(self, refusal: PolicyRefusal, run_id: str | int | None) -> None:
        log_refusal(self.cfg.work_dir, self.run_id if run_id is None else str(run_id), refusal)

    @property
    def account(self) -> PrivacyAccount:
        """The partner's account; its ε results are also kept in this node's memo
        (`fedcrm.privacy.memo`), which a deployed node's next message process reads."""
        remember_in(self._memo)
        return self._account

    @cached_property
    def _account(self) -> PrivacyAccount:
        return PrivacyAccount(self.ledger, self.policy, self.cfg.name, self.data().dataset_fingerprint)

    @cached_property
    def _memo(self) -> EpsilonMemo:
        return EpsilonMemo(self.cfg.work_dir / MEMO_FILE, load_secret(self.cfg.secret_file))

    @cached_property
    def split(self) -> str:
        return holdout_split(self.cfg)

    def scope(self, side: Side) -> Scope:
        """The customers a release reads: training rounds and statistics the training side,
        evaluations the hold-out (`fedcrm.privacy.parallel`)."""
        return Scope(split=self.split, holdout_fraction=self.policy.holdout_fraction, side=side)

    def shape(self, statistics_noise: float = 0.0) -> RunShape:
        """`statistics_noise` matters only to a plan made before the run (`plan_run`): once
        the run has started, its statistics are in the ledger."""
        plan = self.plan
        noised = self.policy.min_eval_noise_multiplier > 0 or plan.dp_enabled
        rows = len(self.data().x_train)
        # a boosting round is one Gaussian release over every training row: one step at sample rate 1
        batch, epochs = (max(rows, 1), 1) if plan.model == "gbdt" else (plan.batch_size, plan.local_epochs)
        baseline = plan.local_baseline and "baseline" in self.policy.releases
        evaluations = len(plan.evaluation_rounds()) if "evaluate" in self.policy.releases else 0
        return RunShape(rows=rows, batch_size=batch, local_epochs=epochs,
                        rounds=plan.num_server_rounds, target_run_epsilon=plan.dp_target_epsilon,
                        max_grad_norm=self.release_sensitivity(), statistics_noise=statistics_noise,
                        evaluations=evaluations + baseline,
                        evaluation_floor=self.policy.min_eval_noise_multiplier if noised else -1.0,
                        baseline_steps=self.baseline_steps(rows) if baseline else 0,
                        training=self.scope("training"), holdout=self.scope("holdout"))

    def baseline_steps(self, rows: int) -> int:
        """A local-only baseline takes the steps this partner takes over the whole run: every
        round's local epochs, one after the other, from the run's starting model."""
        return round_shape(rows, self.plan.batch_size, self.plan.local_epochs)[0] * self.plan.num_server_rounds

    def release_sensitivity(self) -> float:
        """The L2 bound on one row's contribution to a training release: DP-SGD's clipping
        norm, or the boosting round's bound on its leaf sums (`fedcrm.ml.tree_rounds`)."""
        if self.plan.model == "gbdt":  # the larger of a round's two kinds
            copies = self.layout.width if self.plan.tree_splits == "histogram" else self.plan.gbdt_trees_per_round
            return sensitivity(copies, self.plan.tree_grad_clip)
        return self.plan.dp_max_grad_norm

    def evaluation_sigma(self, run_id: str, entries: list[LedgerEntry] | None = None) -> float:
        """σ on the counts of this run's evaluations. With DP: calibrated so the run's
        evaluations add at most its target ε to the hold-out customers, never under the
        partner's floor; without DP (if the policy allows such a run): the floor (0: exact)."""
        floor = self.policy.min_eval_noise_multiplier
        if not self.plan.dp_enabled:
            return floor
        return self.account.evaluation_noise(run_id, self.shape(), floor, entries)

    def statistics_sigma(self) -> float:
        """The noise of this node's statistics: the run's σ, but never under the partner's floor."""
        return max(self.plan.stats_noise_multiplier, self.policy.min_stats_noise_multiplier)

    def _new_statistics_sigma(self) -> float:
        """σ of the statistics release this run will charge: 0 without federated statistics,
        exact sums, or a kept release the run will be sent again at no cost."""
        sigma = self.statistics_sigma()
        if not self.plan.federated_stats or sigma <= 0:
            return 0.0
        if self._reusable_statistics(sigma, self.account.entries()) is not None:
            return 0.0
        return sigma / math.sqrt(1 + bool(self.layout.unresolved()) + self.wants_sketch)  # as `statistics` charges it

    def _reusable_statistics(self, sigma: float, entries: list[LedgerEntry]) -> KeptRelease | None:
        """The kept release of this dataset with at least `sigma`, if the ledger shows its charge."""
        kept = self.kept_statistics.load(self.data().dataset_fingerprint, sigma, layout_key(self.layout),
                                         sketch=self.wants_sketch)
        return kept if kept is not None and self.account.charged(kept.run_id, 0, entries) else None

    def plan_run(self, run_id: str | int | None = None) -> RunPlan:
        """What this run costs: σ calibrated against everything spent before it, ε per round."""
        return self.account.plan(self.shape(self._new_statistics_sigma()), None if run_id is None else str(run_id))

    def _check_periods(self, state: State, kind: str) -> None:
        """The model must answer the task's question: a hazard per period of a time-to-churn
        task, none for any other."""
        periods = self.survival_scale.periods if self.survival_scale is not None else None
        sent = state[survival.PERIODS_KEY].shape[0] if survival.PERIODS_KEY in state else None
        if sent != periods:
            raise PolicyRefusal(kind, f"the model sent has {sent or 'no'} period intercepts; task "
                                      f"{self.plan.task!r} has {periods or 'no'} periods")

    def _model(self, state: State, data: PreparedData, kind: str = "train") -> torch.nn.Module:
        self._check_periods(state, kind)
        try:
            if kind == "train" or self.plan.model == "gbdt":
                return model_with_state(self.plan.model, data.x_train.shape[1], state, hidden=self.plan.model_hidden)
            return self._scoring_model(data.x_train.shape[1], state)
        except (ValueError, RuntimeError) as exc:  # trees the checks refuse; arrays of other shapes
            raise PolicyRefusal(kind, f"the model sent: {str(exc).splitlines()[0][:200]}") from None

    def _scoring_model(self, width: int, state: State) -> torch.nn.Module:
        """A network that only scores (an evaluation, a baseline's) is built once per shape of
        state and loaded with each state sent: building one initialises weights the state
        then overwrites, 6 % of a simulated partner's busy time (`benchmarks/overhead.py`).
        Training builds its own: DP-SGD hooks the network it trains."""
        shapes = tuple((k, tuple(v.shape)) for k, v in state.items())
        model = self._scorers.get(shapes)
        if model is None:
            model = model_with_state(self.plan.model, width, state, hidden=self.plan.model_hidden)
            self._scorers = {shapes: model}  # one shape at a time: a run sends one
        else:
            model.load_state_dict(state)
        return model

    def _resolved(self, layout: FeatureLayout | None, kind: str = "train") -> FeatureLayout:
        """The layout a model is trained or evaluated in: every category with its levels."""
        layout = layout or self.layout
        if layout.unresolved():
            raise PolicyRefusal(kind, "the contract learns category levels from the federation's statistics and "
                                         "the coordinator sent none: a run needs federated statistics on")
        return layout

    @staticmethod
    def _x(x: np.ndarray, normalisation: Normalisation | None) -> np.ndarray:
        return normalisation.apply(x) if normalisation is not None else x

    # ------------------------------------------------------------ releases
    def feature_sums(self, run_id: str | int, ledger_receipt: int | None = None) -> QueryReply:
        """The statistics reply alone (`statistics`)."""
        return self.statistics(run_id, ledger_receipt)[0]

    def statistics(self, run_id: str | int, ledger_receipt: int | None = None
                   ) -> tuple[QueryReply, VocabularyRelease | None]:
        """Column sums over the training rows for the federation's statistics, noised with
        the larger of the run's σ and the partner's floor (`min_stats_noise_multiplier`), and
        charged to the ledger as round 0 of the run; with them, when the contract learns
        category levels, the frequent values of those categories (`fedcrm.ml.vocabulary`)."""
        self._admit("statistics", run_id)
        data, sigma, fixed = self.data(), self.statistics_sigma(), self.layout.fixed_part()
        learned = bool(self.layout.unresolved())
        numeric = data.x_train[:, :fixed.n_numeric]
        if sigma <= 0:
            sums = partner_sums(data.x_train, layout=fixed)
            vocab = noised_vocabulary(data.learned_counts, self.layout, 0.0) if learned else None
            sketch = sketch_counts(numeric).ravel().tolist() if self.wants_sketch else None
            return QueryReply(partner_id=self.cfg.partner_id, num_examples=len(data.x_train), stat_n=sums.n,
                              stat_sum=sums.sum, stat_sumsq=sums.sumsq, stat_onehot=sums.onehot,
                              stat_vocab=vocab.flat_counts() if vocab else None, stat_sketch=sketch), vocab
        # the reuse check and the charge under one hold of the ledger's lock: two runs that
        # start together on the same data pay for one release, not two
        with self.ledger.exclusive():
            entries = self.account.entries()
            reused = self._reusable_statistics(sigma, entries)
            if reused is not None:  # sent again: no new charge
                sums, vocab, after = reused.sums, reused.vocabulary, entries[-1].epsilon_after
                sketch = reused.sketch if self.wants_sketch else None
            else:
                # sums, vocabulary counts (learned categories) and grid counts (gbdt runs):
                # m Gaussian mechanisms of multiplier σ on the same rows, one of multiplier
                # σ/√m together (`fedcrm.ml.vocabulary`, `fedcrm.ml.sketch`)
                mechanisms = 1 + learned + self.wants_sketch
                release = Release(run_id=str(run_id), server_round=0, noise_multiplier=sigma / math.sqrt(mechanisms),
                                  sample_rate=1.0, steps=1, max_grad_norm=row_bound(fixed.n_numeric, fixed.width),
                                  kind="statistics", scope=self.scope("training"))
                with self.account.charge(release) as cost:
                    sums = partner_sums(data.x_train, sigma, fixed)
                    vocab = noised_vocabulary(data.learned_counts, self.layout, sigma) if learned else None
                    sketch = sketch_counts(numeric, sigma).ravel().tolist() if self.wants_sketch else None
                    self.kept_statistics.save(KeptRelease(fingerprint=data.dataset_fingerprint, noise_multiplier=sigma,
                                                          run_id=str(run_id), sums=sums, vocabulary=vocab,
                                                          layout=layout_key(self.layout), sketch=sketch))
                after = cost.after
        if reused is None:
            self._ready_to_evaluate(str(run_id), 0)
        return QueryReply(partner_id=self.cfg.partner_id, num_examples=round(sums.n), stat_n=sums.n,
                          stat_sum=sums.sum, stat_sumsq=sums.sumsq, stat_onehot=sums.onehot,
                          stat_vocab=vocab.flat_counts() if vocab else None, stat_sketch=sketch, epsilon=after,
                          delta=self.policy.delta, **self.account.head(ledger_receipt).model_dump()), vocab

    @property
    def wants_sketch(self) -> bool:
        """The statistics of a gbdt run with histogram splits carry the numeric columns' grid
        counts (`fedcrm.ml.sketch`). Random splits do without: with DP the counts' noise
        blurs the cuts, and the extra mechanism takes its share of ε from the leaf values (on
        Telco at ε = 3 single runs vary by about ±0.01 AUC either way, so no gain was seen)."""
        return self.plan.model == "gbdt" and self.plan.tree_splits == "histogram"

    @property
    def kept_statistics(self) -> KeptStatistics:
        """Next to the ledger: privacy state, not cache."""
        return KeptStatistics(self.ledger.path.parent / "statistics")

    def train(self, state: State, server_round: int, run_id: str | int, normalisation: Normalisation | None = None,
              ledger_receipt: int | None = None, layout: FeatureLayout | None = None) -> tuple[State, TrainReply]:
        """One round of local training on the global `state`; with DP, charged to the ledger
        under (run_id, server_round), or, if that round was charged for this very input
        before (a resumed or retried round), the same release sent again at no cost.
        `ledger_receipt` (the round config's): the reply proves the ledger's entry of that
        number still has the hash the coordinator's receipt recorded."""
        started, run_id = time.perf_counter(), str(run_id)
        self._admit("train", run_id, server_round)
        data, plan = self.data(self._resolved(layout)), self.plan
        if not plan.dp_enabled:
            return self._train_round(state, data, normalisation, run_id, server_round, [], ledger_receipt, started)
        entries = self.account.entries()  # read and verified once before the lock
        return self._released_once(
            "train", run_id, server_round, state, entries,
            release=lambda: self._train_round(state, data, normalisation, run_id, server_round, entries,
                                              ledger_receipt, started),
            resend=lambda kept: (kept[0], TrainReply.from_dict({**kept[1], **self.account.head(ledger_receipt).to_dict()})))

    def _released_once(self, kind: ReleaseKind, run_id: str, server_round: int, received: State,
                       entries: list[LedgerEntry], release: Callable[[], R],
                       resend: Callable[[tuple[State, dict]], R]) -> R:
        """A charged release is computed once: for a round charged before on this very input
        (a resumed or retried round, a message delivered twice) the kept copy is sent again,
        at no cost. That includes a copy another ClientApp process was still computing when
        this one read the ledger: its charge, made first under the ledger's lock, turns
        this one's into `AlreadyCharged`, and the copy it kept is there by then. For any
        other input the ledger refuses the round."""
        if self.account.charged(run_id, server_round, entries, kind):
            kept = self.replies.load(run_id, server_round, received, kind)
            if kept is not None:
                return resend(kept)
        try:
            return release()
        except AlreadyCharged:
            kept = self.replies.load(run_id, server_round, received, kind)
            if kept is None:
                raise
            return resend(kept)

    def _train_round(self, state: State, data: PreparedData, normalisation: Normalisation | None, run_id: str,
                     server_round: int, entries: list[LedgerEntry], ledger_receipt: int | None,
                     started: float) -> tuple[State, TrainReply]:
        plan = self.plan
        model, x = self._model(state, data), self._x(data.x_train, normalisation)
        if plan.model == "gbdt":
            return self._boost(state, model, x, data, run_id, server_round, entries, ledger_receipt, started)
        y = self._targets(data.y_train)
        common = self._training_settings(plan.local_epochs, server_round)
        base = dict(partner_id=self.cfg.partner_id, num_examples=len(data.y_train), dp_enabled=int(plan.dp_enabled))
        if not plan.dp_enabled:
            out = train_local(model, x, y, dp=None, **common)
            return out.state_dict, TrainReply(**base, train_loss=out.mean_loss, local_steps=out.steps,
                                              train_seconds=time.perf_counter() - started)
        noise = self.account.noise(run_id, self.shape(), entries)
        release = Release(run_id=run_id, server_round=server_round, noise_multiplier=noise.noise_multiplier,
                          sample_rate=noise.sample_rate, steps=noise.steps_per_round, max_grad_norm=plan.dp_max_grad_norm,
                          kind="train", scope=self.scope("training"))
        with self.account.charge(release) as cost:
            dp = DPSettings(release.noise_multiplier, plan.dp_max_grad_norm, self.policy.delta, cost.history,
                            grad_sample_mode(plan.model))
            out = train_local(model, x, y, dp=dp, **common)
            reply = self._dp_reply(base, cost, noise.spent_before, release, out.steps, out.sample_rate, started)
            # the release is kept before it is charged, so every charged round can be re-sent
            self.replies.save(run_id, server_round, state, out.state_dict, reply.to_dict())
        self._ready_to_evaluate(run_id, server_round)
        return out.state_dict, reply.model_copy(update=self.account.head(ledger_receipt).model_dump())

    def _training_settings(self, epochs: int, server_round: int) -> dict:
        """`train_local`'s settings from the plan: its batch, step size and optimiser, and a
        seed per run, round and partner (it steers non-DP shuffling only)."""
        plan = self.plan
        return dict(epochs=epochs, batch_size=plan.batch_size, lr=plan.learning_rate, optimizer=plan.optimizer,
                    seed=plan.seed * 100_003 + server_round * 1_009 + self.cfg.partner_id,
                    criterion=survival.HazardLoss() if self.survival_scale is not None else None)

    def _dp_reply(self, base: dict, cost, spent_before: float, release: Release, steps: int,  # noqa: ANN001
                  sample_rate: float, started: float) -> TrainReply:
        """A charged training round's reply: where the partner's ε stands, and the mechanism.
        The mean loss over the round's rows is a statistic no noise covers: a DP round does
        not release it (the hold-out log-loss is DP)."""
        return TrainReply(
            **base, train_loss=math.nan, local_steps=steps, epsilon=cost.after, epsilon_prv=cost.after_prv,
            epsilon_rdp=cost.after_rdp, epsilon_run=cost.after - spent_before, epsilon_cap=self.policy.epsilon_cap,
            epsilon_remaining=max(self.policy.epsilon_cap - cost.after, 0.0), delta=self.policy.delta,
            noise_multiplier=release.noise_multiplier, sample_rate=sample_rate, max_grad_norm=release.max_grad_norm,
            train_seconds=time.perf_counter() - started)  # data, noise planning, the release

    def _boost(self, state: State, model: torch.nn.Module, x: np.ndarray, data: PreparedData, run_id: str,
               server_round: int, entries: list[LedgerEntry], ledger_receipt: int | None, started: float
               ) -> tuple[State, TrainReply]:
        """A boosting round: the clipped gradient and hessian sums of the training rows in
        every leaf of the trees the coordinator sent, or in every bin of every column of a
        tree level's nodes; noised with the run's σ times the round's sensitivity, charged
        as one release, returned in the arrays it was sent (`fedcrm.ml.tree_rounds`)."""
        plan = self.plan
        if self.scale is not None:
            raise PolicyRefusal("train", f"task {plan.task!r} predicts a {self.task.kind}; boosted trees here grow on "
                                         "0/1 labels (use a logistic or mlp model)")
        try:
            req = check_request(state, x.shape[1], plan.gbdt_bins)
        except ValueError as exc:
            raise PolicyRefusal("train", f"the boosting round sent: {exc}") from None
        trees = req.feature.shape[0]
        # every release's sensitivity is one the run was planned with: histogram splits grow
        # one tree at a time; random splits send the plan's batch, leaf sums only
        planned = trees == 1 if plan.tree_splits == "histogram" else (
            req.level is None and trees == plan.gbdt_trees_per_round)
        if not planned:
            asked = "histograms" if req.level is not None else "leaf sums"
            raise PolicyRefusal("train", f"the round asks for {asked} of {trees} trees, which the run's plan "
                                         f"({plan.tree_splits} splits) does not")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        with torch.no_grad():
            margin = model(xt)
        g, h = gradients(margin, data.y_train, plan.tree_grad_clip)
        if req.level is None:
            sums, keys = leaf_sums(g, h, xt, req.feature, req.threshold, req.depth), (GROW_GRAD, GROW_HESS)
            bound = sensitivity(trees, plan.tree_grad_clip)
        else:
            codes = bin_codes(x, req.thresholds)  # the coordinator's cuts: any numbers cost the same
            node = node_at_level(xt, req.feature, req.threshold, req.level)
            sums = histograms(g, h, codes, node, 2**req.level, plan.gbdt_bins)
            keys, bound = (HIST_GRAD, HIST_HESS), sensitivity(x.shape[1], plan.tree_grad_clip)
        out = dict(state)
        base = dict(partner_id=self.cfg.partner_id, num_examples=len(data.y_train), dp_enabled=int(plan.dp_enabled))
        if not plan.dp_enabled:
            for key, value in zip(keys, sums):
                out[key] = torch.as_tensor(value, dtype=torch.float32)
            loss = float(torch.nn.functional.binary_cross_entropy_with_logits(margin, torch.from_numpy(data.y_train)))
            return out, TrainReply(**base, train_loss=loss, local_steps=1, train_seconds=time.perf_counter() - started)
        noise = self.account.noise(run_id, self.shape(), entries)
        release = Release(run_id=run_id, server_round=server_round, noise_multiplier=noise.noise_multiplier,
                          sample_rate=1.0, steps=1, max_grad_norm=bound, kind="train", scope=self.scope("training"))
        with self.account.charge(release) as cost:
            std = release.noise_multiplier * bound
            for key, value in zip(keys, sums):
                out[key] = torch.as_tensor(value + os_normal(std, value.shape), dtype=torch.float32)
            reply = self._dp_reply(base, cost, noise.spent_before, release, 1, 1.0, started)
            self.replies.save(run_id, server_round, state, out, reply.to_dict())
        self._ready_to_evaluate(run_id, server_round)
        return out, reply.model_copy(update=self.account.head(ledger_receipt).model_dump())

    def evaluate(self, state: State, normalisation: Normalisation | None = None, run_id: str | int | None = None,
                 server_round: int = 0, ledger_receipt: int | None = None,
                 layout: FeatureLayout | None = None,
                 value_edges: list[float] | None = None) -> EvaluateReply | ValueEvaluateReply | SurvivalEvaluateReply:
        """Metrics of the global `state` on the partner's own hold-out; refused when the
        hold-out is smaller than the policy's `min_holdout_rows`.

        The release is the per-class score histograms, noised (`evaluation_sigma`) and
        charged under (run, round, evaluate) to the hold-out side of the ledger; every
        metric in the reply is computed from the noised counts. A round charged before for
        this very model is answered with the kept reply at no cost; another model for a
        charged round is refused."""
        started = time.perf_counter()
        self._admit("evaluate", run_id, server_round)
        edges = self._edges(value_edges, "evaluate")
        self._check_periods(state, "evaluate")  # refused before anything is charged
        data = self.data(self._resolved(layout, "evaluate"))
        self._check_holdout(data, run_id)
        run_id = str(run_id if run_id is not None else self.run_id or "local")
        return self._evaluation(lambda: self._model(state, data, "evaluate"), state, data, normalisation, run_id,
                                server_round, ledger_receipt, started, edges)

    def _ready_to_evaluate(self, run_id: str, server_round: int) -> None:
        """After a charged release, the ε of the evaluation the plan holds for this round,
        computed while Opacus is loaded (`PrivacyAccount.anticipate`): the evaluation's
        own process then finds every value it accounts in the node's memo. A release the
        node will refuse, or any other coordinator's order, only finds the memo without
        it: the evaluation then computes its ε itself."""
        if "evaluate" not in self.policy.releases or server_round not in self.plan.evaluation_rounds():
            return
        try:
            entries = self.account.entries()  # read and verified once for both
            sigma = self.evaluation_sigma(run_id, entries)
            if sigma > 0:
                self.account.anticipate(self._evaluation_release(run_id, server_round, sigma), entries)
        except PrivacyBudgetError:
            pass  # an evaluation the node cannot account is refused by its own message

    def _evaluation_release(self, run_id: str, server_round: int, sigma: float) -> Release:
        """The hold-out release of one evaluation: counts (sensitivity 1) noised at σ. One
        recipe for the charge and for its anticipation, so both account the same history."""
        return Release(run_id=run_id, server_round=server_round, noise_multiplier=sigma, sample_rate=1.0, steps=1,
                       max_grad_norm=1.0, kind="evaluate", scope=self.scope("holdout"))

    def _edges(self, value_edges: list[float] | None, kind: str) -> np.ndarray | None:
        """A value or time-to-churn task's predicted-side edges as sent (or even ones),
        refused if malformed."""
        if self.scale is None:
            return None
        try:
            return self.scale.check_edges(value_edges)
        except ValueError as exc:
            raise PolicyRefusal(kind, str(exc)) from None

    def _check_holdout(self, data: PreparedData, run_id: str | int | None) -> None:
        try:
            check_holdout(len(data.y_test), self.policy)
        except PolicyRefusal as refusal:
            self._refused(refusal, run_id)
            raise

    def _evaluation(self, model: Callable[[], torch.nn.Module], state: State, data: PreparedData,
                    normalisation: Normalisation | None, run_id: str, server_round: int, ledger_receipt: int | None,
                    started: float, edges: np.ndarray | None = None
                    ) -> EvaluateReply | ValueEvaluateReply | SurvivalEvaluateReply:
        """The hold-out release of `model` (built only if the release is computed): the
        run's evaluation noise, charged as (run, round, evaluate); kept and sent again for
        the same `state`. One mechanism for both kinds of task; only the counts differ
        (`_score_reply`, `_joint_reply`)."""
        reply_type: type[EvaluateReply] | type[ValueEvaluateReply] | type[SurvivalEvaluateReply]
        if self.scale is not None:
            reply_type = ValueEvaluateReply if self.value_scale is not None else SurvivalEvaluateReply
            compute = self._joint_reply(model, data, normalisation, started, edges)
        else:
            reply_type, compute = EvaluateReply, self._score_reply(model, data, normalisation, started)
        entries = self.account.entries()
        sigma = self.evaluation_sigma(run_id, entries)
        if sigma <= 0:  # exact and uncharged: only a run without DP, under a policy allowing it
            return compute(0.0, None).model_copy(update=self.account.head(ledger_receipt).model_dump())
        release = self._evaluation_release(run_id, server_round, sigma)

        def charged() -> EvaluateReply | ValueEvaluateReply | SurvivalEvaluateReply:
            with self.account.charge(release) as cost:
                reply = compute(sigma, cost.after)
                self.replies.save(run_id, server_round, state, {}, reply.to_dict(), "evaluate")
            return reply.model_copy(update=self.account.head(ledger_receipt).model_dump())

        return self._released_once(
            "evaluate", run_id, server_round, state, entries, release=charged,
            resend=lambda kept: reply_type.from_dict({**kept[1], **self.account.head(ledger_receipt).to_dict()}))

    def _score_reply(self, model: Callable[[], torch.nn.Module], data: PreparedData,
                     normalisation: Normalisation | None,
                     started: float) -> Callable[[float, float | None], EvaluateReply]:
        """A 0/1 task's reply at noise σ: the per-class score histograms, noised (σ > 0,
        every metric from the noised counts) or exact; ε is the charge's."""

        def reply(noise: float, epsilon: float | None) -> EvaluateReply:
            out = evaluate_local(model(), self._x(data.x_test, normalisation), data.y_test)
            if noise > 0:
                pos, neg = noised_histograms(out.pos_hist, out.neg_hist, noise)
                metrics, n, positives = metrics_from_histograms(pos, neg), max(sum(pos) + sum(neg), 0), max(sum(pos), 0)
            else:
                pos, neg, metrics, n, positives = out.pos_hist, out.neg_hist, out.metrics, out.n, int(np.sum(data.y_test))
            return EvaluateReply(**metrics.model_dump(), partner_id=self.cfg.partner_id, num_examples=n,
                                 num_positives=positives, score_hist_pos=pos, score_hist_neg=neg,
                                 eval_seconds=time.perf_counter() - started,
                                 epsilon=epsilon if noise > 0 else math.nan,  # every partner sends every key
                                 delta=self.policy.delta if noise > 0 else math.nan, noise_multiplier=noise)
        return reply

    def _joint_reply(self, model: Callable[[], torch.nn.Module], data: PreparedData,
                     normalisation: Normalisation | None, started: float,
                     edges: np.ndarray | None) -> Callable[[float, float | None], ValueEvaluateReply | SurvivalEvaluateReply]:
        """A value or time-to-churn task's reply at noise σ: the joint histogram of
        (predicted bin, outcome) (one customer, one cell: sensitivity 1, as the score
        histograms, whatever the predicted-side `edges`), noised (every metric from the
        noised counts) or exact. Only the counts and their metrics are the task's own."""
        scale = self.scale
        assert scale is not None
        edges = scale.check_edges(None) if edges is None else edges

        def value(net: torch.nn.Module, x: np.ndarray, noise: float) -> tuple[list[int], BaseModel]:
            assert self.value_scale is not None
            predicted = predict_log_value(net, x, self.value_scale)
            exact = joint_histogram(data.y_test, predicted, self.value_scale, edges)
            if noise > 0:
                counts = noised_joint(exact, noise)
                return counts, metrics_from_joint(np.asarray(counts, dtype=np.float64), self.value_scale, edges)
            return [int(v) for v in exact.ravel()], value_metrics(data.y_test, predicted, self.value_scale)

        def time_to_churn(net: torch.nn.Module, x: np.ndarray, noise: float) -> tuple[list[int], BaseModel]:
            # each risk bin stands at the curve the model's period intercepts give it
            assert self.survival_scale is not None
            curves = survival.survival_curves(net, x)
            exact = survival.joint_histogram(data.y_test, curves, self.survival_scale, edges)
            if noise > 0:
                counts = noised_joint(exact, noise)
                return counts, survival.metrics_from_joint(counts, self.survival_scale, edges,
                                                           survival.period_intercepts(net))
            return [int(v) for v in exact.ravel()], survival.survival_metrics(data.y_test, curves, self.survival_scale)

        reply_type, field, counted = ((ValueEvaluateReply, "value_hist", value) if self.value_scale is not None
                                      else (SurvivalEvaluateReply, "survival_hist", time_to_churn))

        def reply(noise: float, epsilon: float | None) -> ValueEvaluateReply | SurvivalEvaluateReply:
            counts, metrics = counted(model(), self._x(data.x_test, normalisation), noise)
            return reply_type(**metrics.model_dump(), **{field: counts}, partner_id=self.cfg.partner_id,
                              num_examples=max(sum(counts), 0), eval_seconds=time.perf_counter() - started,
                              epsilon=epsilon if noise > 0 else math.nan,
                              delta=self.policy.delta if noise > 0 else math.nan, noise_multiplier=noise)
        return reply

    def baseline(self, run_id: str | int, normalisation: Normalisation | None = None,
                 ledger_receipt: int | None = None, layout: FeatureLayout | None = None,
                 value_edges: list[float] | None = None) -> EvaluateReply | ValueEvaluateReply | SurvivalEvaluateReply:
        """The local-only baseline the run asked for (`TrainPlan.local_baseline`): the run's
        starting model trained on this partner's rows alone, for the steps it took in the
        whole run at the run's noise and sample rate (charged as a 'baseline' release on
        the training side), then evaluated on its hold-out like the federation's model
        (one more evaluation, planned with the others). The model never leaves the node;
        the coordinator sends nothing but the run's normalisation and levels, so there is
        no model of its choosing in it. A retried message is answered from what was kept."""
        started, run_id = time.perf_counter(), str(run_id)
        self._admit("baseline", run_id)
        edges = self._edges(value_edges, "baseline")  # refused before anything is spent
        data, plan = self.data(self._resolved(layout, "baseline")), self.plan
        self._check_holdout(data, run_id)
        server_round = plan.baseline_round
        assert server_round is not None  # `_admit` refuses a run that declared no baseline
        x, entries = self._x(data.x_train, normalisation), self.account.entries()

        def fit() -> State:
            model = build_model(plan.model, data.x_train.shape[1], seed=plan.seed, hidden=plan.model_hidden,
                                periods=self.survival_scale.periods if self.survival_scale is not None else None)
            return self._train_baseline(model, x, data, run_id, server_round, entries).state_dict

        if plan.dp_enabled:  # a kept model counts only once its charge is in the ledger (it is kept just before)
            trained = self._released_once("baseline", run_id, server_round, {}, entries, release=fit,
                                          resend=lambda kept: kept[0])
        else:
            kept = self.replies.load(run_id, server_round, {}, "baseline")
            trained = kept[0] if kept is not None else fit()
        return self._evaluation(lambda: self._model(trained, data, "baseline"), trained, data, normalisation,
                                run_id, server_round, ledger_receipt, started, edges)

    def _train_baseline(self, model: torch.nn.Module, x: np.ndarray, data: PreparedData, run_id: str,
                        server_round: int, entries: list[LedgerEntry]) -> TrainOutcome:
        plan = self.plan
        y = self._targets(data.y_train)
        common = self._training_settings(plan.local_epochs * plan.num_server_rounds, server_round)
        if not plan.dp_enabled:
            out = train_local(model, x, y, dp=None, **common)
            self.replies.save(run_id, server_round, {}, out.state_dict, {}, "baseline")
            return out
        noise = self.account.noise(run_id, self.shape(), entries)  # the run's σ, fixed by its first round
        release = Release(run_id=run_id, server_round=server_round, noise_multiplier=noise.noise_multiplier,
                          sample_rate=noise.sample_rate, steps=self.baseline_steps(len(data.x_train)),
                          max_grad_norm=plan.dp_max_grad_norm, kind="baseline", scope=self.scope("training"))
        with self.account.charge(release) as cost:
            dp = DPSettings(release.noise_multiplier, plan.dp_max_grad_norm, self.policy.delta, cost.history,
                            grad_sample_mode(plan.model))
            out = train_local(model, x, y, dp=dp, **common)
            self.replies.save(run_id, server_round, {}, out.state_dict, {}, "baseline")  # kept before it is charged
        return out

    def audit(self, run: RunDir, seed: int = 0) -> AuditResult:
        """Membership audit of the run's published model on this partner's own rows, each
        scored by the loss it was trained with: a value task's target is its unit-scaled
        spend (`_targets`), not the spend itself."""
        from fedcrm.privacy.membership import membership_audit  # scikit-learn: not in every node process

        data, run_id = self.data(run.layout()), run.run_id
        spent = [e for e in self.account.entries() if e.run_id == run_id]
        norm = run.normalisation()
        return membership_audit(
            run.model(), (self._x(data.x_train, norm), self._targets(data.y_train)),
            (self._x(data.x_test, norm), self._targets(data.y_test)),
            partner=self.cfg.name, run_id=run_id, model_kind=run.plan.model, seed=seed,
            epsilon=spent[-1].epsilon_after if spent else None, delta=self.policy.delta if spent else None)
