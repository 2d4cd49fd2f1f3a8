"""DP-SGD on a node: planned against the ledger, cumulative across rounds, runs and
restarts, and refused past the partner's own cap."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.errors import PrivacyBudgetError
from fedcrm.data.layout import standard_layout
from fedcrm.privacy.ledger import Ledger
from fedcrm.ml.models import build_model
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.account import BudgetExceeded
from fedcrm.privacy.accounting import calibrate_noise, epsilon
from tests.conftest import set_privacy


def test_calibrated_noise_lands_on_target_and_uses_the_history() -> None:
    q, steps = 64 / 1900, 150
    sigma = calibrate_noise((), q, steps, 3.0, 1e-5)
    assert 2.9 <= epsilon([(sigma, q, steps)], 1e-5) <= 3.0
    assert epsilon([(sigma * 0.8, q, steps)], 1e-5) > 3.0  # less noise would overspend
    # with ε 3 already spent, raising it by 3 more needs less noise than a fresh 3: composition is sub-additive
    prior = ((sigma, q, steps),)
    spent = epsilon(prior, 1e-5)
    sigma2 = calibrate_noise(prior, q, steps, spent + 3.0, 1e-5)
    assert sigma2 < sigma
    assert spent + 2.9 <= epsilon(list(prior) + [(sigma2, q, steps)], 1e-5) <= spent + 3.0


def node_for(fed: Path, i: int = 0, **plan: object) -> PartnerNode:
    cfg = PartnerConfig.load(FederationConfig.load(fed).members[i].config)
    defaults = {"num-server-rounds": 3, "dp-target-epsilon": 2.0}
    return PartnerNode(cfg, TrainPlan.from_run_config({**defaults, **plan}))


def initial_state() -> dict:
    return build_model("logistic", len(standard_layout().names())).state_dict()


def test_epsilon_is_cumulative_across_rounds_runs_and_node_restarts(fresh_demo: Path) -> None:
    planned = node_for(fresh_demo).plan_run(run_id=11)
    assert planned.statistics_noise == 8.0  # the default policy's floor: paid first, from the run's ε
    # the run as the coordinator drives it: statistics (paid first, from the run's ε), an
    # evaluation of the initial model, then every round trains and evaluates
    stats = node_for(fresh_demo).feature_sums(11)
    state, trained, ends = initial_state(), [], []
    node_for(fresh_demo).evaluate(state, run_id=11, server_round=0)
    for rnd in (1, 2, 3):
        # a new node object every round reads the ledger from disk, as a restarted SuperNode would
        node = node_for(fresh_demo)
        state, metrics = node.train(state, rnd, run_id=11)
        trained.append(metrics.epsilon)
        ends.append(node.evaluate(state, run_id=11, server_round=rnd).epsilon)
    assert 0 < stats.epsilon < trained[0] < trained[1] < trained[2] <= 2.0 + 1e-6
    assert all(t <= e <= 2.0 + 1e-6 for t, e in zip(trained, ends))
    # the plan made before the run is what the run spent, round by round (each round
    # ending with its evaluation)
    assert [p.epsilon for p in planned.projections] == pytest.approx(ends, rel=1e-9)
    # a second run on the same data starts from the first run's total
    _, m1 = node_for(fresh_demo).train(state, 1, run_id=12)
    _, m2 = node_for(fresh_demo).train(state, 2, run_id=12)
    assert ends[-1] < m1.epsilon < m2.epsilon
    assert m2.epsilon_run == pytest.approx(m2.epsilon - ends[-1])
    assert [(e.run_id, e.server_round, e.kind) for e in Ledger.of(node.cfg).entries()] == [
        ("11", 0, "statistics"), ("11", 0, "evaluate"),
        *[("11", r, kind) for r in (1, 2, 3) for kind in ("train", "evaluate")], ("12", 1, "train"), ("12", 2, "train")]
    assert m2.ledger_entries == 10 and m2.ledger_ok == 1


def test_a_round_is_never_charged_twice(fresh_demo: Path) -> None:
    start = initial_state()
    sent, metrics = node_for(fresh_demo).train(start, 1, run_id=5)
    # asked again about the same global model (a resumed round): the same release, no new charge
    again, metrics_again = node_for(fresh_demo).train(start, 1, run_id=5)
    assert all(torch.equal(sent[k], again[k]) for k in sent)
    assert metrics_again.epsilon == metrics.epsilon
    assert len(Ledger.of(node_for(fresh_demo).cfg).entries()) == 1
    # asked about a different model for a charged round: refused
    other = {k: v + 0.1 for k, v in start.items()}
    with pytest.raises(PrivacyBudgetError, match="already charged"):
        node_for(fresh_demo).train(other, 1, run_id=5)


def flock_waiters(lock: Path) -> int:
    """How many are blocked on `lock` (a flock), from the kernel's own table."""
    inode = f":{lock.stat().st_ino} "
    return sum("->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines())


def test_a_message_served_twice_at_once_is_released_once(fresh_demo: Path) -> None:
    """Two ClientApp processes may serve the same round at once: a SuperLink restarted
    mid-round hands a SuperNode the old run's message and the resumed run's, for the same
    job, round and model. Both read the ledger before either charges. The first to take
    its lock trains and charges; the other must send that very release, neither charge it
    again nor refuse the round (before the fix it refused, 'already charged', and the
    resumed run lost its quorum)."""
    if not Path("/proc/locks").is_file():
        pytest.skip("needs /proc/locks to see both deliveries wait at the ledger's lock")
    start = initial_state()
    nodes = [node_for(fresh_demo) for _ in range(2)]  # two processes' worth of objects: nothing shared in memory
    ledger = Ledger.of(nodes[0].cfg)
    out: dict[int, object] = {}

    def serve(i: int) -> None:
        try:
            out[i] = nodes[i].train(start, 1, run_id=5)
        except Exception as exc:  # noqa: BLE001 (the test reports it)
            out[i] = exc

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(2)]
    with ledger.exclusive():  # neither can charge until both have read the ledger and wait at its lock
        for t in threads:
            t.start()
        deadline = time.monotonic() + 300
        while flock_waiters(ledger.path.with_suffix(".lock")) < 2:
            assert time.monotonic() < deadline and all(t.is_alive() for t in threads), out
            time.sleep(0.05)
    for t in threads:
        t.join(timeout=300)
    assert all(isinstance(r, tuple) for r in out.values()) and len(out) == 2, out
    (a, ma), (b, mb) = out[0], out[1]  # type: ignore[misc]
    assert all(torch.equal(a[k], b[k]) for k in a) and ma.epsilon == mb.epsilon
    assert [(e.run_id, e.server_round, e.kind) for e in ledger.entries()] == [("5", 1, "train")]


