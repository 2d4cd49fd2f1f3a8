"""The partner's ClientApp: messages in, `PartnerNode` calls, checked messages out.

Every reply passes the node's egress guard (`fedcrm.node.egress`), attached per function
as Flower requires, so only model arrays and allow-listed numeric metrics ever leave;
inside it, `fresh_only` (`fedcrm.node.freshness`) turns away a message whose round has
closed before any data is touched or any budget charged.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from fedcrm.errors import FedcrmError, PolicyRefusal, PrivacyBudgetError
from fedcrm.ml.fedstats import Normalisation
from fedcrm.node.egress import egress_guard
from fedcrm.node.freshness import fresh_only
from fedcrm.node.runtime import node_for_context
from fedcrm.protocol import ARRAYS, ERROR_BUDGET, ERROR_FEDCRM, ERROR_POLICY, METRICS, VOCABULARY, RoundConfig

app = ClientApp()


def _normalisation(config: RoundConfig) -> Normalisation | None:
    """The federation's statistics, sent with every round."""
    if config.feature_mean is None or config.feature_std is None:
        return None
    return Normalisation(mean=config.feature_mean, std=config.feature_std)


def _refusal(msg: Message, exc: FedcrmError) -> Message:
    code = (ERROR_POLICY if isinstance(exc, PolicyRefusal) else
            ERROR_BUDGET if isinstance(exc, PrivacyBudgetError) else ERROR_FEDCRM)
    return Message(Error(code=code, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)


@app.train(mods=[egress_guard, fresh_only])
def train(msg: Message, context: Context) -> Message:
    try:
        config = RoundConfig.of(msg.content)
        job_id, job_round = config.job_round(msg.metadata.run_id)
        node = node_for_context(context)
        state, reply = node.train(msg.content[ARRAYS].to_torch_state_dict(), job_round, job_id, _normalisation(config),
                                  config.ledger_receipt, node.run_layout(config.feature_levels))
    except FedcrmError as exc:
        return _refusal(msg, exc)
    return Message(RecordDict({ARRAYS: ArrayRecord(state), METRICS: reply.record()}), reply_to=msg)


@app.evaluate(mods=[egress_guard, fresh_only])
def evaluate(msg: Message, context: Context) -> Message:
    try:
        config = RoundConfig.of(msg.content)
        job_id, job_round = config.job_round(msg.metadata.run_id)
        node = node_for_context(context)
        reply = node.evaluate(msg.content[ARRAYS].to_torch_state_dict(), _normalisation(config), job_id, job_round,
                              config.ledger_receipt, node.run_layout(config.feature_levels), config.value_edges)
    except FedcrmError as exc:
        return _refusal(msg, exc)
    return Message(RecordDict({METRICS: reply.record()}), reply_to=msg)


@app.evaluate("baseline", mods=[egress_guard, fresh_only])
def baseline(msg: Message, context: Context) -> Message:
    """The run's local-only baseline: trained and evaluated on this node, metrics only out."""
    try:
        config = RoundConfig.of(msg.content)
        job_id, _ = config.job_round(msg.metadata.run_id)
        node = node_for_context(context)
        reply = node.baseline(job_id, _normalisation(config), config.ledger_receipt,
                              node.run_layout(config.feature_levels), config.value_edges)
    except FedcrmError as exc:
        return _refusal(msg, exc)
    return Message(RecordDict({METRICS: reply.record()}), reply_to=msg)


@app.query(mods=[egress_guard, fresh_only])
def query(msg: Message, context: Context) -> Message:
    """Column sums for the federation's feature statistics (aggregate only), and the
    frequent values of the contract's learned categories (noised counts, thresholded)."""
    try:
        config = RoundConfig.of(msg.content)
        job_id, _ = config.job_round(msg.metadata.run_id)
        reply, vocabulary = node_for_context(context).statistics(job_id, config.ledger_receipt)
    except FedcrmError as exc:
        return _refusal(msg, exc)
    content = RecordDict({METRICS: reply.record()})
    if vocabulary is not None:
        content[VOCABULARY] = ConfigRecord({k: list(v) for k, v in vocabulary.levels.items()})
    return Message(content, reply_to=msg)
