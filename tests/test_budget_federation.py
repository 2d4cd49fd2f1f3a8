"""The partners' budgets in real `flwr run` simulations: ε composes across runs (each run
starts fresh node processes), and a partner's own cap stops it — the coordinator cannot
override it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.protocol import ERROR_BUDGET
from fedcrm.ops.launcher import simulate
from fedcrm.privacy.ledger import Ledger
from fedcrm.node.partner import PartnerNode
from fedcrm.reports.tables import read_rounds
from fedcrm.sandbox.demo_data import generate
from tests.conftest import set_privacy

pytestmark = pytest.mark.flower


# One simulation serves two tests (each run costs ~40 s of Flower and Ray start-up on two
# cores): client-level DP over partners with record-level DP-SGD underneath, evaluated
# every 2nd round (`test_client_level_dp_is_accounted_by_flowers_accountant`), is also the
# first run whose ε the second run of `test_epsilon_composes_across_runs...` composes with.
FIRST_RUN = {"num-server-rounds": 2, "dp-target-epsilon": 1.0, "client-dp": True, "client-dp-noise-multiplier": 0.5,
             "client-dp-clipping-norm": 2.0, "min-partners": 3, "evaluate-every": 2}


def eps_series(run_dir: Path) -> dict[str, list[float]]:
    partners = json.loads((run_dir / "epsilon.json").read_text())["partners"]
    return {name: [e["epsilon"] for e in series] for name, series in partners.items()}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh demo consortium and its first run (FIRST_RUN); later runs add to its ledgers."""
    tmp = tmp_path_factory.mktemp("budget")
    federation = generate(tmp / "consortium")
    run_dir = tmp / "run-1"
    simulate(federation, run_dir, tmp / "flower", FIRST_RUN)
    return federation, run_dir


