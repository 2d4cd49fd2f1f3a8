"""Federated feature statistics: exact from the partners' sums, noised and charged on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.data.layout import standard_layout
from fedcrm.ml.fedstats import STATS_CLIP, combine, numeric_count, partner_sums
from fedcrm.privacy.ledger import Ledger
from fedcrm.node.partner import PartnerNode
from tests.conftest import set_privacy


def test_combined_sums_give_the_pooled_mean_and_sd() -> None:
    rng = np.random.default_rng(1)
    # within the statistics' clip, so the standardised pool has mean 0 and sd 1 exactly
    parts = [np.clip(rng.normal(loc=i, scale=1 + i, size=(200 * (i + 1), len(standard_layout().names()))), -STATS_CLIP,
                     STATS_CLIP).astype(np.float32) for i in range(3)]
    stats = combine([partner_sums(x) for x in parts])
    pooled = np.clip(np.vstack(parts)[:, :numeric_count()], -STATS_CLIP, STATS_CLIP).astype(np.float64)
    assert stats.rows == 1200 and stats.partners == 3
    assert stats.normalisation.mean == pytest.approx(pooled.mean(axis=0).tolist(), abs=1e-6)
    assert stats.normalisation.std == pytest.approx(pooled.std(axis=0).tolist(), rel=1e-5)
    z = stats.normalisation.apply(np.vstack(parts))[:, :numeric_count()]
    assert np.allclose(z.mean(axis=0), 0, atol=1e-4) and np.allclose(z.std(axis=0), 1, atol=1e-3)


def test_noised_sums_are_charged_to_the_ledger(fresh_demo: Path) -> None:
    path = FederationConfig.load(fresh_demo).members[0].config
    set_privacy(path, min_stats_noise_multiplier=0.0)  # a partner who allows exact sums
    cfg = PartnerConfig.load(path)
    node = PartnerNode(cfg, TrainPlan.from_run_config({"stats-noise-multiplier": 2.0}))
    exact = PartnerNode(cfg, TrainPlan()).feature_sums(run_id=8)
    assert exact.epsilon is None and Ledger(cfg.work_dir).entries() == []  # exact: nothing to charge
    noised = node.feature_sums(run_id=9)
    entry = Ledger(cfg.work_dir).entries()[-1]
    assert (entry.run_id, entry.server_round, entry.sample_rate, entry.steps, entry.noise_multiplier) == ("9", 0, 1.0, 1, 2.0)
    assert noised.epsilon == entry.epsilon_after > 0
    assert noised.stat_sum != exact.stat_sum and abs(noised.stat_n - exact.stat_n) < 10 * 2.0 * 40  # noise of sd σ·bound on each sum
    # asked again: the same release, not a second draw (two draws would average the noise away)
    again = node.feature_sums(run_id=9)
    assert again.stat_sum == noised.stat_sum and len(Ledger(cfg.work_dir).entries()) == 1
