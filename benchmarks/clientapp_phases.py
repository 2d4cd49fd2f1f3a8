"""Where a deployed message's seconds go, read from the SuperNodes' own logs.

A SuperNode in Flower 1.42 answers each message in a fresh `flwr-clientapp` process
(`flwr/supernode/runtime/run_clientapp.py` pulls one task and exits). With
`FLWR_LOG_LEVEL=DEBUG` every SuperNode's log carries timestamped lines for each phase of
that life, and `benchmarks/overhead.py` (section `deployment`) runs its federation so.
This module cuts each message into:

- **SuperExec pickup and spawn:** from the SuperNode's "Receiving: … message" to the new
  process's first log line (its DEBUG warning): the SuperExec's once-a-second
  `AcquireTask` poll and the process launch.
- **flwr-clientapp start-up:** to its "Start `flwr-clientapp` process": the Flower CLI's
  own imports, before anything of the app.
- **task pull and FAB install:** to "Start `ClientApp` Loading".
- **ClientApp import and answer:** to "Runtime.PushMessages": the app's imports and its
  handler; the only phase that is the app's.
- **push and exit:** to "Finished task".
- **SuperNode sends:** to "Sent successfully" (the reply on its way to the SuperLink).

Each message is assigned to the run whose window holds its "Receiving" line.
"""

from __future__ import annotations

import re
import statistics
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"(?:\x1b\[\d+m)?[A-Z]+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})(?:\x1b\[0m)?:\s+(.*)")
_MARKS = (("received", re.compile(r"Receiving: (\w+) message")), ("spawned", re.compile(r"DEBUG logs enabled")),
          ("cli_ready", re.compile(r"Start `flwr-clientapp` process")),
          ("loading", re.compile(r"Start `ClientApp` Loading")), ("pushing", re.compile(r"Runtime\.PushMessages")),
          ("finished", re.compile(r"Finished task")), ("sent", re.compile(r"Sent successfully")))
PHASES = {
    "SuperExec pickup and spawn": ("received", "spawned"),
    "flwr-clientapp start-up": ("spawned", "cli_ready"),
    "task pull and FAB install": ("cli_ready", "loading"),
    "ClientApp import and answer": ("loading", "pushing"),
    "push and exit": ("pushing", "finished"),
    "SuperNode sends": ("finished", "sent"),
    "whole message": ("received", "sent"),
}


def messages(log: Path) -> list[dict]:
    """Each message a SuperNode's log shows: its kind and the time of every mark seen."""
    out: list[dict] = []
    current: dict | None = None
    for line in log.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for name, pattern in _MARKS:
            found = pattern.search(match.group(2))
            if found is None:
                continue
            if name == "received":
                current = {"kind": found.group(1), "received": at}
                out.append(current)
            elif current is not None and name not in current:
                current[name] = at
    return [m for m in out if all(name in m for name, _ in _MARKS)]


def phases(logs: list[Path], windows: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, dict]]:
    """Median seconds of each phase, per run label (`windows`: its runs' start and end
    times) and message kind, with the count of messages."""
    seen: dict[tuple[str, str], list[dict]] = {}
    for log in logs:
        for m in messages(log):
            label = next((k for k, spans in windows.items() if any(a <= m["received"] <= b for a, b in spans)), None)
            if label is not None:
                seen.setdefault((label, m["kind"]), []).append(m)
    out: dict[str, dict[str, dict]] = {}
    for (label, kind), found in sorted(seen.items()):
        out.setdefault(label, {})[kind] = {
            "messages": len(found),
            **{phase: round(statistics.median(m[b] - m[a] for m in found), 2) for phase, (a, b) in PHASES.items()}}
    return out
