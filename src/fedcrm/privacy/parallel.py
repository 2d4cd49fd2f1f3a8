"""Parallel composition over the partner's hold-out split.

Every customer of a partner sits on one side of its hold-out split, decided by its own
pseudonym alone (`fedcrm.data.prepare.test_mask`: the first 32 bits of HMAC(key, id)
against `holdout_fraction`). Training rounds and the statistics query read only the
training side; an evaluation reads only the hold-out side. Adding or removing one customer
therefore changes the input of one side's releases only, and a customer's privacy loss is
the composition of the releases on its own side: the partner's ε is the *largest* ε over
the sides, not the ε of everything composed (McSherry's parallel composition; it holds for
adaptively chosen mechanisms because the split is a fixed function of each record).

The node never relies on this blindly. Each ledger entry states its `Scope`: the split it
was computed under (an id derived from the partner's key, so a new key is a new split), its
hold-out fraction and its side. Entries without a scope (written before scopes existed)
touch every customer. If the ledger holds releases under two different splits, the sides no
longer line up and every release is composed with every other, as before.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from fedcrm.privacy.accounting import AccountantKind, HistoryEntry, epsilon

Side = Literal["training", "holdout"]


class Scope(BaseModel):
    """Which customers a release reads: one side of a hold-out split, or (no split) all."""

    model_config = ConfigDict(frozen=True)

    split: str | None = None
    holdout_fraction: float | None = None
    side: Side | None = None

    def touches(self, bucket: float) -> bool:
        """Does the release read the customers whose split bucket (in [0, 1)) is `bucket`?"""
        if self.split is None or self.holdout_fraction is None or self.side is None:
            return True
        held_out = bucket < self.holdout_fraction
        return held_out if self.side == "holdout" else not held_out


EVERYONE = Scope()
Spend = tuple[HistoryEntry, Scope]


class Region(BaseModel):
    """Customers whose bucket lies in [low, high): every one of them has the same releases."""

    low: float
    high: float
    label: str
    members: list[int]  # indices of the spends that read these customers
    history: list[HistoryEntry]

    @property
    def middle(self) -> float:
        return (self.low + self.high) / 2


def regions(spends: list[Spend]) -> list[Region]:
    """The partner's customers cut into regions with the same releases, in bucket order.

    One region ("all customers") when no release has a split or releases were made under
    two different splits; otherwise one region between each pair of hold-out fractions.
    A spend of 0 steps only places its scope's cut (see `heaviest_touched`)."""
    splits = {scope.split for _, scope in spends if scope.split is not None}
    if len(splits) != 1:
        members = [i for i, (h, _) in enumerate(spends) if h[2] > 0]
        return [Region(low=0.0, high=1.0, label="all customers", members=members, history=[spends[i][0] for i in members])]
    cuts = sorted({0.0, 1.0} | {s.holdout_fraction for _, s in spends if s.holdout_fraction is not None})
    fractions = cuts[1:-1]
    out = []
    for low, high in zip(cuts, cuts[1:]):
        middle = (low + high) / 2
        if len(fractions) == 1:
            label = "hold-out" if high <= fractions[0] else "training"
        else:
            label = f"customers in split buckets [{low:g}, {high:g})"
        members = [i for i, (h, scope) in enumerate(spends) if scope.touches(middle) and h[2] > 0]
        out.append(Region(low=low, high=high, label=label, members=members, history=[spends[i][0] for i in members]))
    return out


def region_epsilons(spends: list[Spend], delta: float, kind: AccountantKind) -> list[tuple[Region, float]]:
    return [(r, epsilon(r.history, delta, kind)) for r in regions(spends)]


def partner_epsilon(spends: list[Spend], delta: float, kind: AccountantKind) -> float:
    """The partner's ε: the largest over its regions (0 with nothing spent)."""
    return max((e for _, e in region_epsilons(spends, delta, kind)), default=0.0)


def heaviest_touched(spends: list[Spend], scope: Scope, delta: float, kind: AccountantKind) -> list[int]:
    """Indices of the spends in the most-spent region a release of `scope` would read:
    what a new release there is planned against."""
    found = region_epsilons([*spends, ((1.0, 1.0, 0), scope)], delta, kind)
    touched = [(r, e) for r, e in found if len(found) == 1 or scope.touches(r.middle)]
    return max(touched, key=lambda pair: pair[1])[0].members
