"""ε from the partner's ledger, and the noise a run needs to stay within its target.

Every ε here is Opacus' accountant applied to the partner's whole history — a list of
(noise_multiplier, sample_rate, steps), exactly what Opacus keeps itself — never a sum
of per-round figures. PRV is the default (tight); RDP is reported alongside because it is
the figure most papers and regulators have seen. `tests/test_ledger.py` cross-checks both
against Google's `dp-accounting`, an independent implementation.

"ε spent by a run" is the increase of the partner's cumulative ε over the run. Composition
is sub-additive, so a run on data that already has history costs less than the same run
on fresh data: planning calibrates the noise against the ledger, not in isolation.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Literal

from opacus.accountants import PRVAccountant, RDPAccountant
from pydantic import BaseModel

from fedcrm.errors import PrivacyBudgetError

AccountantKind = Literal["prv", "rdp"]
HistoryEntry = tuple[float, float, int]
SIGMA_MAX = 1e4


def compact(history: list[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    """Merge runs of identical (σ, q): composing n then m steps is composing n + m."""
    out: list[HistoryEntry] = []
    for s, q, n in history:
        if out and out[-1][0] == s and out[-1][1] == q:
            out[-1] = (s, q, out[-1][2] + int(n))
        else:
            out.append((float(s), float(q), int(n)))
    return tuple(out)


@lru_cache(maxsize=512)
def _epsilon(history: tuple[HistoryEntry, ...], delta: float, kind: AccountantKind) -> float:
    accountant = PRVAccountant() if kind == "prv" else RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Optimal order is the largest alpha" on every PRV call
        return float(accountant.get_epsilon(delta))


def epsilon(history: list[HistoryEntry] | tuple[HistoryEntry, ...], delta: float,
            kind: AccountantKind = "prv") -> float:
    """ε of the whole history at δ, from Opacus' accountant."""
    history = compact(list(history))
    return _epsilon(history, float(delta), kind) if history else 0.0


@lru_cache(maxsize=128)
def calibrate_noise(prior: tuple[HistoryEntry, ...], sample_rate: float, steps: int, target_total: float,
                    delta: float, kind: AccountantKind = "prv", tolerance: float = 0.01) -> float:
    """Smallest σ (to `tolerance` in ε) with which `steps` more steps keep the cumulative ε,
    prior history included, at or under `target_total`."""
    def eps(sigma: float) -> float:
        return epsilon(list(prior) + [(sigma, sample_rate, steps)], delta, kind)

    low, high = 0.0, 2.0
    while eps(high) > target_total:
        low, high = high, high * 2
        if high > SIGMA_MAX:
            raise PrivacyBudgetError(f"no noise multiplier up to {SIGMA_MAX:g} keeps ε at {target_total:.3f}")
    while True:
        mid = (low + high) / 2
        if mid == low or mid == high:
            return high
        e = eps(mid)
        if e > target_total:
            low = mid
        else:
            high = mid
            if target_total - e <= tolerance * target_total:
                return high


class RoundProjection(BaseModel):
    round: int
    epsilon: float
    epsilon_rdp: float
    within_cap: bool


class RunPlan(BaseModel):
    """What a run will cost one partner, computed before it spends anything."""

    partner: str
    rows: int
    sample_rate: float
    steps_per_round: int
    rounds: int
    delta: float
    accountant: AccountantKind
    max_grad_norm: float
    target_run_epsilon: float
    epsilon_cap: float
    spent_before: float
    noise_multiplier: float
    projections: list[RoundProjection]

    @property
    def epsilon_after(self) -> float:
        return self.projections[-1].epsilon if self.projections else self.spent_before

    @property
    def first_refused_round(self) -> int | None:
        return next((p.round for p in self.projections if not p.within_cap), None)


def round_shape(rows: int, batch_size: int, local_epochs: int) -> tuple[int, float]:
    """Steps per round and Poisson sample rate, as Opacus will run them."""
    per_epoch = max(1, math.ceil(rows / batch_size))
    return local_epochs * per_epoch, 1.0 / per_epoch


class RunNoise(BaseModel):
    """The mechanism of one run on one partner: what the node needs before a round."""

    sample_rate: float
    steps_per_round: int
    spent_before: float
    noise_multiplier: float


def run_noise(*, prior: list[HistoryEntry], rows: int, batch_size: int, local_epochs: int, rounds: int,
              target_run_epsilon: float, delta: float, accountant: AccountantKind = "prv",
              sigma: float | None = None) -> RunNoise:
    """Calibrate σ so the run raises the cumulative ε by at most `target_run_epsilon`."""
    steps, q = round_shape(rows, batch_size, local_epochs)
    prior_t = compact(prior)
    before = epsilon(prior_t, delta, accountant)
    if sigma is None:
        sigma = calibrate_noise(prior_t, q, steps * rounds, before + target_run_epsilon, delta, accountant)
    return RunNoise(sample_rate=q, steps_per_round=steps, spent_before=before, noise_multiplier=sigma)


def plan_run(*, partner: str, prior: list[HistoryEntry], rows: int, batch_size: int, local_epochs: int,
             rounds: int, target_run_epsilon: float, delta: float, epsilon_cap: float,
             max_grad_norm: float, accountant: AccountantKind = "prv", sigma: float | None = None) -> RunPlan:
    """`run_noise`, then ε after every round projected against the partner's cap."""
    noise = run_noise(prior=prior, rows=rows, batch_size=batch_size, local_epochs=local_epochs, rounds=rounds,
                      target_run_epsilon=target_run_epsilon, delta=delta, accountant=accountant, sigma=sigma)
    q, steps, sigma = noise.sample_rate, noise.steps_per_round, noise.noise_multiplier
    projections = []
    for r in range(1, rounds + 1):
        history = list(compact(prior)) + [(sigma, q, steps * r)]
        e = epsilon(history, delta, accountant)
        projections.append(RoundProjection(round=r, epsilon=e, epsilon_rdp=epsilon(history, delta, "rdp"),
                                           within_cap=e <= epsilon_cap))
    return RunPlan(partner=partner, rows=rows, sample_rate=q, steps_per_round=steps, rounds=rounds, delta=delta,
                   accountant=accountant, max_grad_norm=max_grad_norm, target_run_epsilon=target_run_epsilon,
                   epsilon_cap=epsilon_cap, spent_before=noise.spent_before, noise_multiplier=sigma,
                   projections=projections)
