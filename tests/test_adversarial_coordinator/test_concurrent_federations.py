"""Attack 6 of issue 12, at the Flower level: two federations on one partner at once.

`test_concurrent_charges.py` races two charges on one ledger in one process. Here two real
`flwr run` simulations (each with its own SuperLink and run home) run at the same moment,
in two federations that share one partner: the same partner config, hence the same work
dir and the same privacy ledger, each federation with a second partner of its own. The
shared partner's cap fits either run alone, not both: whatever the interleaving, the
ledger verifies, never passes the cap, states the ε the node itself recomputes, holds both
runs, and the node refused the release that did not fit.

To make "at once" certain rather than likely, the test holds the shared ledger's lock
until both runs' first charges wait on it: both nodes have then calibrated their noise
against the same (empty) ledger, as two federations starting together do, and neither
run can finish before the other has charged. Federated statistics are off: their kept
release is reused by a later run, so whether the second run charged anything would
depend on timing.
About 70 s on two cores.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, FederationMember, PartnerConfig, TrainPlan
from fedcrm.data.prepared import dataset_fingerprint
from fedcrm.node.partner import PartnerNode
from fedcrm.ops.launcher import RunFailed, simulate
from fedcrm.privacy.account import PrivacyAccount
from fedcrm.privacy.ledger import Ledger
from fedcrm.protocol import ERROR_BUDGET
from tests.conftest import copy_partner, set_privacy
from tests.test_adversarial_coordinator.test_isolated_runs import processes_under

pytestmark = pytest.mark.flower

# Two rounds, so each run has a first release that fits whatever the other one spent.
RUN = {"num-server-rounds": 2, "dp-target-epsilon": 1.0, "min-partners": 2, "federated-stats": False}


def write_federation(path: Path, members: list[FederationMember]) -> Path:
    blocks = [f'[[members]]\npartner_id = {m.partner_id}\nname = "{m.name}"\nconfig = {json.dumps(str(m.config))}\n'
              for m in members]
    path.write_text(f'name = "{path.stem}"\n\n' + "\n".join(blocks))
    return path


def lock_waiters(lock: Path) -> int:
    """Processes blocked in flock on `lock` (Linux `/proc/locks`: `->` marks a waiter)."""
    st = os.stat(lock)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "->" in line and ident in line.split())


def test_two_federations_on_one_partner_at_once_cannot_pass_its_cap(fresh_demo: Path, tmp_path: Path) -> None:
    members = {m.name: m for m in FederationConfig.load(fresh_demo).members}
    shared = members["south-broadband"]
    feds = {"a": write_federation(fresh_demo.parent / "fed-a.toml", [members["north-telecom"], shared]),
            "b": write_federation(fresh_demo.parent / "fed-b.toml", [members["east-mobile"], shared])}

    # What one run costs the shared partner alone, planned on a copy (the partner stays cold):
    # at most its target on either side of the hold-out split (training, evaluations)
    probe = PartnerNode(PartnerConfig.load(copy_partner(shared.config, tmp_path / "probe")),
                        TrainPlan.from_run_config(RUN))
    alone = probe.plan_run()
    assert alone.statistics_noise == 0 and alone.evaluations == RUN["num-server-rounds"] + 1
    release = (alone.noise_multiplier, alone.sample_rate, alone.steps_per_round)
    cap = round(1.2 * alone.epsilon_after, 4)
    policy = PartnerConfig.load(shared.config).privacy
    set_privacy(shared.config, epsilon_cap=cap, delta=policy.delta, accountant=policy.accountant)
    cfg = PartnerConfig.load(shared.config)
    assert cfg.privacy.epsilon_cap == cap
    # (5) the cap binds: each run fits alone, the two together do not (on either side)
    assert alone.epsilon_after <= cap
    assert probe.account.epsilon([release] * 2 * alone.rounds) > cap
    assert probe.account.epsilon([(alone.evaluation_noise, 1.0, 2 * alone.evaluations)]) > cap

    outcomes: dict[str, object] = {}

    def run(tag: str) -> None:
        try:
            outcomes[tag] = simulate(feds[tag], tmp_path / f"run-{tag}", tmp_path / "flower", RUN, timeout=300)
        except RunFailed as exc:  # a run the partner's budget stopped may end this way too
            outcomes[tag] = exc
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            outcomes[tag] = exc

    threads = [threading.Thread(target=run, args=(tag,)) for tag in feds]
    ledger = Ledger.of(cfg)
    started = time.monotonic()
    with ledger.exclusive():  # until both runs' first charges wait on the shared ledger
        for t in threads:
            t.start()
        lock = ledger.path.with_suffix(".lock")
        while lock_waiters(lock) < 2 and all(t.is_alive() for t in threads) and time.monotonic() - started < 240:
            time.sleep(0.2)
        gated = lock_waiters(lock)
    for t in threads:
        t.join(timeout=400)
    assert not any(t.is_alive() for t in threads)
    assert gated == 2, (gated, outcomes)
    # attack 11: two runs at once under one work folder, each in a Flower home of its own
    # (one shared home had the second run rewrite the first's connection), none left running
    homes = [p for p in (tmp_path / "flower").iterdir() if p.is_dir()]
    assert len(homes) == 2 and all((h / "superlink.log").stat().st_size > 0 for h in homes), homes
    assert not processes_under(tmp_path / "flower")
    crashed = {tag: o for tag, o in outcomes.items() if isinstance(o, BaseException) and not isinstance(o, RunFailed)}
    assert not crashed, crashed

    summaries = {tag: json.loads((tmp_path / f"run-{tag}" / "summary.json").read_text()) for tag in feds}
    statuses = {tag: s["status"] for tag, s in summaries.items()}
    assert all(s == "completed" or s.startswith("stopped:") for s in statuses.values()), statuses

    # (1) the one shared ledger verifies
    assert ledger.verify().ok
    entries = ledger.entries()
    after = [e.epsilon_after for e in entries]
    # (2) never past the cap, never going down
    assert all(e.epsilon_cap == cap for e in entries)
    assert all(a <= cap for a in after) and all(a <= b for a, b in zip(after, after[1:])), (after, cap)
    # (3) the last entry states the ε the node computes over its whole ledger now
    account = PrivacyAccount(Ledger.of(cfg), cfg.privacy, cfg.name, dataset_fingerprint(cfg))
    assert after[-1] == pytest.approx(account.spent([(e.history_entry, e.scope) for e in account.entries()]),
                                      abs=1e-6)
    # (4) both runs are in the one ledger ...
    job = {tag: s["run_id"] for tag, s in summaries.items()}
    assert {e.run_id for e in entries} == set(job.values()) and len(set(job.values())) == 2
    # ... and the node refused, for its budget, what did not fit: those runs stopped
    failures = {tag: [f for r in json.loads((tmp_path / f"run-{tag}" / "metrics.json").read_text())["rounds"]
                      for f in r["failures"]] for tag in feds}
    refused = [tag for tag in feds if failures[tag]]
    assert refused, failures
    for tag in refused:
        assert all(f["code"] == ERROR_BUDGET and f["partner"] == cfg.name for f in failures[tag]), failures[tag]
        assert "above the cap" in failures[tag][0]["reason"]
        assert statuses[tag].startswith("stopped:") and cfg.name in statuses[tag]
    assert all(statuses[tag] == "completed" for tag in feds if tag not in refused), statuses
    assert len(entries) < 2 * (1 + 2 * RUN["num-server-rounds"])  # not everything both runs asked for fitted
