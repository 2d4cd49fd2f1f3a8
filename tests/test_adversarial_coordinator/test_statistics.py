"""Attack 4: federated statistics left the node exact and uncharged by default.

Before the fix `stats-noise-multiplier` defaulted to 0 and the run config could keep it
there: per-column Σx, Σx² and category counts left the node exact, and no ε was charged.
Now the node noises the sums with at least the partner's `min_stats_noise_multiplier`,
charges the release, and serves later runs the same noised sums at no further cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcrm.ml.fedstats import partner_sums
from fedcrm.privacy.ledger import Ledger
from tests.test_adversarial_coordinator.test_policy import node, partner


def test_statistics_are_noised_and_charged_whatever_the_run_config_says(fresh_demo: Path) -> None:
    cfg = partner(fresh_demo)
    assert cfg.privacy.min_stats_noise_multiplier > 0  # the default policy
    first = node(cfg, **{"stats-noise-multiplier": 0.0}).feature_sums("exact-please")
    exact = partner_sums(node(cfg).data().x_train)
    assert not np.allclose(first.stat_sum, exact.sum), "the column sums left the node exact"
    entries = Ledger(cfg.work_dir).entries()
    assert [(e.run_id, e.server_round, e.noise_multiplier) for e in entries] == [
        ("exact-please", 0, cfg.privacy.min_stats_noise_multiplier)], "the release was not charged"
    assert first.epsilon == entries[-1].epsilon_after > 0

    # a later run on the same data gets the same release, and pays nothing more
    again = node(cfg).feature_sums("second-run")
    assert again.stat_sum == first.stat_sum and again.stat_sumsq == first.stat_sumsq
    assert len(Ledger(cfg.work_dir).entries()) == 1 and again.epsilon == first.epsilon

    # asking for more noise than the kept release carries buys a new, charged release
    louder = node(cfg, **{"stats-noise-multiplier": 2 * cfg.privacy.min_stats_noise_multiplier}).feature_sums("more")
    assert louder.stat_sum != first.stat_sum and len(Ledger(cfg.work_dir).entries()) == 2
