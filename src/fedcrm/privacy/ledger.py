"""The partner's privacy ledger: one hash-chained JSON line per DP release on its data.

Each line is fsync'd before the reply leaves the node. ε is never stored as the source
of truth: the ledger keeps Opacus' own accountant inputs (noise multiplier, sample rate,
steps) and ε is recomputed from all of them (`fedcrm.privacy.accounting`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from fedcrm.errors import PrivacyBudgetError
from fedcrm.privacy.accounting import HistoryEntry
from fedcrm.privacy.chain import ChainedEntry, HashChain


class LedgerTampered(PrivacyBudgetError):
    """The ledger does not verify; the node trains nothing until a person resolves it."""


class LedgerEntry(ChainedEntry):
    """One DP release: the accountant's inputs, what it was for, and ε after it."""

    partner: str
    run_id: str = Field(description="the job (first Flower run id), as a string: 64-bit ids outgrow JSON doubles")
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

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id_text(cls, value: object) -> str:
        return str(value)  # entries written before run ids were strings hold ints

    @property
    def history_entry(self) -> HistoryEntry:
        return (self.noise_multiplier, self.sample_rate, self.steps)


class Ledger(HashChain[LedgerEntry]):
    """The partner's privacy ledger: `privacy/ledger.jsonl` in its work dir."""

    entry_type = LedgerEntry

    def __init__(self, work_dir: Path) -> None:
        super().__init__(Path(work_dir) / "privacy" / "ledger.jsonl")

    def broken(self, problem: str) -> Exception:
        return LedgerTampered(
            f"privacy ledger {self.path} does not verify: {problem}. The node refuses to "
            "train until this is resolved: restore the ledger and ledger.head.json from backup, "
            "then check with `fedcrm privacy verify`.")
