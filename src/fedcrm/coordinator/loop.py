"""One federated run on the coordinator: statistics, round 0, FedAvg rounds, outputs.

`run_federation` is everything the ServerApp does, as plain Python over a Flower `Grid`:
ask every partner for its column sums (the federation's normalisation), evaluate the
starting model, run the rounds through the recording strategy, checkpoint after each, and
publish the model with its records. With `plan.resume_from` it continues an interrupted
run after its last completed round: same job id (so partners' ledgers see the same run),
rounds numbered on, nothing re-run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcrm.config import FederationConfig, TrainPlan
from fedcrm.errors import ConfigError
from fedcrm.coordinator.aggregation import UNIT_WEIGHT_KEY, WEIGHT_KEY, aggregate_train_metrics, evaluate_aggregator
from fedcrm.coordinator.auditlog import AuditLog
from fedcrm.coordinator.boosting import FedBoost
from fedcrm.coordinator.receipts import ReceiptBook, receipts_path
from fedcrm.coordinator.recorder import RunRecorder
from fedcrm.coordinator.strategy import QuorumLost, RecordingStrategy, client_level_dp
from fedcrm.coordinator.value_edges import PredictedEdges
from fedcrm.contract.model import Contract
from fedcrm.contract.tables import load_contract
from fedcrm.data.layout import FeatureLayout
from fedcrm.ml.fedstats import FeatureStats, PartnerSums, combine
from fedcrm.ml.sketch import split_points
from fedcrm.ml.survival import SurvivalScale
from fedcrm.ml.value import ValueScale
from fedcrm.ml.vocabulary import VocabularyRelease, combine_vocabularies
from fedcrm.ml.models import build_model
from fedcrm.protocol import BASELINE_MESSAGE, CONFIG, METRICS, VOCABULARY, QueryReply, RoundConfig
from fedcrm.rundir import ClientLevelPoint, RunDir


def partner_names(plan: TrainPlan) -> dict[int, str]:
    return FederationConfig.load(plan.federation_config).names() if plan.federation_config else {}


def run_contract(plan: TrainPlan) -> Contract:
    """The federation's contract (the standard one when it names none)."""
    return load_contract(FederationConfig.load(plan.federation_config).contract if plan.federation_config else None)


def run_scale(plan: TrainPlan) -> ValueScale | SurvivalScale | None:
    """The run's task's joint-histogram scale (value or time to churn), from the
    federation's contract (None: a 0/1 label)."""
    try:
        task = run_contract(plan).task(plan.task)
    except Exception:  # noqa: BLE001 - a task the contract lacks: every node refuses the run with the reason
        return None
    return task.scale()


def run_layout(plan: TrainPlan) -> FeatureLayout:
    """The feature layout of the federation's contract (the standard one when it names none)."""
    return FeatureLayout.from_contract(run_contract(plan))


def _audit_round(audit: AuditLog | None, recorder: RunRecorder, job_round: int) -> None:
    rec = recorder.rounds.get(job_round)
    if audit is None or rec is None:
        return
    evaluated = rec.evaluated()
    audit.record("round-completed", actor="serverapp", run_id=recorder.run_id, round=job_round,
                 participants=sorted(n for n, p in rec.partners.items() if p.train),
                 failures=[{"partner": f.partner, "kind": f.kind, "reason": f.reason} for f in rec.failures],
                 auc=evaluated.auc if evaluated else None)


