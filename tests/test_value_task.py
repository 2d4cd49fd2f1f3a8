"""A value (CLV) task on UCI Online Retail, by configs only: the shipped retail contract's
`clv` task (spend in the 180 days after the cutoff), three shops, DP training of the log
value and the node's one evaluation release, a joint histogram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.contract.model import Contract
from fedcrm.ml.models import build_model
from fedcrm.errors import PolicyRefusal
from fedcrm.ml.value import joint_histogram, metrics_from_joint, next_edges, predict_log_value, value_metrics
from fedcrm.node.partner import PartnerNode
from fedcrm.privacy.accounting import epsilon
from fedcrm.privacy.ledger import Ledger
from fedcrm.protocol import ValueEvaluateReply
from tests.test_consortium_by_configs import onboard

CONTRACT = Path(__file__).resolve().parents[1] / "contracts" / "retail.toml"
pytestmark = pytest.mark.dataset


@pytest.fixture(scope="module")
def shops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedcrm.sandbox.public_data import RETAIL_CSV

    if not RETAIL_CSV.is_file():
        pytest.skip(f"UCI Online Retail not found at {RETAIL_CSV} (../shared/datasets)")
    tmp = tmp_path_factory.mktemp("value")
    log = pd.read_csv(RETAIL_CSV, dtype=str, keep_default_na=False)
    customer = pd.to_numeric(log["CustomerID"], errors="coerce")
    exports = []
    for pid in (1, 2, 3):
        folder = tmp / f"p{pid}"
        folder.mkdir()
        mine = (customer % 3 == pid - 1) | (customer.isna() & (pid == 1))
        log[mine.to_numpy()].to_csv(folder / "purchases.csv", index=False)
        exports.append(folder / "purchases.csv")

    def review(config: Path) -> None:
        text = config.read_text()
        config.write_text(text.replace('secret_file = "secret.key"', 'secret_file = "secret.key"\nas_of = "2011-12-10"'))

    return onboard(tmp, CONTRACT, exports, "clv", review=review)


def nodes(federation: Path, task: str = "clv", **plan: object) -> list[PartnerNode]:
    run = TrainPlan.from_run_config({"task": task, "num-server-rounds": 3, "dp-target-epsilon": 3.0,
                                     "contract-digest": Contract.load(CONTRACT).digest(), **plan})
    return [PartnerNode(PartnerConfig.load(m.config), run, run_id="v1") for m in FederationConfig.load(federation).members]


def test_the_label_is_the_spend_after_the_cutoff(shops: Path) -> None:
    data = nodes(shops)[0].data()
    spend = np.concatenate([data.y_train, data.y_test])
    assert (spend >= 0).all() and (spend == 0).mean() > 0.1 and spend.max() > 1000, pd.Series(spend).describe()


def test_a_value_task_learns_from_the_customers_a_shop_had_at_the_cutoff(shops: Path) -> None:
    """The contract's clv label has population = "bought-by-cutoff": a customer whose first
    purchase comes after the cutoff sits out of the task's rows and is counted; the churn
    task of the same contract (population unset: all) keeps everyone."""
    from fedcrm.data.activity import purchases
    from fedcrm.data.prepare import as_of_date, load_events, task_activity

    value, churn = nodes(shops)[0], nodes(shops, task="churn-from-purchases")[0]
    kept, everyone = value.data().summary, churn.data().summary
    assert kept.n_train + kept.n_test + kept.outside_population == everyone.n_train + everyone.n_test
    assert everyone.outside_population == 0
    cfg = value.cfg
    cutoff = pd.Timestamp(task_activity(cfg, "clv").cutoff_for(as_of_date(cfg)))
    _, tx = load_events(cfg.transactions, cfg.name, cfg.cleaning, as_of_date(cfg))
    first = purchases(tx.clean).groupby("customer_id", observed=True)["date"].min()
    # every customer with a purchase by the cutoff is kept, every one first seen after it is not
    assert kept.n_train + kept.n_test == (first <= cutoff).sum()
    assert kept.outside_population >= (first > cutoff).sum() > 0.2 * len(first)


def test_dp_training_learns_the_value_and_evaluation_is_one_charged_histogram(shops: Path) -> None:
    from fedcrm.coordinator.value_edges import PredictedEdges
    from fedcrm.ml.fedstats import PartnerSums, combine

    members = nodes(shops)
    sums = [node.feature_sums("v1") for node in members]
    norm = combine([PartnerSums(n=s.stat_n, sum=s.stat_sum, sumsq=s.stat_sumsq, onehot=s.stat_onehot) for s in sums],
                   noised=True, layout=members[0].layout.fixed_part()).normalisation
    state = build_model("logistic", members[0].layout.width, seed=42).state_dict()
    scale = members[0].value_scale
    assert scale is not None and scale.cap == 10_000
    edges = PredictedEdges(scale)  # what the coordinator keeps: even edges, then the released deciles
    for rnd in (1, 2, 3):
        outs = [node.train(state, rnd, "v1", norm) for node in members]
        w = np.array([o[1].num_examples for o in outs], float)
        state = {k: sum(wi * o[0][k] for wi, o in zip(w / w.sum(), outs)) for k in state}
        if rnd >= 2:
            sent = list(edges.edges)
            replies = [node.evaluate(state, norm, "v1", rnd, value_edges=sent) for node in members]
            pooled_hist = np.sum([np.asarray(r.value_hist, float) for r in replies], axis=0)
            edges.edges = next_edges(pooled_hist, scale, scale.check_edges(sent))
    assert sent != scale.even_edges()  # round 3 was cut at round 2's deciles
    for node, reply in zip(members, replies):
        assert isinstance(reply, ValueEvaluateReply) and len(reply.value_hist) == scale.bins**2
        entries = Ledger.of(node.cfg).entries()
        assert [e.kind for e in entries] == ["statistics", "train", "train", "evaluate", "train", "evaluate"]
        assert reply.epsilon == pytest.approx(entries[-1].epsilon_after) and reply.epsilon <= 3.0 + 1e-6
        assert entries[-1].noise_multiplier >= node.policy.min_eval_noise_multiplier
        holdout = [e.history_entry for e in entries if e.side == "holdout"]
        assert reply.epsilon >= epsilon(holdout, node.policy.delta) - 1e-9  # the larger side's ε
    # the model itself, on every shop's exact hold-out: it ranks next-period value
    model = build_model("logistic", members[0].layout.width)
    model.load_state_dict(state)
    held = [node.data() for node in members]
    exact = value_metrics(np.concatenate([d.y_test for d in held]),
                          np.concatenate([predict_log_value(model, norm.apply(d.x_test), scale) for d in held]), scale)
    # pooled least squares on the same features and rows (exact, no DP) reached Spearman 0.33,
    # top-decile capture 0.32; runs of this test 0.19-0.36 and 0.12-0.31 (the DP noise is
    # the OS's: no two runs train the same model)
    assert exact.spearman > 0.1 and exact.value_capture_top_decile > 0.1, exact
    # what the shops released is the exact joint histogram plus the nodes' noise: the pooled
    # figure falls within the spread of 500 such draws (at this test's σ, with four
    # evaluations planned, that spread is wide: a suite run read 0.08 against an exact 0.33,
    # outside the fixed ±0.2 this test had)
    edges_sent = scale.check_edges(sent)
    pooled = metrics_from_joint(np.sum([np.asarray(r.value_hist, float) for r in replies], axis=0), scale, edges_sent)
    exact_joint = sum(joint_histogram(d.y_test, predict_log_value(model, norm.apply(d.x_test), scale), scale, edges_sent)
                      for d in held)
    sd = math.sqrt(sum(r.noise_multiplier**2 for r in replies))
    rng = np.random.default_rng(0)
    draws = [metrics_from_joint(np.rint(exact_joint + rng.normal(0, sd, exact_joint.shape)), scale, edges_sent).spearman
             for _ in range(500)]
    low, high = np.quantile(draws, [0.001, 0.999])
    assert math.isfinite(pooled.spearman) and low <= pooled.spearman <= high, (pooled, exact, low, high, sd)
    # a node refuses edges it cannot cut a histogram at, before anything is charged
    before = len(Ledger.of(members[0].cfg).entries())
    with pytest.raises(PolicyRefusal, match="predicted-side edges"):
        members[0].evaluate(state, norm, "v1", 3, value_edges=sorted(sent, reverse=True))
    assert len(Ledger.of(members[0].cfg).entries()) == before


@pytest.mark.flower
def test_a_federated_value_run_is_scored_with_predicted_value(shops: Path, tmp_path: Path) -> None:
    """`fedcrm run --task clv`: a real simulation; the round's pooled metrics are the value
    task's, and `fedcrm score` writes each customer's predicted spend and value decile."""
    import json

    from tests.test_consortium_by_configs import fedcrm

    run_dir = tmp_path / "run"
    fedcrm("run", "--federation", str(shops), "--out", str(run_dir), "--work", str(tmp_path / "flower"),
           "--task", "clv", "--rounds", "2", "--epsilon", "3")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    final = summary["final_global"]
    # the value task's metrics, from the noised joint histograms: at two rounds of ε = 3 the
    # pooled Spearman spreads too widely for a level check (0.13 and 0.33 seen on the same
    # code); its level against the noise is the node test's (500 draws, above)
    assert -1 <= final["spearman"] <= 1 and "auc" not in final and final["num-partners"] == 3, final
    assert {"mae-log", "rmse-log", "value-capture-top-decile"} <= set(final), final
    # every evaluation's joint histograms are on record with the edges they were cut at:
    # even ones for the starting model and the first trained one, then the released deciles
    from fedcrm.ml.value import ValueScale
    from fedcrm.rundir import RunDir

    hists = RunDir(run_dir).histograms()
    assert hists is not None and sorted(hists.value_rounds) == [0, 1, 2] and not hists.rounds
    scale = ValueScale(cap=10_000)
    assert [hists.value_rounds[r]["p1"].edges for r in (0, 1)] == [scale.even_edges()] * 2
    assert hists.value_rounds[2]["p1"].edges != scale.even_edges()
    assert all(len(h.counts) == 100 for r in hists.value_rounds.values() for h in r.values())
    # the membership audit scores each row by the loss the model was trained with: the
    # cross-entropy against its unit-scaled spend, never negative (against the raw spend, as
    # the audit read it before, the mean "loss" was in the hundreds below zero)
    fedcrm("privacy", "audit", str(run_dir), "--federation", str(shops), "--out", str(tmp_path / "audits"))
    audits = [json.loads(f.read_text()) for f in sorted((tmp_path / "audits").glob("p*-run-*.json"))]
    assert len(audits) == 3
    for audit in audits:
        assert 0 <= audit["loss_members"] < 1 and 0 <= audit["loss_non_members"] < 1, audit
    fedcrm("report", "run", str(run_dir))
    page = (run_dir / "report.html").read_text()
    assert 'data-plot="value"' in page and page.count("<tr data-bin=") == 10 and 'data-metric="spearman"' in page
    # the page in a real browser, at both widths the other reports are checked at: no clipped column
    import shutil

    from fedcrm.reports.document import CHROMIUM_FLAGS
    from tests.test_reports import CLIPPED, open_page

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is not None:  # scripts/test.sh installs it; without it the page's content is checked above
        with sync_api.sync_playwright() as pw:
            launched = pw.chromium.launch(executable_path=chromium, args=[f for f in CHROMIUM_FLAGS if f != "--headless"])
            for width in (1280, 800):
                view = open_page(launched, run_dir / "report.html", width)
                layout = view.evaluate(CLIPPED)
                view.close()
                assert layout["clipped"] == [] and layout["page"] <= layout["width"], (width, layout)
            launched.close()
    scores = tmp_path / "scores.csv"
    fedcrm("score", "--model", str(run_dir), "--partner-config", str(shops.parent / "p2" / "partner.toml"),
           "--out", str(scores))
    table = pd.read_csv(scores)
    scored = table[table["status"] == "scored"]
    assert (scored["predicted_value"] >= 0).all() and set(scored["value_decile"]) == set(range(1, 11))
    tiers = scored.groupby("predicted_value_tier")["value_decile"].agg(["min", "max"])
    assert tiers.loc["top"].tolist() == [1, 2] and tiers.loc["middle"].tolist() == [3, 5] and tiers.loc["low"].tolist() == [6, 10]
    assert scored["predicted_value"].max() > 3 * scored["predicted_value"].median()
    # marketing gets every customer, those the task left out (first seen after the cutoff) too
    learned = nodes(shops)[1].data().summary
    assert len(scored) > learned.n_train + learned.n_test


def test_trees_are_refused_for_a_value_task(shops: Path) -> None:
    """Boosted trees fit 0/1 labels: the node refuses to train them on spend, charging nothing
    (the coordinator's `run_federation` refuses such a run before it starts)."""
    node = nodes(shops, model="gbdt")[0]
    before = len(Ledger.of(node.cfg).entries())
    with pytest.raises(PolicyRefusal, match="predicts a value"):
        node.train(build_model("gbdt", node.layout.width).state_dict(), 1, "v1")
    assert len(Ledger.of(node.cfg).entries()) == before
