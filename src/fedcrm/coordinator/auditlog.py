"""The coordinator's audit log: who did what to the federation and its runs, hash-chained.

Admin actions (provisioning, adding a partner, registering keys, starting and stopping the
SuperLink, launching, stopping, resuming and collecting runs) are written by the CLI;
rounds, participants, refusals and run outcomes by the ServerApp. Same chain and anchor as
the partners' privacy ledgers (`fedcrm.ledger.HashChain`), so `fedcrm coordinator verify`
detects an edited, removed or cut line.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from pydantic import Field

from fedcrm.privacy.chain import ChainedEntry, HashChain


AUDIT_FILE = "audit.jsonl"  # in a deployed federation's coordinator folder


def simulated_audit_log(federation_config: Path) -> Path:
    """A simulated federation's audit log, beside its config (`NAME.audit.jsonl` beside
    `NAME.toml`): who launched which run, its rounds and outcome, as a deployed
    federation's coordinator folder keeps them."""
    federation_config = Path(federation_config)
    return federation_config.with_name(f"{federation_config.stem}.{AUDIT_FILE}")


class AuditEntry(ChainedEntry):
    actor: str
    action: str
    run_id: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class AuditLog(HashChain[AuditEntry]):
    entry_type = AuditEntry

    def __init__(self, path: Path) -> None:
        super().__init__(Path(path))

    def record(self, action: str, *, actor: str | None = None, run_id: int | str = "", **details: Any) -> AuditEntry:
        return self.append(actor=actor or admin(), action=action, run_id=str(run_id), details=details)

    def find(self, action: str, run_id: int | str) -> AuditEntry | None:
        """The newest entry of `action` for `run_id`."""
        matches = [e for e in self.entries() if e.action == action and e.run_id == str(run_id)]
        return matches[-1] if matches else None


def admin() -> str:
    """The person at the keyboard, as the OS knows them."""
    try:
        return f"admin:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"admin:uid-{os.getuid()}"
