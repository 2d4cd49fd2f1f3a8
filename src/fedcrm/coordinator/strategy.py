"""The coordinator's strategy: any Flower strategy, wrapped to record and to hold a quorum.

`RecordingStrategy` wraps the inner strategy (FedAvg by default) the way Flower's own DP
wrappers do: it sees every reply before the inner strategy aggregates it, records it, and
stops the run when too few partners answered. With the federation's ledger receipts
(`fedcrm.coordinator.receipts`) it also asks each known partner to prove its ledger still
begins with the last receipt, turns a reply whose ledger went back into a failure, and
sends nothing to a partner flagged for a rollback until its operator acknowledges it.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

from fedcrm.coordinator.value_edges import PredictedEdges
from fedcrm.config import TrainPlan
from fedcrm.coordinator.auditlog import AuditLog
from fedcrm.coordinator.receipts import ReceiptBook, ReceiptsFile, refusal_reason
from fedcrm.coordinator.recorder import RunRecorder
from fedcrm.protocol import CONFIG, ERROR_BUDGET, ERROR_POLICY, METRICS, LedgerHead, RoundConfig
from fedcrm.rundir import Failure


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


def reply_senders(sent: list[Message], replies: list[Message]) -> list[int]:
    """The partner node each reply answers for, in order.

    A reply's `src_node_id` is not enough: when a node stops heartbeating, the SuperLink
    itself answers its messages with a "node unavailable" error whose source is the
    SuperLink. The message it replies to names the partner; the grid gave every sent
    message its id when it pushed it."""
    asked = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in sent if m.metadata.message_id}
    return [asked.get(r.metadata.reply_to_message_id, int(r.metadata.src_node_id)) for r in replies]


PROVES_LEDGER = ("train", "evaluate", "query", "baseline")  # the replies that carry the node's ledger head


def with_receipt(content: RecordDict, entries: int) -> RecordDict:
    """`content` for one node: its own copy of the config record, asking the node to prove
    entry `entries` of its ledger (the rest of the content is shared, not copied)."""
    config = ConfigRecord(dict(content[CONFIG].items()) if CONFIG in content else {})
    config[RoundConfig.key("ledger_receipt")] = int(entries)
    return RecordDict({**dict(content.items()), CONFIG: config})


def ledger_head(metrics: MetricRecord) -> LedgerHead:
    return LedgerHead.model_validate({k: metrics[k] for k in LedgerHead.keys() if k in metrics})


PROOF_KEYS = frozenset({LedgerHead.key("ledger_receipt"), LedgerHead.key("ledger_receipt_hash")})


def without_proof(msg: Message) -> Message:
    """The reply as the inner strategy sees it: without the receipt proof, which only the
    partners asked for one send (Flower aggregates only replies whose metric keys agree)."""
    if msg.has_error() or METRICS not in msg.content or not PROOF_KEYS & set(msg.content[METRICS].keys()):
        return msg
    metrics = MetricRecord({k: v for k, v in msg.content[METRICS].items() if k not in PROOF_KEYS})
    return Message(content=RecordDict({**dict(msg.content.items()), METRICS: metrics}), metadata=msg.metadata)


class RecordingStrategy(Strategy):
    """Delegates to `inner`; records every reply, every silence and every aggregate in a
    `RunRecorder`, and stops the run when fewer than `min_partners` answer without error.

    `offset` maps Flower's round numbers (from 1 in every Flower run) to the job's rounds,
    so a resumed run records round 3 as round 3."""

    def __init__(self, inner: Strategy, recorder: RunRecorder, min_partners: int = 1, offset: int = 0,
                 receipts: ReceiptBook | None = None, audit: AuditLog | None = None,
                 message_ttl: float | None = None, evaluation_rounds: Iterable[int] | None = None,
                 value_edges: PredictedEdges | None = None) -> None:
        """`evaluation_rounds`: the job rounds the run declared evaluations for (None: every
        round); the others send no evaluation, which every node would refuse. `value_edges`:
        a value task's predicted-side edges, sent with every evaluation and moved after it."""
        self.inner, self.recorder, self.min_partners, self.offset = inner, recorder, min_partners, offset
        self.value_edges = value_edges
        self.evaluation_rounds = None if evaluation_rounds is None else set(evaluation_rounds)
        self.message_ttl = message_ttl
        self.receipts, self.audit = receipts, audit
        self.sent: dict[tuple[int, str], list[Message]] = {}
        self.held: dict[tuple[int, str], ReceiptsFile] = {}  # the receipts as they were when a round was sent
        self.refused: dict[tuple[int, str], list[Failure]] = {}  # flagged partners sent nothing

    def _check_quorum(self, server_round: int, kind: str, replies: list[Message], asked: int,
                      refused: list[Failure] | None = None) -> None:
        ok = sum(not m.has_error() for m in replies)
        if ok < self.min_partners:
            refused = refused or []
            errors = [(int(m.error.code), str(m.error.reason)) for m in replies if m.has_error()]
            errors += [(f.code, f.reason) for f in refused]
            silent = asked - len(replies) - len(refused)
            reasons = "; ".join([r for _, r in errors] + [f"{silent} gave no reply within the round timeout"] * bool(silent))
            raise QuorumLost(f"round {server_round} {kind}: {ok} of {asked} partners answered, "
                             f"{self.min_partners} needed. Failures: {reasons or 'no replies'}",
                             budget=bool(errors) and not silent and all(code in PARTNER_RULES for code, _ in errors))

    def track_sent(self, server_round: int, kind: str, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        if self.message_ttl is not None:  # a round's messages expire with it (Flower's default is 12 hours)
            for msg in messages:
                msg.metadata.ttl = self.message_ttl
        if self.receipts is not None:
            messages = self._with_receipts(server_round, kind, messages)
        self.sent[(server_round, kind)] = messages
        return messages

    def _with_receipts(self, server_round: int, kind: str, messages: list[Message]) -> list[Message]:
        """Per known partner: nothing if it is flagged for a ledger rollback, else its
        message asks it to prove the receipt. Partners not yet known in this run (no reply
        so far) get the message as it is; their reply is still checked by count and head."""
        book = self.held[(server_round, kind)] = self.receipts.read()
        out, refused = [], []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            name = self.recorder.node_names.get(node)
            rec = book.partner(name) if name else None
            flag = rec.open_flag() if rec else None
            if flag is not None:
                refused.append(Failure(kind=kind, node_id=node, partner=name, code=ERROR_BUDGET,
                                       reason=refusal_reason(name, flag)))
                continue
            if rec is not None and rec.last is not None and kind in PROVES_LEDGER and msg.has_content():
                msg.content = with_receipt(msg.content, rec.last.entries)
            out.append(msg)
        self.refused[(server_round, kind)] = refused
        return out

    def _screen(self, server_round: int, job_round: int, kind: str, replies: list[Message],
                senders: list[int]) -> list[Message]:
        """Check every reply's ledger head against the receipt held when the round was
        sent; a reply that does not continue it (or comes from a flagged partner) becomes
        an error reply: recorded as a failure, not aggregated, not counted toward quorum."""
        held = self.held.pop((server_round, kind), None) or ReceiptsFile()
        run_id, out = self.recorder.run_id, []
        with self.receipts.update() as book:
            for msg, node in zip(replies, senders, strict=True):
                if msg.has_error() or METRICS not in msg.content:
                    out.append(msg)
                    continue
                name = self.recorder.name(msg.content[METRICS])
                head = ledger_head(msg.content[METRICS])
                verdict = ReceiptBook.observe(book, name, head, held.partner(name).last, run_id=run_id,
                                              server_round=job_round, kind=kind)
                if not verdict.problem:
                    out.append(msg)
                    continue
                self.recorder.node_names[node] = name  # later rounds send it nothing
                out.append(Message(error=Error(code=ERROR_BUDGET, reason=verdict.problem), metadata=msg.metadata))
                if verdict.new_flag is not None and self.audit is not None:
                    flag = verdict.new_flag
                    self.audit.record("ledger-rollback", actor="serverapp", run_id=run_id, partner=name,
                                      round=job_round, kind=kind, reason=flag.reason, reported=flag.reported,
                                      held=flag.held.model_dump() if flag.held else None)
        return out

    def track_replies(self, server_round: int, kind: str, replies: list[Message]) -> list[Message]:
        """Record replies, refusals and silences under the job's round; returns the replies
        as they count (a ledger rollback turned into an error reply, receipt proofs left
        out once recorded)."""
        job_round = server_round + self.offset
        sent = self.sent.pop((server_round, kind), [])
        senders = reply_senders(sent, replies)
        refused = self.refused.pop((server_round, kind), [])
        if self.receipts is not None:
            replies = self._screen(server_round, job_round, kind, replies, senders)
        self.recorder.record(job_round, kind, replies, senders)
        self.recorder.record_refused(job_round, refused)
        asked = {int(m.metadata.dst_node_id) for m in sent}
        self.recorder.record_missing(job_round, kind, asked - set(senders))
        if kind == "train":
            self.recorder.mark_absent(job_round)
        self._check_quorum(job_round, kind, replies, max(len(asked), len(replies)) + len(refused), refused)
        return [without_proof(m) for m in replies]

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.track_sent(server_round, "train", self.inner.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = self.track_replies(server_round, "train", list(replies))
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "train", metrics)
        return arrays, metrics

    def evaluates(self, server_round: int) -> bool:
        return self.evaluation_rounds is None or server_round + self.offset in self.evaluation_rounds

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if not self.evaluates(server_round):
            return []
        if self.value_edges is not None:
            config = self.value_edges.config(config, arrays)
            self.recorder.joint_sent(server_round + self.offset, self.value_edges)
        return self.track_sent(server_round, "evaluate", self.inner.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if not self.evaluates(server_round):
            return None
        replies = self.track_replies(server_round, "evaluate", list(replies))
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        self.recorder.set_aggregate(server_round + self.offset, "evaluate", metrics)
        if self.value_edges is not None:  # after the aggregate, which read the edges this round was sent
            self.value_edges.update(server_round + self.offset, replies)
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
