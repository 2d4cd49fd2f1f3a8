"""A time-to-churn task on UCI Online Retail, by configs only: the shipped retail
contract's `time-to-churn` task (the month of six after the cutoff in which a customer
reaches 90 days without a purchase), three shops of their own (fresh ledgers: the value
tests spend theirs), DP training of the hazard model and the node's one evaluation
release, a joint (risk bin, period left in) histogram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.errors import PolicyRefusal
from fedcrm.ml.models import build_model
from fedcrm.privacy.accounting import epsilon
from fedcrm.privacy.ledger import Ledger
from tests.test_value_task import nodes, shops  # noqa: F401 - the fixture: this module's own shops

pytestmark = pytest.mark.dataset


def test_both_engines_give_the_same_time_to_churn_labels(shops: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB and pandas agree customer by customer: the period of the first 90-day silence,
    or 7 (still buying at the end of the six months)."""
    from fedcrm.data.prepare import purchase_activity, task_activity

    cfg = PartnerConfig.load(FederationConfig.load(shops).members[1].config)
    activity = task_activity(cfg, "time-to-churn")
    assert (activity.horizon_days, activity.lapse_days) == (180, 90)
    ids = pd.Index(pd.read_csv(cfg.transactions.path, dtype=str)["CustomerID"].dropna().unique())
    duck = purchase_activity(cfg, activity, "time-to-churn", "", ids, engine="duckdb")
    pandas = purchase_activity(cfg, activity, "time-to-churn", "", ids, engine="pandas")
    assert duck.engine == "duckdb" and pandas.engine == "pandas"
    a, b = duck.label.to_numpy(), pandas.label.to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    assert 0.2 < np.isnan(a).mean() < 0.8 and np.nanmin(a) == 1 and np.nanmax(a) <= 180


