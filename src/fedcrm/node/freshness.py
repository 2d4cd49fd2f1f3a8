"""No work, and no charge, for a round that has closed.

A SuperNode that was down while a round ran still finds that round's message waiting when
it comes back (Flower keeps a message for its time-to-live, 12 hours unless the sender says
otherwise). Training on it would charge the partner's ledger for an update the coordinator
has long stopped waiting for and will discard. So every message is checked here before
the ClientApp touches data: it is served only while it is younger than both the
time-to-live the coordinator gave it (its round timeout) and the partner's own
`max_message_age`, whatever the coordinator set. An expired message gets a policy
refusal (code 4103), logged on the node like every refusal.

The age is measured against the coordinator's clock (`created_at`), so the check allows
`CLOCK_SKEW` seconds of disagreement between the two machines.
"""

from __future__ import annotations

import time

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedcrm.config import PrivacyPolicy
from fedcrm.errors import FedcrmError, PolicyRefusal
from fedcrm.node.policy import log_refusal
from fedcrm.node.runtime import node_for_context
from fedcrm.protocol import BASELINE_MESSAGE, ERROR_POLICY

CLOCK_SKEW = 5.0  # seconds the node's clock may run ahead of the coordinator's
RELEASES = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate", MessageType.QUERY: "statistics",
            BASELINE_MESSAGE: "baseline"}


def expiry_reason(created_at: float, ttl: float, policy: PrivacyPolicy, now: float) -> str | None:
    """Why a message sent at `created_at` with time-to-live `ttl` may no longer be served, or None."""
    age = now - created_at
    limit = min(ttl, policy.max_message_age)
    if age <= limit + CLOCK_SKEW:
        return None
    which = "its time-to-live" if ttl <= policy.max_message_age else "this partner's max_message_age"
    return (f"the message was sent {age:.0f} s ago and was to be served within {limit:.0f} s ({which}): "
            "its round has closed, so the node neither trains nor charges for it")


def fresh_only(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower mod: refuse an expired message before the ClientApp sees it."""
    kind = RELEASES.get(msg.metadata.message_type) or RELEASES.get(msg.metadata.message_type.split(".")[0])
    if kind is None:
        return call_next(msg, context)
    try:
        node = node_for_context(context)
    except FedcrmError:  # a run config the node rejects: the ClientApp answers it with its code
        return call_next(msg, context)
    reason = expiry_reason(msg.metadata.created_at, msg.metadata.ttl, node.policy, time.time())
    if reason is None:
        return call_next(msg, context)
    refusal = PolicyRefusal(kind, reason)  # type: ignore[arg-type]
    log_refusal(node.cfg.work_dir, str(msg.metadata.run_id), refusal)
    return Message(Error(code=ERROR_POLICY, reason=f"{type(refusal).__name__}: {refusal}"), reply_to=msg)
