"""The coordinator's receipts of every partner's ledger, and the check that a ledger never
silently goes back.

A partner's ledger lives on its node, so only the node can verify it, and a node whose
ledger was deleted, or cut back with its anchor rewritten, verifies a shorter history
without complaint: ε restarts. The coordinator is the second witness. Every train and
statistics reply carries the node's ledger head (entry count, head hash prefix); the
coordinator keeps the last head it saw from each partner as a *receipt* in one file per
federation (`ledger-receipts.json`: next to the audit log of a deployed federation,
`<federation>.ledger-receipts.json` next to a simulated federation's config). The next
reply must continue it:

- fewer entries than the receipt, or the same number with another head: the ledger went
  back (deleted, cut, restored from an old backup);
- `ledger-ok = 0`: the node itself says its ledger does not verify;
- more entries, but the node's own entry number `receipt` (the round config asks for it,
  `RoundConfig.ledger_receipt`) does not hash to the receipt's head: the ledger was cut
  and grew again.

Any of these raises a *flag*: the reply is a failure (not aggregated, not counted toward
the quorum), the audit log gets `ledger-rollback`, and the coordinator refuses the partner
until an operator acknowledges it (`fedcrm privacy ack-ledger`), which resets the receipt
to the head the node last reported and is written to the audit log. Flags and
acknowledgements stay in the file for the compliance report.

Receipts are compared with the book as it was when the round's messages were sent: two
runs of one federation at once then never mistake each other's later receipts for a
rollback. A receipt only ever moves forward.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from fedcrm.coordinator.auditlog import AUDIT_FILE
from fedcrm.errors import ConfigError
from fedcrm.privatefiles import private_dir, private_open
from fedcrm.protocol import LedgerHead

RECEIPTS_FILE = "ledger-receipts.json"
ACK_COMMAND = "fedcrm privacy ack-ledger"


def simulated_receipts(federation_config: Path) -> Path:
    """A federation without a coordinator folder (a simulation): beside its config."""
    federation_config = Path(federation_config)
    return federation_config.with_name(f"{federation_config.stem}.{RECEIPTS_FILE}")


def receipts_path(audit_log: str | Path | None, federation_config: str | Path | None) -> Path | None:
    """Where a run's coordinator keeps the federation's receipts: beside its audit log,
    named as it is (`audit.jsonl` in a deployed federation's coordinator folder;
    `NAME.audit.jsonl` beside a simulated federation's `NAME.toml`), else beside the
    federation config."""
    if audit_log:
        audit_log = Path(audit_log)
        return audit_log.with_name(audit_log.name.removesuffix(AUDIT_FILE) + RECEIPTS_FILE)
    if federation_config:
        return simulated_receipts(Path(federation_config))
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def head_hex(value: int | None) -> str | None:
    """A head as the node sends it (13 hex digits as an int), written as hex."""
    return None if value is None else f"{int(value):013x}"


class LedgerReceipt(BaseModel):
    """A partner's ledger head as its node reported it in one reply."""

    entries: int
    head: str = Field(description="first 13 hex digits of the hash of entry `entries`")
    run_id: str
    round: int
    kind: str
    time: str = Field(default_factory=_now)


class Acknowledgement(BaseModel):
    time: str = Field(default_factory=_now)
    by: str
    reason: str
    baseline: LedgerReceipt | None = Field(description="the receipt the coordinator holds from now on")


class RollbackFlag(BaseModel):
    """A reply whose ledger head did not continue the receipt."""

    time: str = Field(default_factory=_now)
    run_id: str
    round: int
    kind: str
    reason: str
    held: LedgerReceipt | None = Field(description="the receipt the reply was checked against")
    reported: dict[str, int] = Field(description="the ledger head in the reply, keyed as on the wire")
    latest: LedgerReceipt | None = Field(None, description="the newest head the node reported since")
    acknowledged: Acknowledgement | None = None


class PartnerReceipts(BaseModel):
    last: LedgerReceipt | None = None
    flags: list[RollbackFlag] = Field(default_factory=list)

    def open_flag(self) -> RollbackFlag | None:
        """The flag not yet acknowledged: the partner is refused while there is one."""
        return self.flags[-1] if self.flags and self.flags[-1].acknowledged is None else None


class ReceiptsFile(BaseModel):
    partners: dict[str, PartnerReceipts] = Field(default_factory=dict)

    def partner(self, name: str) -> PartnerReceipts:
        return self.partners.get(name) or PartnerReceipts()


def rollback_problem(held: LedgerReceipt | None, head: LedgerHead) -> str:
    """Why `head` does not continue the receipt `held` ('' if it does, or if there is
    nothing to compare). A reply without a proof is compared by count and head only."""
    if head.ledger_entries is None:
        return ""  # no ledger head in this reply (no charged release)
    if head.ledger_ok == 0:
        return f"the node reports that its ledger does not verify ({head.ledger_entries} entries)"
    if held is None:
        return ""
    seen = f"{held.entries} entries (head {held.head}, run {held.run_id} round {held.round})"
    now, reported = head.ledger_entries, head_hex(head.ledger_head)
    if now < held.entries:
        return f"the ledger went back: the coordinator's receipt records {seen}, the node now reports {now}"
    if now == held.entries and reported != held.head:
        return f"the ledger was rewritten: the receipt records {seen}, the node reports {now} entries with head {reported}"
    if head.ledger_receipt == held.entries and head.ledger_receipt_hash is not None \
            and head_hex(head.ledger_receipt_hash) != held.head:
        return (f"the ledger was cut and grew again: the receipt records {seen}, the node's entry {held.entries} "
                f"now has head {head_hex(head.ledger_receipt_hash)} ({now} entries)")
    if head.ledger_receipt == held.entries and head.ledger_receipt_hash is None and held.entries > 0:
        return (f"the node cannot show entry {held.entries} of the receipt ({seen}): its ledger does not hold it "
                f"as it was ({now} entries)")
    return ""


def refusal_reason(partner: str, flag: RollbackFlag) -> str:
    return (f"ledger rollback: partner {partner} is refused by the coordinator since {flag.time} "
            f"(run {flag.run_id} round {flag.round}: {flag.reason}); its operator must restore the ledger "
            f"or acknowledge the reset with `{ACK_COMMAND} {partner} --reason ...`")


class Verdict(BaseModel):
    """One reply checked: '' problem means it continues the receipt (or has none)."""

    problem: str = ""
    new_flag: RollbackFlag | None = None  # raised by this reply (for the audit log)


class ReceiptBook:
    """The federation's receipts file: read freely, changed under a lock, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> ReceiptsFile:
        if not self.path.is_file():
            return ReceiptsFile()
        return ReceiptsFile.model_validate_json(self.path.read_text())

    @contextmanager
    def update(self) -> Iterator[ReceiptsFile]:
        """The file as it is now, written back when the block ends (not if it raises);
        other writers (another run of the federation, the ack command) wait."""
        private_dir(self.path.parent, tighten=False)  # the coordinator's folder: its other contents are not ours
        with private_open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                book = self.read()
                yield book
                tmp = self.path.with_name(self.path.name + ".tmp")
                with private_open(tmp, "w") as fh:
                    fh.write(book.model_dump_json(indent=2))
                    fh.flush()
                    os.fsync(fh.fileno())
                tmp.replace(self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def observe(book: ReceiptsFile, partner: str, head: LedgerHead, held: LedgerReceipt | None, *,
                run_id: str, server_round: int, kind: str) -> Verdict:
        """Check one reply of `partner` against `held` (its receipt when the message was
        sent) and record it in `book`: a new receipt, a new flag, or, for a partner already
        flagged, a refusal."""
        rec = book.partners.setdefault(partner, PartnerReceipts())
        seen = None
        if head.ledger_entries is not None and head.ledger_head is not None:
            seen = LedgerReceipt(entries=head.ledger_entries, head=head_hex(head.ledger_head) or "", run_id=run_id,
                                 round=server_round, kind=kind)
        flag = rec.open_flag()
        if flag is not None:
            flag.latest = seen or flag.latest
            return Verdict(problem=refusal_reason(partner, flag))
        problem = rollback_problem(held, head)
        if problem:
            flag = RollbackFlag(run_id=run_id, round=server_round, kind=kind, reason=problem, held=held,
                                reported=head.to_dict(), latest=seen)
            rec.flags.append(flag)
            return Verdict(problem=f"ledger rollback: {problem}; the coordinator refuses partner {partner} until "
                                   f"its operator acknowledges it (`{ACK_COMMAND} {partner} --reason ...`)",
                           new_flag=flag)
        if seen is not None and (rec.last is None or seen.entries >= rec.last.entries):
            rec.last = seen  # receipts only move forward (another run may have seen a later head)
        return Verdict()

    def acknowledge(self, partner: str, reason: str, by: str) -> RollbackFlag:
        """Close the partner's open flag: from now on the receipt is the head its node last
        reported, and the partner is served again."""
        if not reason.strip():
            raise ConfigError("an acknowledgement needs a reason (what happened to the ledger, who decided)")
        with self.update() as book:
            flag = book.partner(partner).open_flag()
            if flag is None:
                raise ConfigError(f"{self.path}: partner {partner!r} has no unacknowledged ledger rollback")
            flag.acknowledged = Acknowledgement(by=by, reason=reason.strip(), baseline=flag.latest)
            book.partners[partner].last = flag.latest
            return flag
