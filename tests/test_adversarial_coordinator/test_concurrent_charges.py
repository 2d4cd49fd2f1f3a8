"""Attack 6 of issue 12: concurrent charges must not pass the partner's cap.

Before the fix, the cap was checked on a ledger read before training and the lock only
covered the append: two trains at once on a cap of 2.0 gave a true ε of 2.099, both
entries saying 1.683. The check and the charge now happen under one lock
(`PrivacyAccount.charge`), with the release computed in between.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.privacy.account import BudgetExceeded, PrivacyAccount, Release
from fedcrm.privacy.ledger import Ledger


def test_two_charges_at_once_cannot_both_pass_the_cap(fresh_demo: Path) -> None:
    """Of two releases that each fit the cap alone but not together, started at the same
    moment on two accounts over the same ledger, exactly one is charged."""
    cfg = PartnerConfig.load(FederationConfig.load(fresh_demo).members[0].config)
    one = Release(run_id="1", server_round=1, noise_multiplier=1.0, sample_rate=0.05, steps=40, max_grad_norm=1.0)
    probe = PrivacyAccount(Ledger(cfg.work_dir), cfg.privacy, cfg.name, "f")
    cost_one, cost_two = (probe.epsilon([one.history_entry] * n) for n in (1, 2))
    policy = cfg.privacy.model_copy(update={"epsilon_cap": (cost_one + cost_two) / 2})
    assert cost_one < policy.epsilon_cap < cost_two
    outcomes: list[str] = []

    def charge(run_id: str) -> None:
        account = PrivacyAccount(Ledger(cfg.work_dir), policy, cfg.name, "f")
        try:
            with account.charge(one.model_copy(update={"run_id": run_id})):
                time.sleep(0.5)  # the release being computed: the other charge must wait
            outcomes.append("charged")
        except BudgetExceeded:
            outcomes.append("refused")

    threads = [threading.Thread(target=charge, args=(r,)) for r in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["charged", "refused"]
    entries = Ledger(cfg.work_dir).entries()
    assert len(entries) == 1 and entries[0].epsilon_after <= policy.epsilon_cap
