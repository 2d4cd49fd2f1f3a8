"""ε results a node computed before, kept on its own disk for its next process.

A deployed SuperNode serves every message in a fresh `flwr-clientapp` process, so the
in-process memo of `fedcrm.privacy.accounting` starts empty each time. Most of what a
message accounts was computed by the message before it: ε before a release is ε after
the last one, the hold-out region's ε is asked again every round, a calibration's search
visits the same points as the run's plan. With a ledger of a few runs that was 1-2 s of
PRV accounting per message, about all of it repeats (`benchmarks/overhead.py`).

ε of a history is a pure function of (history, δ, accountant, Opacus' version), so a
remembered value is exactly the value recomputed. What must not happen is a value the
node did not compute: a smaller ε would let a release past the cap. Every line therefore
carries an HMAC under a key derived from the partner's own secret; a line that does not
verify (edited, forged, from another partner's key, truncated) is ignored and the value
recomputed. The file holds no customer data, is owner-only like every node file, and
lives in the work dir: deleting it costs time, never privacy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from functools import cache, cached_property
from importlib.metadata import version
from pathlib import Path

from fedcrm.privatefiles import private_append_line

MEMO_FILE = "accounting-memo.jsonl"
MAX_BYTES = 8 << 20  # a file grown past this is started afresh (about 40,000 results)
_CONTEXT = b"fedcrm accounting memo v1"

HistoryKey = tuple[tuple[float, float, int], ...]


class EpsilonMemo:
    """The node's remembered ε results: `get` a value this node computed and signed
    before, `put` one just computed (appended, one line each)."""

    def __init__(self, path: Path, partner_key: bytes) -> None:
        self.path = Path(path)
        self._key = hmac.new(partner_key, _CONTEXT, hashlib.sha256).digest()  # never the partner key itself
        self._added: dict[str, float] = {}

    @staticmethod
    def _text(history: HistoryKey, delta: float, kind: str) -> str:
        # float repr round-trips exactly: the key is the history itself, not an approximation
        return json.dumps([[repr(float(s)), repr(float(q)), int(n)] for s, q, n in history]
                          + [repr(float(delta)), kind, _opacus()], separators=(",", ":"))

    def _tag(self, text: str, value: str) -> str:
        return hmac.new(self._key, f"{text}\n{value}".encode(), hashlib.sha256).hexdigest()

    @cached_property
    def _kept(self) -> dict[str, float]:
        """The file's lines that verify, read once per process."""
        kept: dict[str, float] = {}
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        text, value, tag = json.loads(line)
                        if hmac.compare_digest(tag, self._tag(text, value)):
                            kept[text] = float(value)
                    except (ValueError, TypeError):
                        continue  # a torn or foreign line: recomputed, never trusted
        except FileNotFoundError:
            pass
        return kept

    def get(self, history: HistoryKey, delta: float, kind: str) -> float | None:
        text = self._text(history, delta, kind)
        return self._added.get(text, self._kept.get(text))

    def put(self, history: HistoryKey, delta: float, kind: str, epsilon: float) -> None:
        text, value = self._text(history, delta, kind), repr(float(epsilon))
        if text in self._kept or text in self._added:
            return
        self._added[text] = float(epsilon)
        line = json.dumps([text, value, self._tag(text, value)], separators=(",", ":"))
        try:
            if self.path.is_file() and self.path.stat().st_size > MAX_BYTES:
                os.replace(self.path, self.path.with_suffix(".old"))
            private_append_line(self.path, line)  # one write of one line: appends do not interleave
        except OSError:
            pass  # a memo that cannot be written costs the next process time, nothing else


@cache
def _opacus() -> str:
    try:
        return version("opacus")
    except Exception:  # noqa: BLE001 (no metadata: a value keyed to nothing known is never reused)
        return "unknown"
