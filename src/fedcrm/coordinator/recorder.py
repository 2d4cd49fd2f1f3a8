"""The coordinator's record of a run, written into the run directory as the run goes.

Every reply, every silence and every aggregate lands in a `RoundRecord`, so a watcher sees
each round as it completes. The server never computes anyone's ε: each partner's node is
the authority on its own budget, and the record keeps what the node stated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from fedcrm.config import TrainPlan
from fedcrm.coordinator.receipts import ReceiptBook
from fedcrm.data.layout import FeatureLayout
from fedcrm.ml.evaluation import HIST_BINS
from fedcrm.ml.fedstats import Normalisation
from fedcrm.ml.survival import SurvivalScale
from fedcrm.protocol import METRICS, EvaluateReply, SurvivalEvaluateReply, TrainReply, ValueEvaluateReply
from fedcrm.rundir import (ClientLevelPoint, EpsilonFile, EpsilonPoint, Failure, Inventory, LedgerReceiptsFile,
                           MetricsFile, ModelMeta, PartnerRound, ReceivedFile, RoundRecord, RunDir, RunState, RunSummary,
                           ScoreHistogram, SurvivalHistogram, ValueHistogram)

if TYPE_CHECKING:
    from fedcrm.coordinator.value_edges import PredictedEdges

PARTNER_ID = TrainReply.key("partner_id")


def received_inventory(content: RecordDict) -> Inventory:
    """What actually arrived from a partner, without values: the coordinator's side of the
    inventory each node keeps in its egress log."""
    out: Inventory = {}
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = {k: f"{a.dtype}{list(a.shape)}" for k, a in record.items()}
        elif isinstance(record, MetricRecord):
            out[name] = {k: f"list[{len(v)}]" if isinstance(v, list) else type(v).__name__ for k, v in record.items()}
        else:
            out[name] = {"<record>": type(record).__name__}
    return out


class RunRecorder:
    """Writes the run directory as the run goes."""

    def __init__(self, run: RunDir, names: dict[int, str], plan: TrainPlan, state: RunState) -> None:
        """`state` of a resumed run: its records so far are read back, later rounds re-run."""
        self.run, self.names, self.plan, self.state = run, names, plan, state
        self.rounds: dict[int, RoundRecord] = {}
        self.node_names: dict[int, str] = {}  # Flower node id → partner, learnt from its replies
        self.client_level: list[ClientLevelPoint] = []  # central DP: ε after each round
        self.received: dict[str, dict[str, Inventory]] = {}  # partner → kind → value-free inventory
        self.histograms: dict[int, dict[str, ScoreHistogram]] = {}  # round → partner → held-out score counts
        self.value_histograms: dict[int, dict[str, ValueHistogram]] = {}  # a value task's joint counts
        self.survival_histograms: dict[int, dict[str, SurvivalHistogram]] = {}  # a time-to-churn task's
        self.value_edges: dict[int, list[float]] = {}  # round → the predicted-side edges it was sent
        self.value_cap: float | None = None
        self.survival_scale: SurvivalScale | None = None
        self.survival_alpha: dict[int, list[float]] = {}  # round → the period intercepts of the model evaluated
        self.normalisation: Normalisation | None = None  # the federation's, published with the model
        self.layout: FeatureLayout | None = None  # the run's feature layout, published with the model
        self.receipts: ReceiptBook | None = None  # the federation's ledger receipts, copied into the run
        if state.completed_rounds:
            self._load_records()

    @classmethod
    def start(cls, run: RunDir, names: dict[int, str], plan: TrainPlan, flower_run: int | str) -> RunRecorder:
        return cls(run, names, plan, RunState(job_id=flower_run, flower_runs=[flower_run],
                                              total_rounds=plan.num_server_rounds))

    @classmethod
    def resume(cls, run: RunDir, names: dict[int, str], plan: TrainPlan, flower_run: int | str) -> RunRecorder:
        state = run.state()
        return cls(run, names, plan, state.model_copy(update={"flower_runs": [*state.flower_runs, str(flower_run)]}))

    @property
    def run_id(self) -> str:
        return self.state.job_id

    def _load_records(self) -> None:
        done = self.state.completed_rounds
        self.rounds = {r.round: r for r in self.run.rounds() if r.round <= done}  # a round cut off mid-way is re-run
        eps = self.run.epsilon()
        self.client_level = [c for c in eps.client_level if c.round <= done] if eps else []
        received = self.run.received()
        self.received = received.partners if received else {}

    def _round(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord(round=server_round))

    def name(self, metrics: MetricRecord) -> str:
        pid = int(metrics.get(PARTNER_ID, -1))
        return self.names.get(pid, f"partner-{pid}")

    def record_missing(self, server_round: int, kind: str, node_ids: set[int]) -> None:
        """Partners sent a message that did not answer within the round timeout."""
        for node_id in sorted(node_ids):
            self._round(server_round).failures.append(Failure(
                kind=kind, node_id=node_id, partner=self.node_names.get(node_id, ""), code=0,
                reason="no reply within the round timeout"))

    def record(self, server_round: int, kind: str, replies: list[Message], senders: list[int]) -> None:
        """`senders[i]`: the partner node `replies[i]` answers for (see `reply_senders`)."""
        rec = self._round(server_round)
        for msg, node_id in zip(replies, senders, strict=True):
            if msg.has_error():
                rec.failures.append(Failure(kind=kind, node_id=node_id, partner=self.node_names.get(node_id, ""),
                                            code=int(msg.error.code), reason=str(msg.error.reason)))
                continue
            metrics = msg.content[METRICS]
            name = self.node_names[node_id] = self.name(metrics)
            self.received.setdefault(name, {})[kind] = received_inventory(msg.content)
            if kind == "evaluate" and EvaluateReply.key("score_hist_pos") in metrics:  # a value task's have none
                reply = EvaluateReply.from_dict(metrics)
                self.histograms.setdefault(server_round, {})[name] = ScoreHistogram(
                    pos=reply.score_hist_pos, neg=reply.score_hist_neg)
            elif kind == "evaluate" and server_round in self.value_edges and self.survival_scale is not None:
                done = SurvivalEvaluateReply.from_dict(metrics)
                self.survival_histograms.setdefault(server_round, {})[name] = SurvivalHistogram(
                    counts=done.survival_hist, edges=self.value_edges[server_round],
                    periods=self.survival_scale.periods, period_days=self.survival_scale.period_days,
                    alpha=self.survival_alpha.get(server_round, []))
            elif kind == "evaluate" and server_round in self.value_edges and self.value_cap is not None:
                value = ValueEvaluateReply.from_dict(metrics)
                self.value_histograms.setdefault(server_round, {})[name] = ValueHistogram(
                    counts=value.value_hist, edges=self.value_edges[server_round], cap=self.value_cap)
            scalars = {k: float(v) for k, v in metrics.items() if not isinstance(v, list) and math.isfinite(float(v))}
            setattr(rec.partners.setdefault(name, PartnerRound()), kind, scalars)
        self._name_the_silent()

    def _name_the_silent(self) -> None:
        """A node that refused every message never said which member it is; when exactly one
        node is unnamed and exactly one member has never answered, they are the same."""
        unnamed = {f.node_id for r in self.rounds.values() for f in r.failures if not f.partner}
        silent = set(self.names.values()) - set(self.node_names.values())
        if len(unnamed) == 1 and len(silent) == 1:
            node, name = unnamed.pop(), silent.pop()
            self.node_names[node] = name
            for r in self.rounds.values():
                for f in r.failures:
                    if f.node_id == node:
                        f.partner = name

    def record_refused(self, server_round: int, refused: list[Failure]) -> None:
        """Partners the coordinator sent nothing (a ledger rollback not yet acknowledged)."""
        self._round(server_round).failures.extend(refused)

    def mark_absent(self, server_round: int) -> None:
        """Members that did not train this round: refused, silent, or not connected at all."""
        rec = self._round(server_round)
        rec.absent = sorted(set(self.names.values()) - {n for n, p in rec.partners.items() if p.train})

    def joint_sent(self, server_round: int, edges: PredictedEdges) -> None:
        """A value or time-to-churn evaluation is sent: its edges (and the model's period
        intercepts) are kept to store with the histograms it brings back."""
        self.value_edges[server_round] = list(edges.edges)
        if isinstance(edges.scale, SurvivalScale):
            self.survival_scale = edges.scale
            self.survival_alpha[server_round] = list(edges.alpha or [])
        else:
            self.value_cap = edges.scale.cap

    def set_aggregate(self, server_round: int, kind: str, metrics: MetricRecord | None) -> None:
        if metrics is None:
            return
        values = {k: float(v) for k, v in metrics.items() if not isinstance(v, list) and math.isfinite(float(v))}
        if kind == "train":
            self._round(server_round).train = values
        else:
            self._round(server_round).global_metrics = values

    def epsilon_by_partner(self) -> dict[str, list[EpsilonPoint]]:
        out: dict[str, list[EpsilonPoint]] = {}
        for r in sorted(self.rounds):
            for name, eps in self.rounds[r].epsilon().items():
                out.setdefault(name, []).append(EpsilonPoint(round=r, epsilon=eps))
        return out

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        """The global model after `server_round`, then the state that says it is complete."""
        self.run.save_checkpoint(server_round, arrays.to_torch_state_dict())
        self.state.completed_rounds = server_round
        self.run.write_state(self.state)

    def flush(self) -> None:
        self.run.write_records(
            MetricsFile(run_id=self.run_id, rounds=[self.rounds[r] for r in sorted(self.rounds)]),
            ReceivedFile(run_id=self.run_id, partners=self.received),
            EpsilonFile(delta=self.plan.dp_delta, partners=self.epsilon_by_partner(), client_level=self.client_level),
            self.histograms, HIST_BINS, self.value_histograms, self.survival_histograms)
        if self.receipts is not None:
            members = set(self.names.values()) | set(self.node_names.values())
            book = self.receipts.read()
            self.run.write_ledger_receipts(LedgerReceiptsFile(
                book=str(self.receipts.path), partners={n: r for n, r in book.partners.items() if n in members}))

    def finish(self, arrays: ArrayRecord, status: str) -> None:
        self.flush()
        last = self.rounds[max(self.rounds)] if self.rounds else RoundRecord(round=0)
        layout = self.layout or FeatureLayout()
        if layout.unresolved():  # the statistics never came: learned categories kept only 'other', 'unknown'
            layout = layout.with_vocabularies({})
        meta = ModelMeta(kind=self.plan.model, hidden=self.plan.model_hidden, features=layout.names(),
                         layout=layout if self.layout else None, task=self.plan.task, normalisation=self.normalisation,
                         contract_digest=self.plan.contract_digest)
        self.run.publish(arrays.to_torch_state_dict(), meta, RunSummary(
            run_id=self.run_id, status=status, rounds_completed=self.state.completed_rounds,
            flower_runs=self.state.flower_runs, final_global=last.global_metrics,
            epsilon={n: v[-1].epsilon for n, v in self.epsilon_by_partner().items()},
            client_level_epsilon=self.client_level[-1].epsilon if self.client_level else None))
