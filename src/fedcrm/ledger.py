"""The partner's privacy ledger: an append-only, hash-chained record of every DP release.

One JSON line per round of DP-SGD on the partner's data, fsync'd before the reply leaves
the node. Each entry carries the SHA-256 of the previous one, and a small head file
(`ledger.head.json`) anchors the count and the last hash, so an edited, reordered,
deleted or truncated line is detected: the chain alone catches edits in the middle, the
anchor catches a cut tail. Anyone holding the file can verify it — no key is needed —
which is what an external auditor wants. Someone with write access to both files can
still rewrite history consistently; the ledger makes that deliberate, not accidental.

ε is never stored as the source of truth: the ledger keeps Opacus' own accountant inputs
(noise multiplier, sample rate, steps) and ε is recomputed from all of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from fedcrm.errors import PrivacyBudgetError

GENESIS = "0" * 64
HistoryEntry = tuple[float, float, int]


class LedgerTampered(PrivacyBudgetError):
    """The ledger does not verify; the node trains nothing until a person resolves it."""


class LedgerEntry(BaseModel):
    """One DP release: the accountant's inputs, what it was for, and ε after it."""

    seq: int
    time: str
    partner: str
    run_id: int
    server_round: int
    dataset_fingerprint: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    max_grad_norm: float
    accountant: str
    epsilon_after: float
    epsilon_rdp_after: float
    epsilon_cap: float
    prev_hash: str
    hash: str = ""

    def body_hash(self) -> str:
        body = self.model_dump(mode="json", exclude={"hash"})
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @property
    def history_entry(self) -> HistoryEntry:
        return (self.noise_multiplier, self.sample_rate, self.steps)


class LedgerHead(BaseModel):
    entries: int
    hash: str


class LedgerStatus(BaseModel):
    """What `verify` found; `ok` False means the node refuses to train."""

    path: str
    ok: bool
    entries: int
    head_hash: str
    problem: str = ""

    @property
    def head_short(self) -> int:
        """The first 13 hex digits of the head hash as an int: fits a Flower metric."""
        return int(self.head_hash[:13], 16)


class Ledger:
    """`privacy/ledger.jsonl` and its head anchor in the partner's work dir."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = Path(work_dir) / "privacy"
        self.path = self.dir / "ledger.jsonl"
        self.head_path = self.dir / "ledger.head.json"

    # ------------------------------------------------------------ reading
    def _read(self) -> tuple[list[LedgerEntry], str]:
        """Entries up to the first problem, and the problem ('' if none)."""
        if not self.path.exists():
            return [], ""
        entries: list[LedgerEntry] = []
        prev = GENESIS
        with self.path.open("rb") as fh:
            raw = fh.read()
        if raw and not raw.endswith(b"\n"):
            return entries, "the last line is incomplete (a truncated write or a cut file)"
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                entry = LedgerEntry.model_validate_json(line)
            except ValidationError as exc:
                return entries, f"line {lineno} is not a ledger entry ({exc.errors()[0]['msg']})"
            if entry.seq != lineno:
                return entries, f"line {lineno} has sequence number {entry.seq} (a line was removed or moved)"
            if entry.prev_hash != prev:
                return entries, f"line {lineno} does not chain to line {lineno - 1} (a line was removed, moved or edited)"
            if entry.body_hash() != entry.hash:
                return entries, f"line {lineno} was edited after it was written (its hash does not match its content)"
            entries.append(entry)
            prev = entry.hash
        return entries, ""

    def _read_head(self) -> LedgerHead | None:
        if not self.head_path.exists():
            return None
        try:
            return LedgerHead.model_validate_json(self.head_path.read_text())
        except ValidationError:
            return LedgerHead(entries=-1, hash="")

    def verify(self) -> LedgerStatus:
        entries, problem = self._read()
        head = self._read_head()
        last = entries[-1].hash if entries else GENESIS
        if not problem:
            problem = self._check_head(entries, head)
        return LedgerStatus(path=str(self.path), ok=not problem, entries=len(entries), head_hash=last,
                            problem=problem)

    @staticmethod
    def _check_head(entries: list[LedgerEntry], head: LedgerHead | None) -> str:
        if head is None:
            return "" if not entries else "the head anchor (ledger.head.json) is missing"
        if head.entries < 0:
            return "the head anchor (ledger.head.json) is unreadable"
        if head.entries > len(entries):
            return (f"the ledger was truncated: the head anchor records {head.entries} entries, "
                    f"the file holds {len(entries)}")
        anchored = entries[head.entries - 1].hash if head.entries else GENESIS
        if anchored != head.hash:
            return f"entry {head.entries} does not match the head anchor (the ledger was rewritten)"
        # More entries than the anchor: a crash between the append and the anchor update.
        # The extra entries chain correctly and only ever add spend, so they are kept.
        return ""

    def entries(self) -> list[LedgerEntry]:
        """All entries, or `LedgerTampered` with what is wrong and how to resolve it."""
        status = self.verify()
        if not status.ok:
            raise LedgerTampered(
                f"privacy ledger {self.path} does not verify: {status.problem}. The node refuses to "
                "train until this is resolved: restore the ledger and ledger.head.json from backup, "
                "then check with `fedcrm privacy verify`.")
        return self._read()[0]

    # ------------------------------------------------------------ writing
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "ledger.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, **fields: object) -> LedgerEntry:
        """Chain a new entry to the verified ledger, fsync it, then move the anchor."""
        with self._locked():
            entries = self.entries()
            entry = LedgerEntry(seq=len(entries) + 1, time=datetime.now(UTC).isoformat(timespec="seconds"),
                                prev_hash=entries[-1].hash if entries else GENESIS, **fields)
            entry.hash = entry.body_hash()
            with self.path.open("a") as fh:
                fh.write(entry.model_dump_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._write_head(LedgerHead(entries=entry.seq, hash=entry.hash))
            return entry

    def _write_head(self, head: LedgerHead) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(head.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.head_path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
