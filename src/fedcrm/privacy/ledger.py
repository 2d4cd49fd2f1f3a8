"""The partner's privacy ledger: one hash-chained JSON line per DP release on its data.

Each line is fsync'd before the reply leaves the node. ε is never stored as the source
of truth: the ledger keeps Opacus' own accountant inputs (noise multiplier, sample rate,
steps) and ε is recomputed from all of them (`fedcrm.privacy.accounting`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from fedcrm.config.partner import ReleaseKind, default_privacy_dir
from fedcrm.errors import ConfigError, PrivacyBudgetError
from fedcrm.privacy.accounting import HistoryEntry
from fedcrm.privacy.chain import ChainedEntry, HashChain
from fedcrm.privacy.parallel import EVERYONE, Scope, Side

if TYPE_CHECKING:
    from fedcrm.config import PartnerConfig

LEDGER_FILE = "ledger.jsonl"
REPLIES_DIR = "replies"
LEGACY_DIR = "privacy"  # before the privacy folder: `<work_dir>/privacy`, deleted with the cache


def privacy_dir(cfg: PartnerConfig) -> Path:
    """The partner's privacy folder, the one place every ledger and kept-reply path starts.

    A node that kept its ledger in the old place (`<work_dir>/privacy`, inside the cache)
    has that folder moved here once, by one atomic rename, before anything reads it. If
    both places hold a ledger, or the rename cannot be atomic (another file system), the
    node refuses until a person decides: it never silently starts a second, empty ledger."""
    folder = Path(cfg.privacy_dir or default_privacy_dir(cfg.work_dir))
    legacy = Path(cfg.work_dir) / LEGACY_DIR
    if not (legacy / LEDGER_FILE).exists() and not (legacy / "ledger.head.json").exists():
        return folder
    if (folder / LEDGER_FILE).exists() or (folder / "ledger.head.json").exists():
        raise ConfigError(
            f"partner {cfg.name}: two privacy ledgers, {legacy} (the old place, inside the work dir) and {folder} "
            "(privacy_dir). Keep the one that holds every release (normally the longer one), move the other away, "
            "then check with `fedcrm privacy verify`.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # an empty folder made before the move: rename needs the name free
        os.rename(legacy, folder)  # atomic on one file system: the ledger is in one place or the other
    except FileNotFoundError:
        if not (folder / LEDGER_FILE).exists():  # another process moved it at the same moment: fine
            raise
    except OSError as exc:
        raise ConfigError(
            f"partner {cfg.name}: its ledger is still in {legacy} (inside the work dir) and could not be moved to "
            f"{folder} in one step ({exc.strerror}). Move the folder {legacy} to {folder} by hand while the node "
            "is stopped, then check with `fedcrm privacy verify`.") from None
    return folder


class LedgerTampered(PrivacyBudgetError):
    """The ledger does not verify; the node trains nothing until a person resolves it."""


class LedgerEntry(ChainedEntry):
    """One DP release: the accountant's inputs, what it was for, whose rows it read, and ε after it.
    (Lines are verified as written, so entries from before the later fields still verify.)"""

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
    release: ReleaseKind | None = Field(None, description="train, evaluate or statistics (unset in entries written "
                                        "before evaluations were charged: round 0 was the statistics, others training)")
    split: str | None = Field(None, description="the hold-out split the release was computed under (an id derived "
                              "from the partner's key); unset: the release read every customer")
    holdout_fraction: float | None = None
    side: Side | None = Field(None, description="the side of the split whose rows the release read")

    @property
    def kind(self) -> ReleaseKind:
        if self.release is not None:
            return self.release
        return "statistics" if self.server_round == 0 else "train"

    @property
    def scope(self) -> Scope:
        if self.split is None:
            return EVERYONE
        return Scope(split=self.split, holdout_fraction=self.holdout_fraction, side=self.side)

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id_text(cls, value: object) -> str:
        return str(value)  # entries written before run ids were strings hold ints

    @property
    def history_entry(self) -> HistoryEntry:
        return (self.noise_multiplier, self.sample_rate, self.steps)


class Ledger(HashChain[LedgerEntry]):
    """The partner's privacy ledger: `ledger.jsonl` in its privacy folder.

    `Ledger.of(cfg)` is the partner's (its `privacy_dir`, moved from the old place once);
    `Ledger.at(folder)` any folder. `Ledger(work_dir)` is the ledger of a config with the
    default privacy folder beside that work dir (kept for callers holding only a work dir)."""

    entry_type = LedgerEntry

    def __init__(self, work_dir: Path | None = None, *, folder: Path | None = None) -> None:
        if (work_dir is None) == (folder is None):
            raise TypeError("Ledger(work_dir) or Ledger(folder=...)")
        super().__init__(Path(folder if folder is not None else default_privacy_dir(work_dir)) / LEDGER_FILE)

    @classmethod
    def at(cls, folder: Path) -> Ledger:
        return cls(folder=folder)

    @classmethod
    def of(cls, cfg: PartnerConfig) -> Ledger:
        return cls(folder=privacy_dir(cfg))

    def broken(self, problem: str) -> Exception:
        return LedgerTampered(
            f"privacy ledger {self.path} does not verify: {problem}. The node refuses to "
            "train until this is resolved: restore the ledger and ledger.head.json from backup, "
            "then check with `fedcrm privacy verify`.")