def test_the_partner_cap_refuses_the_round_that_would_cross_it(fresh_demo: Path) -> None:
    cfg_path = FederationConfig.load(fresh_demo).members[0].config
    # (without a statistics release, whose ε alone would take the first round over this cap;
    # evaluations read other customers, so their ε, at this floor small, is on another side)
    set_privacy(cfg_path, epsilon_cap=1.0, delta=1e-5, min_stats_noise_multiplier=0.0, min_eval_noise_multiplier=30.0)
    node = node_for(fresh_demo, **{"dp-target-epsilon": 1.5})  # the coordinator asks for more than the cap
    plan = node.plan_run(run_id=1)
    assert plan.first_refused_round is not None and plan.first_refused_round > 1
    state = initial_state()
    for rnd in range(1, plan.first_refused_round):
        state, metrics = node.train(state, rnd, run_id=1)
        assert metrics.epsilon <= 1.0
    with pytest.raises(BudgetExceeded, match=r"above the cap of 1 this partner set; remaining budget 0\.\d+"):
        node.train(state, plan.first_refused_round, run_id=1)
    # nothing was charged for the refused round
    assert len(Ledger.of(node.cfg).entries()) == plan.first_refused_round - 1


def test_the_partners_delta_wins_over_the_run_config(fresh_demo: Path) -> None:
    set_privacy(FederationConfig.load(fresh_demo).members[0].config, epsilon_cap=10.0, delta=1e-7)
    _, metrics = node_for(fresh_demo, **{"dp-delta": 1e-3}).train(initial_state(), 1, run_id=2)
    assert metrics.delta == 1e-7
    assert Ledger.of(node_for(fresh_demo).cfg).entries()[0].delta == 1e-7


def test_propensity_task_trains_and_evaluates(fresh_demo: Path) -> None:
    node = node_for(fresh_demo, 1, task="propensity", model="mlp")
    state = build_model("mlp", len(standard_layout().names())).state_dict()
    new_state, train_metrics = node.train(state, 1, run_id=3)
    assert train_metrics.epsilon > 0 and train_metrics.num_examples > 1000
    metrics = node.evaluate(new_state)
    assert 0.0 <= metrics.auc <= 1.0 and metrics.num_positives > 0
    assert sum(metrics.score_hist_pos) + sum(metrics.score_hist_neg) == metrics.num_examples



def test_a_node_scores_every_model_it_is_sent_as_itself(fresh_demo: Path) -> None:
    """Scoring networks are reused per shape of state (`PartnerNode._scoring_model`): each
    model sent must still be scored with its own weights, never a previous message's."""
    from fedcrm.ml.models import model_with_state
    from fedcrm.ml.training import predict

    node = node_for(fresh_demo)
    data = node.data()
    a = initial_state()
    b = {k: v + 0.5 for k, v in a.items()}
    scores = [predict(node._model(s, data, "evaluate"), data.x_test) for s in (a, b, a)]
    assert not torch.allclose(torch.from_numpy(scores[0]), torch.from_numpy(scores[1]))
    assert (scores[0] == scores[2]).all()
    assert (scores[1] == predict(model_with_state("logistic", data.x_test.shape[1], b), data.x_test)).all()
