"""Parallel composition over the hold-out split (`fedcrm.privacy.parallel`): which releases
compose with which, and when the node falls back to composing everything."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcrm.data import prepare
from fedcrm.privacy.accounting import epsilon
from fedcrm.privacy.parallel import EVERYONE, Scope, heaviest_touched, partner_epsilon, regions

DELTA = 1e-5
TRAIN, EVAL = (1.0, 0.05, 100), (4.0, 1.0, 1)


def scope(side: str, fraction: float = 0.2, split: str = "k1") -> Scope:
    return Scope(split=split, holdout_fraction=fraction, side=side)


def test_the_two_sides_do_not_compose() -> None:
    spends = [(TRAIN, scope("training")), (EVAL, scope("holdout")), (EVAL, scope("holdout"))]
    found = {r.label: r.history for r in regions(spends)}
    assert found == {"hold-out": [EVAL, EVAL], "training": [TRAIN]}
    assert partner_epsilon(spends, DELTA, "prv") == pytest.approx(max(epsilon([TRAIN], DELTA), epsilon([EVAL] * 2, DELTA)))
    assert partner_epsilon(spends, DELTA, "prv") < epsilon([TRAIN, EVAL, EVAL], DELTA)


def test_a_release_without_a_side_counts_on_both() -> None:
    spends = [(TRAIN, EVERYONE), (EVAL, scope("holdout"))]
    found = {r.label: r.history for r in regions(spends)}
    assert found == {"hold-out": [TRAIN, EVAL], "training": [TRAIN]}


def test_a_new_key_composes_everything() -> None:
    """Another key is another split: the sides no longer line up, so nothing is parallel."""
    spends = [(TRAIN, scope("training", split="k1")), (EVAL, scope("holdout", split="k2"))]
    [region] = regions(spends)
    assert region.label == "all customers" and region.history == [TRAIN, EVAL]
    assert partner_epsilon(spends, DELTA, "prv") == pytest.approx(epsilon([TRAIN, EVAL], DELTA))


def test_a_changed_fraction_cuts_three_regions() -> None:
    """Hold-out 0.2 then 0.3: customers in [0.2, 0.3) were trained on, then evaluated."""
    spends = [(TRAIN, scope("training", 0.2)), (EVAL, scope("holdout", 0.3))]
    found = [(r.low, r.high, r.history) for r in regions(spends)]
    assert found == [(0.0, 0.2, [EVAL]), (0.2, 0.3, [TRAIN, EVAL]), (0.3, 1.0, [TRAIN])]
    assert partner_epsilon(spends, DELTA, "prv") == pytest.approx(epsilon([TRAIN, EVAL], DELTA))
    # a new training release plans against the most-spent region it reads
    assert heaviest_touched(spends, scope("training", 0.2), DELTA, "prv") == [0, 1]  # [0.2, 0.3)
    assert heaviest_touched(spends, scope("training", 0.3), DELTA, "prv") == [0]  # [0.3, 1) only


def test_the_side_of_a_customer_depends_on_its_pseudonym_alone() -> None:
    """What parallel composition rests on: adding or removing customers moves nobody else."""
    rng = np.random.default_rng(0)
    pids = pd.Series(["".join(rng.choice(list("0123456789abcdef"), 64)) for _ in range(500)])
    alone = prepare.test_mask(pids, 0.2)
    shuffled = pids.sample(frac=1.0, random_state=1)
    fewer = pids.drop(index=range(0, 500, 3))
    assert (prepare.test_mask(shuffled, 0.2) == alone[shuffled.index]).all()
    assert (prepare.test_mask(fewer, 0.2) == alone[fewer.index]).all()
