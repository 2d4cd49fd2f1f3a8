"""Hash-chained, append-only JSON-lines logs: the partners' privacy ledgers and the
coordinator's audit log are both one.

Each entry carries the SHA-256 of the previous one, and a small head file
(`<name>.head.json`) anchors the count and the last hash, so an edited, reordered,
deleted or truncated line is detected: the chain alone catches edits in the middle, the
anchor catches a cut tail. Anyone holding the file can verify it (no key is needed), which
is what an external auditor wants. Someone with write access to both files can still
rewrite history consistently; the chain makes that deliberate, not accidental.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from fedcrm.errors import FedcrmError
from fedcrm.privatefiles import private_dir, private_open

GENESIS = "0" * 64


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ChainedEntry(BaseModel):
    """What every line of a hash-chained log carries besides its own fields."""

    seq: int
    time: str
    prev_hash: str
    hash: str = ""

    def body_hash(self) -> str:
        return _digest(self.model_dump(mode="json", exclude={"hash"}))


class ChainHead(BaseModel):
    entries: int
    hash: str


class ChainStatus(BaseModel):
    """What `verify` found; `ok` False means the log cannot be trusted as it is."""

    path: str
    ok: bool
    entries: int
    head_hash: str
    problem: str = ""

    @property
    def head_short(self) -> int:
        """The first 13 hex digits of the head hash as an int: fits a Flower metric."""
        return int(self.head_hash[:13], 16)


E = TypeVar("E", bound=ChainedEntry)


class HashChain(Generic[E]):
    """An append-only JSON-lines file of `E`, chained by SHA-256, with a head anchor
    (`<name>.head.json`) beside it."""

    entry_type: type[E]

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.dir = self.path.parent
        self.head_path = self.path.with_name(self.path.stem + ".head.json")
        self._holder: int | None = None  # the thread inside `exclusive`, if any
        self._held_entries: list[E] = []

    def broken(self, problem: str) -> Exception:
        return FedcrmError(f"{self.path} does not verify: {problem}")

    # ------------------------------------------------------------ reading
    def _read(self) -> tuple[list[E], str]:
        """Entries up to the first problem, and the problem ('' if none)."""
        if not self.path.exists():
            return [], ""
        entries: list[E] = []
        prev = GENESIS
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            return entries, "the last line is incomplete (a truncated write or a cut file)"
        for lineno, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
            try:
                raw_entry = json.loads(line)
                entry = self.entry_type.model_validate(raw_entry)
            except (ValueError, ValidationError) as exc:
                problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                return entries, f"line {lineno} is not a valid entry ({problem})"
            if entry.seq != lineno:
                return entries, f"line {lineno} has sequence number {entry.seq} (a line was removed or moved)"
            if entry.prev_hash != prev:
                return entries, f"line {lineno} does not chain to line {lineno - 1} (a line was removed, moved or edited)"
            if _digest({k: v for k, v in raw_entry.items() if k != "hash"}) != entry.hash:
                return entries, f"line {lineno} was edited after it was written (its hash does not match its content)"
            entries.append(entry)
            prev = entry.hash
        return entries, ""

    def _read_head(self) -> ChainHead | None:
        if not self.head_path.exists():
            return None
        try:
            return ChainHead.model_validate_json(self.head_path.read_text())
        except ValidationError:
            return ChainHead(entries=-1, hash="")

    def verify(self) -> ChainStatus:
        entries, problem = self._read()
        last = entries[-1].hash if entries else GENESIS
        if not problem:
            problem = self._check_head(entries, self._read_head())
        return ChainStatus(path=str(self.path), ok=not problem, entries=len(entries), head_hash=last, problem=problem)

    def _check_head(self, entries: list[E], head: ChainHead | None) -> str:
        anchor = self.head_path.name
        if head is None:
            return "" if not entries else f"the head anchor ({anchor}) is missing"
        if head.entries < 0:
            return f"the head anchor ({anchor}) is unreadable"
        if head.entries > len(entries):
            return (f"the log was truncated: the head anchor records {head.entries} entries, "
                    f"the file holds {len(entries)}")
        anchored = entries[head.entries - 1].hash if head.entries else GENESIS
        if anchored != head.hash:
            return f"entry {head.entries} does not match the head anchor (the log was rewritten)"
        # One entry more than the anchor: a crash between the append and the anchor update
        # (every append moves the anchor, so a crash leaves at most one). The extra entry
        # chains correctly and was written by us, so it is kept. More than one is not a
        # crash: the anchor was moved back (e.g. rewritten as "0 entries" to hide a cut).
        if len(entries) > head.entries + 1:
            return (f"the head anchor ({anchor}) records {head.entries} entries, the file holds {len(entries)}: "
                    "an anchor is at most one entry behind (a crash between append and anchor); it was moved back")
        return ""

    def hash_at(self, n: int) -> str | None:
        """The hash of entry number `n` (from 1) of a log that verifies, else None: what a
        node shows to prove its log still begins with the `n` entries a receipt recorded."""
        entries, problem = self._read()
        if problem or self._check_head(entries, self._read_head()) or not 0 < n <= len(entries):
            return None
        return entries[n - 1].hash

    def entries(self) -> list[E]:
        """All entries, or the subclass's error saying what is wrong and what to do."""
        status = self.verify()
        if not status.ok:
            raise self.broken(status.problem)
        return self._read()[0]

    # ------------------------------------------------------------ writing
    @contextmanager
    def exclusive(self) -> Iterator[list[E]]:
        """Hold the log's lock: the verified entries now, and no other writer (another
        process or thread) until the block ends. `append` inside the block keeps the lock,
        so a check made on these entries still holds when the entry is written."""
        if self._holder == threading.get_ident():
            yield self._held_entries  # nobody else can have written since the lock was taken
            return
        private_dir(self.dir)  # the log, its anchor and its lock: 0600 in a 0700 folder
        with private_open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # per open file: other threads and processes wait
            self._held_entries = self.entries()
            self._holder = threading.get_ident()
            try:
                yield self._held_entries
            finally:
                self._holder, self._held_entries = None, []
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, **fields: object) -> E:
        """Chain a new entry to the verified log, fsync it, then move the anchor."""
        with self.exclusive() as entries:
            entry = self.entry_type(seq=len(entries) + 1, time=datetime.now(UTC).isoformat(timespec="seconds"),
                                    prev_hash=entries[-1].hash if entries else GENESIS, **fields)
            entry.hash = entry.body_hash()
            with private_open(self.path, "a") as fh:
                fh.write(entry.model_dump_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            self._write_head(ChainHead(entries=entry.seq, hash=entry.hash))
            entries.append(entry)  # the held view stays the log as it now is
            return entry

    def _write_head(self, head: ChainHead) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        with private_open(tmp, "w") as fh:
            fh.write(head.model_dump_json())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.head_path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
