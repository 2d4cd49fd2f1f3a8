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


def test_two_runs_starting_together_pay_for_one_statistics_release(fresh_demo: Path) -> None:
    """The kept release is looked up and charged under one hold of the ledger's lock: two
    runs whose queries arrive at the same moment get the same release, charged once.
    (Before: both found no kept release, then both charged.)"""
    import threading
    import time

    from tests.test_adversarial_coordinator.test_concurrent_federations import lock_waiters

    cfg = partner(fresh_demo)
    node(cfg).data()  # prepared before the race: both queries then wait only on the ledger
    replies: dict[str, object] = {}

    def query(run_id: str) -> None:
        replies[run_id] = node(cfg).feature_sums(run_id)

    ledger = Ledger.of(cfg)
    threads = [threading.Thread(target=query, args=(r,)) for r in ("first", "second")]
    with ledger.exclusive():  # both queries start while the ledger is held, as two runs at once would
        for t in threads:
            t.start()
        started = time.monotonic()
        while lock_waiters(ledger.path.with_suffix(".lock")) < 2 and time.monotonic() - started < 60:
            time.sleep(0.05)
    for t in threads:
        t.join(timeout=120)
    entries = Ledger.of(cfg).entries()
    assert [e.kind for e in entries] == ["statistics"], [(e.run_id, e.kind) for e in entries]
    assert replies["first"].stat_sum == replies["second"].stat_sum
