"""The node's memo of ε results (`fedcrm.privacy.memo`): what a later process reads back
is exactly what was computed, and a line the node did not sign is never believed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.data.secret import load_secret
from fedcrm.privacy import accounting
from fedcrm.privacy.account import BudgetExceeded
from fedcrm.privacy.ledger import Ledger
from fedcrm.privacy.memo import MEMO_FILE, EpsilonMemo
from fedcrm.privacy.parallel import partner_epsilon
from tests.conftest import set_privacy
from tests.test_privacy import initial_state, node_for


def a_fresh_process() -> None:
    """What a new `flwr-clientapp` process starts with: no ε in memory, no memo in use."""
    accounting._epsilon.cache_clear()
    accounting.remember_in(None)


def test_a_later_process_reads_back_exactly_what_was_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_fresh_process()
    history = [(1.3, 0.05, 40), (0.9, 1.0, 1)]
    accounting.remember_in(EpsilonMemo(tmp_path / MEMO_FILE, b"k" * 32))
    computed = accounting.epsilon(history, 1e-5)
    rdp = accounting.epsilon(history, 1e-5, "rdp")
    assert stat.S_IMODE((tmp_path / MEMO_FILE).stat().st_mode) == 0o600
    a_fresh_process()
    accounting.remember_in(EpsilonMemo(tmp_path / MEMO_FILE, b"k" * 32))

    def recomputed(*args: object) -> float:
        raise AssertionError(f"recomputed {args}: the memo was not read")

    monkeypatch.setattr(accounting, "_computed", recomputed)
    assert accounting.epsilon(history, 1e-5) == computed and accounting.epsilon(history, 1e-5, "rdp") == rdp
    a_fresh_process()
    accounting.remember_in(EpsilonMemo(tmp_path / MEMO_FILE, b"another partner's key" * 2))  # its lines: not ours
    with pytest.raises(AssertionError, match="recomputed"):
        accounting.epsilon(history, 1e-5)
    a_fresh_process()


def test_a_value_this_process_computed_before_goes_into_the_memo_in_use(tmp_path: Path) -> None:
    """A process that served another node first (or none) already holds the value in
    memory; the node asking now still gets it in its own memo, for its next process."""
    a_fresh_process()
    history = [(1.1, 0.02, 30)]
    accounting.epsilon(history, 1e-5)  # no memo in use: kept in this process only
    memo = EpsilonMemo(tmp_path / MEMO_FILE, b"k" * 32)
    accounting.remember_in(memo)
    value = accounting.epsilon(history, 1e-5)
    a_fresh_process()
    assert EpsilonMemo(tmp_path / MEMO_FILE, b"k" * 32).get(tuple(history), 1e-5, "prv") == value


def test_a_forged_memo_does_not_carry_a_release_past_the_cap(fresh_demo: Path) -> None:
    """Attack: someone who can write the node's work dir but does not hold the partner's
    key rewrites the memo so every history it holds costs ε 0, and replays the refused
    round. The node still refuses it: unsigned lines are recomputed, not believed."""
    a_fresh_process()
    cfg_path = FederationConfig.load(fresh_demo).members[0].config
    set_privacy(cfg_path, epsilon_cap=1.0, delta=1e-5, min_stats_noise_multiplier=0.0, min_eval_noise_multiplier=30.0)
    node = node_for(fresh_demo, **{"dp-target-epsilon": 1.5})
    refused = node.plan_run(run_id=1).first_refused_round
    assert refused is not None and refused > 1
    state = initial_state()
    for rnd in range(1, refused):
        state, _ = node.train(state, rnd, run_id=1)
    with pytest.raises(BudgetExceeded):
        node.train(state, refused, run_id=1)  # its ε over the cap is now in the memo too
    memo = node.cfg.work_dir / MEMO_FILE
    honest = memo.read_text()
    lines = [json.loads(line) for line in honest.splitlines()]
    assert lines and any(float(value) > 1.0 for _, value, _ in lines)
    assert len(EpsilonMemo(memo, load_secret(node.cfg.secret_file))._kept) == len(lines)  # signed by the node
    forger = EpsilonMemo(memo, b"a guessed key, not the partner's"[:32])
    memo.write_text("".join(json.dumps([text, "0.0", forger._tag(text, "0.0")]) + "\n" for text, _, _ in lines))
    a_fresh_process()
    with pytest.raises(BudgetExceeded):
        node_for(fresh_demo, **{"dp-target-epsilon": 1.5}).train(state, refused, run_id=1)
    assert len(Ledger.of(node.cfg).entries()) == refused - 1
    a_fresh_process()


def test_an_evaluation_finds_its_epsilon_computed_by_the_release_before_it(
        fresh_demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployed node answers each message in a fresh process. The statistics and every
    training release compute, while Opacus is loaded for them anyway, the ε of the
    evaluation the plan holds next, so the evaluation's process computes none itself (and
    never imports Opacus). Fails on a node that only memoises what it charges: the
    evaluation's ε after its own release is new to the memo."""
    a_fresh_process()
    node_for(fresh_demo).feature_sums(7)
    state = initial_state()

    def recomputed(*args: object) -> float:
        raise AssertionError(f"the evaluation computed ε itself: {args}")

    for rnd in (0, 1, 2, 3):
        if rnd:
            a_fresh_process()
            state, _ = node_for(fresh_demo).train(state, rnd, run_id=7)
        a_fresh_process()
        with monkeypatch.context() as patched:
            patched.setattr(accounting, "_computed", recomputed)
            reply = node_for(fresh_demo).evaluate(state, run_id=7, server_round=rnd)
        assert reply.epsilon is not None and reply.epsilon > 0
    entries = Ledger.of(PartnerConfig.load(FederationConfig.load(fresh_demo).members[0].config)).entries()
    assert [e.kind for e in entries] == ["statistics", "evaluate"] + ["train", "evaluate"] * 3
    # the values the evaluations charged are the accountant's own, recomputed afresh
    a_fresh_process()  # no memo in use: computed by Opacus now
    last = entries[-1]
    spends = [(e.history_entry, e.scope) for e in entries]
    assert last.epsilon_after == partner_epsilon(spends, last.delta, last.accountant)