def test_dp_time_to_churn_ranks_customers_and_evaluation_is_one_charged_histogram(shops: Path) -> None:
    from fedcrm.coordinator.value_edges import PredictedEdges
    from fedcrm.ml import survival
    from fedcrm.ml.fedstats import PartnerSums, combine
    from fedcrm.protocol import SurvivalEvaluateReply

    members = nodes(shops, "time-to-churn")
    data = [node.data() for node in members]
    labels = np.concatenate([np.concatenate([d.y_train, d.y_test]) for d in data])
    assert set(np.unique(labels)) == set(range(1, 8)), np.unique(labels)  # every month, and 'still there'
    sums = [node.feature_sums("t1") for node in members]
    norm = combine([PartnerSums(n=s.stat_n, sum=s.stat_sum, sumsq=s.stat_sumsq, onehot=s.stat_onehot) for s in sums],
                   noised=True, layout=members[0].layout.fixed_part()).normalisation
    scale = members[0].survival_scale
    assert scale is not None and (scale.periods, scale.period_days) == (6, 30)
    state = build_model("logistic", members[0].layout.width, seed=42, periods=6).state_dict()
    edges = PredictedEdges(scale)
    for rnd in (1, 2, 3):
        outs = [node.train(state, rnd, "t1", norm) for node in members]
        w = np.array([o[1].num_examples for o in outs], float)
        state = {k: sum(wi * o[0][k] for wi, o in zip(w / w.sum(), outs)) for k in state}
        if rnd >= 2:
            sent = list(edges.edges)
            replies = [node.evaluate(state, norm, "t1", rnd, value_edges=sent) for node in members]
            edges.edges = scale.next_edges(np.sum([np.asarray(r.survival_hist, float) for r in replies], axis=0),
                                           scale.check_edges(sent))
    for node, reply in zip(members, replies):
        assert isinstance(reply, SurvivalEvaluateReply) and len(reply.survival_hist) == 70
        entries = Ledger.of(node.cfg).entries()
        assert [e.kind for e in entries] == ["statistics", "train", "train", "evaluate", "train", "evaluate"]
        assert reply.epsilon == pytest.approx(entries[-1].epsilon_after) and reply.epsilon <= 3.0 + 1e-6
        assert reply.epsilon >= epsilon([e.history_entry for e in entries if e.side == "holdout"],
                                        node.policy.delta) - 1e-9
        # the ledger's RDP figure is dp-accounting's, composed here from the entries' own
        # mechanisms (the larger of the two disjoint sides, each composed alone)
        dp_accounting = pytest.importorskip("dp_accounting", reason="pip install dp-accounting (test extra)")
        from dp_accounting import dp_event
        from dp_accounting.rdp import rdp_privacy_accountant

        def side_epsilon(side: str) -> float:
            acc = rdp_privacy_accountant.RdpAccountant(
                neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
            for e in entries:
                if e.side == side:
                    event = dp_event.GaussianDpEvent(e.noise_multiplier)
                    acc.compose(event if e.sample_rate >= 1 else dp_event.PoissonSampledDpEvent(e.sample_rate, event),
                                e.steps)
            return acc.get_epsilon(node.policy.delta)

        assert entries[-1].epsilon_rdp_after == pytest.approx(max(side_epsilon("training"), side_epsilon("holdout")),
                                                              rel=0.01)
    model = build_model("logistic", members[0].layout.width, periods=6)
    model.load_state_dict(state)
    label = np.concatenate([d.y_test for d in data])
    curves = np.concatenate([survival.survival_curves(model, norm.apply(d.x_test)) for d in data])
    exact = survival.survival_metrics(label, curves, scale)
    # recency alone orders who lapses first: the DP model ranks well above chance
    assert exact.c_index > 0.65 and exact.integrated_brier < 0.25, exact
    # what the shops released is the exact joint histogram plus the nodes' noise: the pooled
    # figures fall within the spread of 500 such draws
    edges_sent, alpha = scale.check_edges(sent), survival.period_intercepts(model)
    pooled = survival.metrics_from_joint(np.sum([np.asarray(r.survival_hist, float) for r in replies], axis=0),
                                         scale, edges_sent, alpha)
    exact_joint = survival.joint_histogram(label, curves, scale, edges_sent)
    sd = math.sqrt(sum(r.noise_multiplier**2 for r in replies))
    rng = np.random.default_rng(0)
    draws = [survival.metrics_from_joint(np.rint(exact_joint + rng.normal(0, sd, exact_joint.shape)), scale,
                                         edges_sent, alpha) for _ in range(500)]
    for field in ("c_index", "integrated_brier"):
        low, high = np.quantile([getattr(d, field) for d in draws], [0.001, 0.999])
        assert low <= getattr(pooled, field) <= high, (field, pooled, exact, low, high, sd)
    assert abs(np.median([d.c_index for d in draws]) - exact.c_index) < 0.05  # binning and noise leave it close
    # a model without the task's periods is refused before anything is charged
    before = len(Ledger.of(members[0].cfg).entries())
    with pytest.raises(PolicyRefusal, match="period intercepts"):
        members[0].evaluate(build_model("logistic", members[0].layout.width).state_dict(), norm, "t1", 0,
                            value_edges=sent)
    assert len(Ledger.of(members[0].cfg).entries()) == before


@pytest.mark.flower
def test_a_federated_time_to_churn_run_reports_and_scores_survival(shops: Path, tmp_path: Path) -> None:
    """`fedcrm run --task time-to-churn`: a real simulation; the pooled metrics are the
    concordance and integrated Brier score; the report draws survival by risk tier and
    calibration; `fedcrm score` writes the probability of leaving within 1, 3 and 6 months
    and the expected retention."""
    import json

    from tests.test_consortium_by_configs import fedcrm

    run_dir = tmp_path / "run"
    fedcrm("run", "--federation", str(shops), "--out", str(run_dir), "--work", str(tmp_path / "flower"),
           "--task", "time-to-churn", "--rounds", "2", "--epsilon", "3")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    final = summary["final_global"]
    assert final["c-index"] > 0.6 and 0 < final["integrated-brier"] < 0.3 and "auc" not in final, final
    from fedcrm.rundir import RunDir

    hists = RunDir(run_dir).histograms()
    assert hists is not None and sorted(hists.survival_rounds) == [0, 1, 2] and not hists.value_rounds
    last = hists.survival_rounds[2]["p1"]
    assert len(last.counts) == 70 and len(last.alpha) == 6 and (last.periods, last.period_days) == (6, 30)
    fedcrm("privacy", "audit", str(run_dir), "--federation", str(shops), "--out", str(tmp_path / "audits"))
    audits = [json.loads(f.read_text()) for f in sorted((tmp_path / "audits").glob("p*-run-*.json"))]
    assert len(audits) == 3 and all(0 < a["loss_members"] < 6 * math.log(2) for a in audits), audits  # the per-customer likelihood over 6 months
    fedcrm("report", "run", str(run_dir))
    page = (run_dir / "report.html").read_text()
    assert 'data-plot="survival"' in page and page.count("<tr data-risk-bin=") == 10 and 'data-metric="c-index"' in page
    scores = tmp_path / "scores.csv"
    fedcrm("score", "--model", str(run_dir), "--partner-config", str(shops.parent / "p3" / "partner.toml"),
           "--out", str(scores))
    scored = pd.read_csv(scores).query("status == 'scored'")
    p1, p3, p6 = (scored[f"p_leave_{m}m"] for m in (1, 3, 6))
    assert ((0 <= p1) & (p1 <= p3) & (p3 <= p6) & (p6 <= 1)).all()
    assert ((scored["expected_retention_months"] > 0) & (scored["expected_retention_months"] <= 6 * 30 / 30.4375 + 1e-9)).all()
    assert (scored["score"] == p6).all() and set(scored["churn_risk"]) <= {"high", "medium", "low"}
