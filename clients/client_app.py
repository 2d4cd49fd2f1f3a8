"""The partner's ClientApp: messages in, `PartnerNode` calls, checked messages out.

Every reply passes the node's egress guard (`fedcrm.node.egress`), attached per function as
Flower requires, so only model arrays and allow-listed numeric metrics ever leave.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcrm.config import TrainPlan
from fedcrm.node.egress import EgressViolation, check_reply, log_egress
from fedcrm.ml.fedstats import Normalisation
from fedcrm.errors import ERROR_BUDGET, ERROR_EGRESS, ERROR_FEDCRM, FedcrmError, PrivacyBudgetError
from fedcrm.node.partner import PartnerNode, resolve_partner_config

app = ClientApp()


def _node(context: Context, msg: Message | None = None) -> PartnerNode:
    plan = TrainPlan.from_run_config(dict(context.run_config))
    norm = None
    if msg is not None and "config" in msg.content and "feature-mean" in msg.content["config"]:
        config = msg.content["config"]  # the federation's statistics, sent with every round
        norm = Normalisation(mean=list(config["feature-mean"]), std=list(config["feature-std"]))
    return PartnerNode(resolve_partner_config(dict(context.node_config), plan), plan, norm)


def egress_guard(msg: Message, context: Context, call_next) -> Message:  # noqa: ANN001 (Flower's Mod)
    """Refuse any reply that carries more than the model and aggregate metrics."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    kind = {MessageType.TRAIN: "train", MessageType.QUERY: "query"}.get(msg.metadata.message_type, "evaluate")
    sent = msg.content.array_records.get("arrays") if kind == "train" else None
    node = _node(context)
    job_id, job_round = job_and_round(msg)
    entry = {"run_id": job_id, "flower_run_id": msg.metadata.run_id, "kind": kind, "server_round": job_round}
    try:
        inventory = check_reply(kind, reply.content, sent)
    except EgressViolation as exc:
        log_egress(node.egress_log, {**entry, "refused": str(exc)})
        return Message(Error(code=ERROR_EGRESS, reason=f"egress refused on node: {exc}"), reply_to=msg)
    log_egress(node.egress_log, {**entry, "sent": inventory})
    return reply


def job_and_round(msg: Message) -> tuple[int, int]:
    """The job and its round this message belongs to. A resumed run is a new Flower run
    with rounds from 1 again; the coordinator names the original job and the offset so the
    partner's ledger never charges a round twice."""
    config = msg.content["config"]
    job_id = int(config["job-id"]) if "job-id" in config else int(msg.metadata.run_id)
    return job_id, int(config.get("server-round", 0)) + int(config.get("round-offset", 0))


def _refusal(msg: Message, exc: FedcrmError) -> Message:
    code = ERROR_BUDGET if isinstance(exc, PrivacyBudgetError) else ERROR_FEDCRM
    return Message(Error(code=code, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)


@app.train(mods=[egress_guard])
def train(msg: Message, context: Context) -> Message:
    try:
        node = _node(context, msg)
        state = msg.content["arrays"].to_torch_state_dict()
        job_id, job_round = job_and_round(msg)
        new_state, metrics = node.train(state, job_round, job_id)
    except FedcrmError as exc:
        return _refusal(msg, exc)
    content = RecordDict({"arrays": ArrayRecord(new_state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)


@app.evaluate(mods=[egress_guard])
def evaluate(msg: Message, context: Context) -> Message:
    try:
        metrics = _node(context, msg).evaluate(msg.content["arrays"].to_torch_state_dict())
    except FedcrmError as exc:
        return _refusal(msg, exc)
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.query(mods=[egress_guard])
def query(msg: Message, context: Context) -> Message:
    """Column sums for the federation's feature statistics (aggregate only)."""
    try:
        job_id, _ = job_and_round(msg)
        sums, metrics = _node(context).feature_sums(job_id)
    except FedcrmError as exc:
        return _refusal(msg, exc)
    record = MetricRecord({**metrics, "stat-n": sums.n, "stat-sum": sums.sum, "stat-sumsq": sums.sumsq,
                           "stat-onehot": sums.onehot})
    return Message(content=RecordDict({"metrics": record}), reply_to=msg)
