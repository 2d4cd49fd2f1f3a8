"""The partner's privacy account: every DP-SGD release on its data, persisted on its node.

The state is Opacus' own plain data — the accountant history, a list of
(noise_multiplier, sample_rate, steps) — plus one record per release saying which run and
round spent it. ε is always recomputed from the whole history by Opacus' accountant, never
summed or re-derived here, so what we report is exactly what Opacus would report for every
step this partner ever took on this dataset, across rounds, runs and process restarts.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from pydantic import BaseModel, Field

from fedcrm.errors import PrivacyBudgetError

AccountantKind = Literal["prv", "rdp"]
HistoryEntry = tuple[float, float, int]


class Release(BaseModel):
    """One round of DP-SGD on the partner's data."""

    run_id: int
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    max_grad_norm: float
    epsilon_after: float


class PrivacyAccount(BaseModel):
    dataset_fingerprint: str
    accountant: AccountantKind = "prv"
    history: list[HistoryEntry] = Field(default_factory=list)
    releases: list[Release] = Field(default_factory=list)

    def charged(self, run_id: int, server_round: int) -> bool:
        return any(r.run_id == run_id and r.server_round == server_round for r in self.releases)


def make_accountant(kind: AccountantKind, history: list[HistoryEntry]) -> PRVAccountant | RDPAccountant:
    accountant = PRVAccountant() if kind == "prv" else RDPAccountant()
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return accountant


def epsilon(history: list[HistoryEntry], delta: float, kind: AccountantKind = "prv") -> float:
    """ε of the whole history, from Opacus' accountant."""
    if not history:
        return 0.0
    return float(make_accountant(kind, history).get_epsilon(delta))


@lru_cache(maxsize=64)
def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                    kind: AccountantKind = "prv") -> float:
    """Smallest noise multiplier with which `steps` steps stay within `target_epsilon`."""
    return float(get_noise_multiplier(
        target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
        steps=steps, accountant=kind, epsilon_tolerance=0.01,
    ))


class AccountStore:
    """One JSON file per dataset in the node's work dir, replaced atomically and fsync'd."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir / "privacy"

    def path(self, fingerprint: str) -> Path:
        return self.dir / f"account-{fingerprint[:16]}.json"

    def load(self, fingerprint: str) -> PrivacyAccount:
        path = self.path(fingerprint)
        if not path.exists():
            return PrivacyAccount(dataset_fingerprint=fingerprint)
        try:
            account = PrivacyAccount.model_validate_json(path.read_text())
        except ValueError as exc:
            raise PrivacyBudgetError(f"privacy account {path} is unreadable ({exc}); refusing to train") from None
        if account.dataset_fingerprint != fingerprint:
            raise PrivacyBudgetError(f"privacy account {path} belongs to another dataset; refusing to train")
        return account

    def save(self, account: PrivacyAccount) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(account.dataset_fingerprint)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(json.dumps(account.model_dump(mode="json"), indent=1))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path