def wait_for_nodes(grid: Grid, needed: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= needed or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def federated_statistics(grid: Grid, strategy: RecordingStrategy, plan: TrainPlan, job_id: str,
                         layout: FeatureLayout) -> FeatureStats:
    """Ask every connected partner for its column sums (a Flower query) and combine them."""
    nodes = wait_for_nodes(grid, plan.min_partners, plan.round_timeout)
    config = RoundConfig(job_id=job_id).record()
    messages = strategy.track_sent(0, "query", [
        Message(RecordDict({CONFIG: config}), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes])
    replies = list(grid.send_and_receive(messages, timeout=plan.round_timeout))
    replies = strategy.track_replies(0, "query", replies)  # a ledger rollback's sums are not combined
    ok = [m for m in replies if not m.has_error()]
    sums = [QueryReply.from_dict(m.content[METRICS]) for m in ok]
    fixed = layout.fixed_part()
    # noised by each partner's own floor, whatever the plan asked: a charged release says so
    stats = combine([PartnerSums(n=s.stat_n, sum=s.stat_sum, sumsq=s.stat_sumsq, onehot=s.stat_onehot) for s in sums],
                    noised=any(s.epsilon is not None for s in sums), layout=fixed)
    sketches = [np.asarray(s.stat_sketch, dtype=np.float64).reshape(fixed.n_numeric, -1) for s in sums if s.stat_sketch]
    if plan.model == "gbdt" and sketches:
        stats = stats.model_copy(update={"split_points": split_points(sum(sketches), plan.gbdt_bins)})
    if not layout.unresolved():
        return stats.model_copy(update={"layout": layout})
    releases = []
    for m, s in zip(ok, sums):
        named = m.content.config_records.get(VOCABULARY)
        try:
            releases.append(VocabularyRelease.from_wire({k: list(v) for k, v in (named or {}).items()},  # type: ignore[arg-type]
                                                        s.stat_vocab or []))
        except ValueError:
            continue  # a malformed vocabulary is left out, like a failed reply
    levels = combine_vocabularies(releases, layout)
    return stats.model_copy(update={"layout": layout.with_vocabularies(levels)})


def local_baselines(grid: Grid, strategy: RecordingStrategy, plan: TrainPlan, config: RoundConfig,
                    last_round: int, audit: AuditLog | None = None) -> None:
    """After the last round: every connected partner trains the run's starting model on its
    own rows alone and sends its hold-out metrics (`PartnerNode.baseline`), recorded beside
    its metrics of the federation's model in the last round. The baseline is an extra: a
    partner that refuses it (its policy, its cap) is on record and the run stands."""
    nodes = list(grid.get_node_ids())
    flower_round = last_round - strategy.offset
    if strategy.value_edges is not None:  # the node evaluates its own model with the run's last edges
        config = config.model_copy(update={"value_edges": strategy.value_edges.edges})
    messages = strategy.track_sent(flower_round, "baseline", [
        Message(RecordDict({CONFIG: config.record()}), dst_node_id=node, message_type=BASELINE_MESSAGE)
        for node in nodes])
    replies = list(grid.send_and_receive(messages, timeout=plan.round_timeout))
    try:
        strategy.track_replies(flower_round, "baseline", replies)
    except QuorumLost:
        pass
    rec = strategy.recorder  # written out by the run's `finish`, which follows
    if audit is not None:
        last = rec.rounds.get(last_round)
        audit.record("local-baselines", actor="serverapp", run_id=rec.run_id, round=last_round,
                     participants=sorted(n for n, p in last.partners.items() if p.baseline) if last else [],
                     failures=[{"partner": f.partner, "reason": f.reason} for f in (last.failures if last else [])
                               if f.kind == "baseline"])


def _strategy(plan: TrainPlan, recorder: RunRecorder, offset: int, audit: AuditLog | None = None,
              layout: FeatureLayout | None = None) -> tuple[RecordingStrategy, Strategy | None]:
    scale = run_scale(plan)
    edges = PredictedEdges(scale) if scale is not None else None
    fedavg = dict(
        fraction_train=1.0, fraction_evaluate=1.0,
        min_train_nodes=plan.min_partners, min_evaluate_nodes=plan.min_partners,
        min_available_nodes=plan.min_partners,
        # client-level DP bounds each partner's influence, so every partner weighs the same
        weighted_by_key=UNIT_WEIGHT_KEY if plan.client_dp else WEIGHT_KEY,
        train_metrics_aggr_fn=aggregate_train_metrics, evaluate_metrics_aggr_fn=evaluate_aggregator(edges),
    )
    inner = FedBoost(plan, layout or run_layout(plan), offset, **fedavg) if plan.model == "gbdt" else FedAvg(**fedavg)
    central = client_level_dp(inner, plan, len(recorder.names)) if plan.client_dp else None
    book = receipts_path(plan.audit_log, plan.federation_config)
    recorder.receipts = ReceiptBook(book) if book else None
    return RecordingStrategy(central or inner, recorder, min_partners=plan.min_partners, offset=offset,
                             receipts=recorder.receipts, audit=audit, message_ttl=plan.round_timeout,
                             evaluation_rounds=plan.evaluation_rounds(), value_edges=edges), central


def run_federation(grid: Grid, plan: TrainPlan, flower_run: int, run_dir: Path) -> Path:
    """Round 0 evaluation, then `num_server_rounds` of FedAvg; outputs in `run_dir`."""
    names = partner_names(plan)
    layout = run_layout(plan)
    scale = run_scale(plan)
    if plan.model == "gbdt" and scale is not None:
        what = "a value" if isinstance(scale, ValueScale) else "a time to churn"
        raise ConfigError(f"task {plan.task!r} predicts {what}: boosted trees fit 0/1 labels only; "
                          "use --model logistic or mlp")
    if layout.unresolved() and not plan.federated_stats:
        raise ConfigError(f"contract {layout.contract!r} learns the levels of {[b.name for b in layout.unresolved()]} "
                          "from the federation's statistics: run with federated statistics on")
    if plan.resume_from:
        run = RunDir(Path(plan.resume_from))
        recorder = RunRecorder.resume(run, names, plan, flower_run)
    else:
        run = RunDir.create(run_dir, flower_run, plan)
        recorder = RunRecorder.start(run, names, plan, flower_run)
    recorder.layout = layout
    resumed, offset = bool(plan.resume_from), recorder.state.completed_rounds
    audit = AuditLog(Path(plan.audit_log)) if plan.audit_log else None
    strategy, central = _strategy(plan, recorder, offset, audit, layout)

    def starting_model(layout: FeatureLayout) -> ArrayRecord:
        model = build_model(plan.model, layout.width, seed=plan.seed, hidden=plan.model_hidden, depth=plan.gbdt_depth,
                            periods=scale.periods if isinstance(scale, SurvivalScale) else None)
        return ArrayRecord(model.state_dict())

    # learned categories get their levels with the statistics: until then the starting
    # model stands on a layout where each has only 'other' and 'unknown'
    initial = ArrayRecord(run.checkpoint(offset)) if resumed else starting_model(layout.with_vocabularies({}))
    latest = [initial]  # the last aggregated model: what stands if the run stops early
    if audit:
        audit.record("run-resumed" if resumed else "run-started", actor="serverapp", run_id=recorder.run_id,
                     flower_run=str(flower_run), from_round=offset, rounds=plan.num_server_rounds, task=plan.task,
                     target_epsilon=plan.dp_target_epsilon if plan.dp_enabled else None, run_dir=str(run.path))

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        job_round = server_round + offset
        if resumed and server_round == 0:
            return None  # the resumed-from checkpoint is already on disk
        latest[0] = arrays
        if central is not None and server_round > 0:
            spent = central.privacy_spent()
            recorder.client_level.append(ClientLevelPoint(
                round=job_round, epsilon=spent.epsilon, delta=spent.delta,
                noise_multiplier=plan.client_dp_noise_multiplier, clipping_norm=plan.client_dp_clipping_norm))
        recorder.flush()
        recorder.save_checkpoint(job_round, arrays)
        if server_round > 0:
            _audit_round(audit, recorder, job_round)
        return None

    def finish(status: str) -> Path:
        recorder.finish(latest[0], status=status)
        if audit:
            audit.record("run-finished", actor="serverapp", run_id=recorder.run_id, flower_run=str(flower_run),
                         status=status, rounds_completed=recorder.state.completed_rounds)
        return run.path

    # Every message says which job and which of its rounds it is: the partner's ledger
    # keys its charges by them, across resumes.
    config = RoundConfig(job_id=recorder.run_id, round_offset=offset)
    try:
        if plan.federated_stats and not resumed:
            run.write_feature_stats(federated_statistics(grid, strategy, plan, recorder.run_id, layout))
        if plan.federated_stats:
            stats = run.feature_stats()
            recorder.normalisation = stats.normalisation
            config = config.model_copy(update={"feature_mean": recorder.normalisation.mean,
                                               "feature_std": recorder.normalisation.std})
            if layout.unresolved():
                layout = recorder.layout = stats.layout or layout.with_vocabularies({})
                config = config.model_copy(update={"feature_levels": json.dumps(layout.learned_levels())})
                if not resumed:
                    initial = latest[0] = starting_model(layout)
        if not resumed:  # Round 0: how good is the starting model on every partner's held-out data?
            messages = strategy.configure_evaluate(0, initial, config.record(), grid)
            strategy.aggregate_evaluate(0, grid.send_and_receive(messages, timeout=plan.round_timeout))
        if isinstance(strategy.inner, FedBoost):  # learned categories' columns included, and the sketch's cuts
            strategy.inner.use_layout(layout, run.feature_stats() if plan.federated_stats else None)
        remaining = plan.num_server_rounds - offset
        if remaining > 0:
            result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=remaining,
                                    timeout=plan.round_timeout, train_config=config.record(),
                                    evaluate_config=config.record(), evaluate_fn=checkpoint)
            latest[0] = result.arrays if len(result.arrays) else latest[0]
        if plan.local_baseline:
            local_baselines(grid, strategy, plan, config, plan.num_server_rounds, audit)
    except QuorumLost as exc:
        if not exc.budget:
            finish(f"failed: {exc}")
            raise
        # The partners' own caps ended the run: the last aggregated model stands, and the
        # run ends normally with their reasons on record.
        return finish(f"stopped: {exc}")
    except PrivacyBudgetExhausted as exc:
        return finish(f"stopped: client-level budget: {exc}")
    return finish("completed")