def test_epsilon_composes_across_runs_and_a_reached_cap_drops_the_partner(first_run: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    federation, first = first_run
    members = FederationConfig.load(federation).members
    eps1 = eps_series(first)
    assert all(len(s) == 2 and s[0] < s[1] <= 1.0 + 1e-6 for s in eps1.values()), eps1

    # east-mobile lowers its cap so that the second run (planned first) fits one round, not two
    east = PartnerConfig.load(members[1].config)
    run2 = {"num-server-rounds": 2, "dp-target-epsilon": 1.0, "min-partners": 2}
    plan = PartnerNode(east, TrainPlan.from_run_config(run2)).plan_run()
    assert plan.spent_before == pytest.approx(eps1[east.name][-1])
    cap = (plan.projections[0].epsilon + plan.projections[1].epsilon) / 2
    set_privacy(members[1].config, epsilon_cap=round(cap, 4))
    second = tmp_path / "run-2"
    simulate(federation, second, tmp_path / "flower", run2)
    eps2 = eps_series(second)
    for name, series in eps2.items():  # every partner starts run 2 where run 1 left it
        assert eps1[name][-1] < series[0] and all(a < b for a, b in zip(series, series[1:])), (name, series)
    assert len(eps2[east.name]) == 1 and len(eps2["north-telecom"]) == 2
    assert eps2[east.name][0] == pytest.approx(plan.projections[0].epsilon, rel=1e-9)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "completed"  # quorum allowed the run to go on without east-mobile
    failures = [f for r in json.loads((second / "metrics.json").read_text())["rounds"] for f in r["failures"]]
    assert failures and all(f["code"] == ERROR_BUDGET and f["partner"] == east.name for f in failures)
    assert "above the cap" in failures[0]["reason"]
    # the node's ledger holds both runs and verifies; its total never passed the cap
    for m in members:
        entries = Ledger.of(PartnerConfig.load(m.config)).entries()
        assert len({e.run_id for e in entries}) == 2
    assert Ledger.of(east).entries()[-1].epsilon_after <= cap
    # the compliance report of the second run shows every partner's ε over both runs, as
    # `fedcrm privacy history` does on the partners' side, and the runs' rises add up
    from fedcrm.privacy.history import spend_history
    from fedcrm.reports.compliance import write_report

    report = json.loads(write_report(second).data.read_text())
    first_id = json.loads((first / "summary.json").read_text())["run_id"]
    for p in report["partners"]:
        runs = p["history"]["runs"]
        assert [r["run_id"] for r in runs] == [str(first_id), str(report["run_id"])], (p["partner"], runs)
        assert sum(r["epsilon_after"] - r["epsilon_before"] for r in runs) == pytest.approx(p["history"]["epsilon"])
        cfg = next(PartnerConfig.load(m.config) for m in FederationConfig.load(federation).members
                   if m.name == p["partner"])
        assert spend_history(cfg.name, Ledger.of(cfg).entries()).model_dump() == p["history"]
    assert report["badge"] == "completed, 1 partner refused" and report["refused"] == [east.name]


def test_a_cap_too_small_stops_the_run_with_the_partners_reason(fresh_demo: Path, tmp_path: Path) -> None:
    members = FederationConfig.load(fresh_demo).members
    set_privacy(members[2].config, epsilon_cap=0.05)
    run_dir = tmp_path / "run"
    # every partner is needed, and the coordinator asks for ε 3: south-broadband's own cap wins
    result = simulate(fresh_demo, run_dir, tmp_path / "flower",
                      {"num-server-rounds": 2, "dp-target-epsilon": 3.0, "min-partners": 3})
    assert result.status == "finished:completed"  # the run ended cleanly, not by a crash
    summary = json.loads((run_dir / "summary.json").read_text())
    # its first release, the noised statistics (ε ≈ 0.44), would already pass its cap
    assert summary["status"].startswith("stopped: round 0 query: 2 of 3 partners answered, 3 needed")
    assert "south-broadband" in summary["status"] and "above the cap of 0.05" in summary["status"]
    assert summary["rounds_completed"] == 0 and (run_dir / "model.pt").is_file()
    assert Ledger.of(PartnerConfig.load(members[2].config)).entries() == []


def test_client_level_dp_is_accounted_by_flowers_accountant(first_run: tuple[Path, Path]) -> None:
    """Central DP over partners, on top of each partner's DP-SGD: Flower clips every
    partner's update, noises the unweighted mean and composes its RDP accountant."""
    federation, run_dir = first_run
    client = json.loads((run_dir / "epsilon.json").read_text())["client_level"]
    assert [c["round"] for c in client] == [1, 2]
    assert 0 < client[0]["epsilon"] < client[1]["epsilon"]
    from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
    from dp_accounting.rdp import RdpAccountant

    # no amplification: each round is a Gaussian mechanism with σ = 0.5, composed twice
    reference = RdpAccountant().compose(SelfComposedDpEvent(GaussianDpEvent(0.5), 2)).get_epsilon(1e-5)
    assert client[1]["epsilon"] == pytest.approx(reference, rel=0.01)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["client_level_epsilon"] == client[1]["epsilon"]
    # record-level DP went on underneath: each partner's ledger was charged as usual
    assert all(len(s) == 2 for s in eps_series(run_dir).values())
    # evaluate-every 2: the starting model and round 2 were evaluated (and charged), round 1 not
    rows = read_rounds(run_dir)
    assert [(r.round, r.auc is not None) for r in rows] == [(0, True), (1, False), (2, True)]
    assert rows[1].epsilon and not any(f for r in json.loads((run_dir / "metrics.json").read_text())["rounds"]
                                       for f in r["failures"])
    # (this run's entries: the composition test may have added a second run to the ledgers)
    for m in FederationConfig.load(federation).members:
        entries = [e for e in Ledger.of(PartnerConfig.load(m.config)).entries() if e.run_id == summary["run_id"]]
        assert [(e.server_round, e.kind) for e in entries if e.kind == "evaluate"] == [(0, "evaluate"), (2, "evaluate")]
