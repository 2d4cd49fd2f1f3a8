"""The coordinator's strategy: any Flower strategy, wrapped to record and to hold a quorum.

`RecordingStrategy` wraps the inner strategy (FedAvg by default) the way Flower's own DP
wrappers do: it sees every reply before the inner strategy aggregates it, records it, and
stops the run when too few partners answered.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

from fedcrm.config import TrainPlan
from fedcrm.coordinator.recorder import RunRecorder
from fedcrm.protocol import ERROR_BUDGET, ERROR_POLICY


PARTNER_RULES = (ERROR_BUDGET, ERROR_POLICY)  # refusals by a partner's own rules: a run ends, it does not fail


class QuorumLost(RuntimeError):
    """Fewer partners than `min_partners` answered a round; the run stops rather than
    publish a model that most of the consortium never saw.

    `budget` is True when every refusal came from a partner's privacy rules (its cap, its
    ledger): the run then *stops* — an expected end, recorded with the partners' reasons
    — rather than fails."""

    def __init__(self, message: str, budget: bool) -> None:
        super().__init__(message)
        self.budget = budget


class RecordingStrategy(Strategy):
    """Delegates to `inner`; records every reply, every silence and every aggregate in a
    `RunRecorder`, and stops the run when fewer than `min_partners` answer without error.

    `offset` maps Flower's round numbers (from 1 in every Flower run) to the job's rounds,
    so a resumed run records round 3 as round 3."""

    def __init__(self, inner: Strategy, recorder: RunRecorder, min_partners: int = 1, offset: int = 0) -> None:
        self.inner, self.recorder, self.min_partners, self.offset = inner, recorder, min_partners, offset
        self.sent: dict[tuple[int, str], set[int]] = {}

    def _check_quorum(self, server_round: int, kind: str, replies: list[Message], asked: int) -> None:
        ok = sum(not m.has_error() for m in replies)
        if ok < self.min_partners:
            errors = [m.error for m in replies if m.has_error()]
            silent = asked - len(replies)
            reasons = "; ".join([str(e.reason) for e in errors] + [f"{silent} gave no reply within the round timeout"] * bool(silent))
            raise QuorumLost(f"round {server_round} {kind}: {ok} of {asked} partners answered, "
                             f"{self.min_partners} needed. Failures: {reasons or 'no replies'}",
                             budget=bool(errors) and not silent and all(int(e.code) in PARTNER_RULES for e in errors))

    def track_sent(self, server_round: int, kind: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        self.sent[(server_round, kind)] = {int(m.metadata.dst_node_id) for m in messages}
        return messages

    def track_replies(self, server_round: int, kind: str, replies: list[Message]) -> int:
        """Record replies and silences under the job's round; returns how many were asked."""
        job_round = server_round + self.offset
        self.recorder.record(job_round, kind, replies)
        asked = self.sent.pop((server_round, kind), set())
        self.recorder.record_missing(job_round, kind, asked - {int(m.metadata.src_node_id) for m in replies})
        if kind == "train":
            self.recorder.mark_absent(job_round)
        self._check_quorum(job_round, kind, replies, max(len(asked), len(replies)))
        return len(asked)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.track_sent(server_round, "train", self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        self.track_replies(server_round, "train", replies)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "train", metrics)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.track_sent(server_round, "evaluate", self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        self.track_replies(server_round, "evaluate", replies)
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "evaluate", metrics)
        return metrics


def client_level_dp(inner: FedAvg, plan: TrainPlan, num_partners: int) -> DifferentialPrivacyServerSideFixedClipping:
    """Flower's central DP: clip each partner's update on the server, noise the average,
    account with Flower's RDP accountant (every partner every round: no amplification)."""
    from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=plan.dp_delta, population_size=num_partners,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE, sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=plan.client_dp_max_epsilon or None))
    return DifferentialPrivacyServerSideFixedClipping(
        inner, plan.client_dp_noise_multiplier, plan.client_dp_clipping_norm, num_partners, accountant=accountant)
