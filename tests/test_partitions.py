"""How the utility benchmark cuts a public dataset into partners."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcrm.public_data import assign_partners


def test_iid_and_label_skew_partitions() -> None:
    labels = pd.Series(np.where(np.random.default_rng(0).random(7000) < 0.27, "Yes", "No"))
    iid = assign_partners(labels, 5, "iid", seed=1)
    rates = [labels[iid == p].eq("Yes").mean() for p in range(5)]
    assert max(rates) - min(rates) < 0.05 and np.bincount(iid).min() > 1200
    skew = assign_partners(labels, 5, "label-skew", seed=1)
    rates = [labels[skew == p].eq("Yes").mean() for p in range(5)]
    assert max(rates) - min(rates) > 0.2 and np.bincount(skew, minlength=5).min() >= 300
    assert (assign_partners(labels, 5, "label-skew", seed=1) == skew).all()  # same seed, same split
    with pytest.raises(ValueError, match="unknown split"):
        assign_partners(labels, 5, "by-moon-phase", seed=1)
