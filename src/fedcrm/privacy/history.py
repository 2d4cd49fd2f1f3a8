"""A partner's privacy spend over time and across runs, read from its ledger.

Each run's report shows only the rise of ε over that run; a compliance officer signs off on
the whole history against the cap: which runs spent how much, when, on which kind of
release. Composition is not additive, so a run's share is the rise of the partner's
cumulative ε (its ledger's `epsilon_after`) over the run's entries, and a kind's share
within a run is the sum of the rises at that kind's entries, in the order they were
charged: the figures add up to the cumulative ε, which is what the cap bounds.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from fedcrm.privacy.ledger import LedgerEntry


class SpendPoint(BaseModel):
    """One charged release: when, for which run and round, and the ε after it."""

    time: str
    run_id: str
    server_round: int
    kind: str
    epsilon_after: float
    epsilon_cap: float


class RunSpend(BaseModel):
    """One run's releases on this partner's data, in ledger order."""

    run_id: str
    first: str = Field(description="time of the run's first charge on this partner")
    last: str = Field(description="time of its last charge")
    releases: dict[str, int] = Field(default_factory=dict, description="charges per release kind")
    epsilon_before: float
    epsilon_after: float
    rise_by_kind: dict[str, float] = Field(default_factory=dict,
                                           description="the rise of cumulative ε at each kind's charges")

    @property
    def rise(self) -> float:
        return self.epsilon_after - self.epsilon_before


class SpendHistory(BaseModel):
    partner: str
    epsilon_cap: float | None = None
    epsilon: float = 0.0
    points: list[SpendPoint] = Field(default_factory=list)
    runs: list[RunSpend] = Field(default_factory=list)


def spend_history(partner: str, entries: Iterable[LedgerEntry]) -> SpendHistory:
    """The ledger as points over time and as runs (in the order each run first charged)."""
    out = SpendHistory(partner=partner)
    runs: dict[str, RunSpend] = {}
    before = 0.0
    for e in entries:
        out.points.append(SpendPoint(time=e.time, run_id=e.run_id, server_round=e.server_round, kind=e.kind,
                                     epsilon_after=e.epsilon_after, epsilon_cap=e.epsilon_cap))
        run = runs.setdefault(e.run_id, RunSpend(run_id=e.run_id, first=e.time, last=e.time,
                                                 epsilon_before=before, epsilon_after=before))
        run.last, run.epsilon_after = e.time, max(run.epsilon_after, e.epsilon_after)
        run.releases[e.kind] = run.releases.get(e.kind, 0) + 1
        run.rise_by_kind[e.kind] = run.rise_by_kind.get(e.kind, 0.0) + max(e.epsilon_after - before, 0.0)
        before = max(before, e.epsilon_after)
        out.epsilon_cap = e.epsilon_cap  # the cap in force at the latest charge
    out.epsilon, out.runs = before, list(runs.values())
    return out
