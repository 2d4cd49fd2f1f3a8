"""The run report: one HTML page with the plots a coordinator and marketing read.

Everything is drawn from the run directory — per-round metrics, ε, and the summed score
histograms of the held-out sets (aggregate counts, no rows) — so the report exists without
any partner data. ROC, lift (cumulative gains) and calibration come from the histograms of
the last evaluated round; with 200 bins they are exact to 1/200 in score.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: E402

from fedcrm.ml.evaluation import calibration_bins  # noqa: E402
from fedcrm.protocol import EvaluateAggregate, EvaluateReply  # noqa: E402
from fedcrm.rundir import (MODEL_META, MODEL_WEIGHTS, EpsilonPoint, RoundRecord, RunDir, ScoreHistogram,  # noqa: E402
                           SurvivalHistogram, ValueHistogram)

if TYPE_CHECKING:
    from fedcrm.ml.survival import SurvivalScale

AUC, EXAMPLES, POSITIVES = (EvaluateReply.key(f) for f in ("auc", "num_examples", "num_positives"))


def png(fig: plt.Figure) -> str:
    """The figure as a base64 PNG for an <img> data URI (closed after)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def roc_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every bin edge, from the top score down."""
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / neg.sum()])
    return fpr, tpr


def gains_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of customers contacted (top scores first) vs share of positives reached."""
    rows = pos[::-1] + neg[::-1]
    return (np.concatenate([[0.0], np.cumsum(rows) / rows.sum()]),
            np.concatenate([[0.0], np.cumsum(pos[::-1]) / pos.sum()]))


def calibration_points(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted score, observed rate and count per score bin (10 equal-width bins)."""
    n, predicted, observed = calibration_bins(pos, neg)
    keep = n > 0
    return predicted[keep] / n[keep], observed[keep] / n[keep], n[keep]


def _by_round(ax: plt.Axes, ylabel: str, title: str) -> str:
    ax.set(xlabel="round", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(ax.figure)


def _own_auc(rounds: list[RoundRecord], key: str = AUC) -> dict[str, dict[int, float]]:
    """Each partner's AUC (or another metric's wire `key`) on its own held-out rows, by round."""
    out: dict[str, dict[int, float]] = {}
    for r in rounds:
        for name, part in r.partners.items():
            if key in part.evaluate:
                out.setdefault(name, {})[r.round] = part.evaluate[key]
    return out


def value_bins(hists: dict[str, ValueHistogram]) -> list[dict[str, float]]:
    """A value task's last evaluation, pooled over partners, by predicted bin from the
    highest: customers, mean predicted and actual spend (each actual bin at its mean spend,
    `ValueScale.bin_spend`), and the cumulative share of customers and of spend. Noised
    counts are clipped at 0 here: a table reads counts, not sums."""
    from fedcrm.ml.value import ValueScale

    first = next(iter(hists.values()))
    bins = int(round(len(first.counts) ** 0.5))
    scale = ValueScale(cap=first.cap, bins=bins)
    counts = np.clip(np.sum([np.asarray(h.counts, float) for h in hists.values()], axis=0), 0, None).reshape(bins, bins)
    edges = scale.check_edges(first.edges)
    predicted_spend, actual_spend = scale.spend(scale.predicted_values(edges)), scale.bin_spend()
    total_n, total_value = counts.sum(), (counts * actual_spend[None, :]).sum()
    rows, seen_n, seen_value = [], 0.0, 0.0
    for b in range(bins - 1, -1, -1):
        n = counts[b].sum()
        value = (counts[b] * actual_spend).sum()
        seen_n, seen_value = seen_n + n, seen_value + value
        rows.append({"bin": bins - b, "customers": n, "predicted": float(predicted_spend[b]),
                     "actual": value / n if n > 0 else float("nan"),
                     "share_customers": seen_n / total_n if total_n else float("nan"),
                     "share_value": seen_value / total_value if total_value else float("nan")})
    return rows


def _value_plot(rows: list[dict[str, float]]) -> str:
    fig, (ax_bins, ax_capture) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(rows))
    ax_bins.bar(x - 0.2, [r["predicted"] for r in rows], 0.4, label="predicted", color="tab:blue")
    ax_bins.bar(x + 0.2, [r["actual"] for r in rows], 0.4, label="actual", color="tab:orange")
    ax_bins.set_xticks(x, [str(int(r["bin"])) for r in rows])
    ax_bins.set(xlabel="predicted value bin (1: highest)", ylabel="mean spend per customer",
                title="Predicted and actual value by bin")
    ax_bins.legend(fontsize=8)
    ax_bins.grid(alpha=0.3, axis="y")
    ax_capture.plot([0] + [r["share_customers"] for r in rows], [0] + [r["share_value"] for r in rows], "o-",
                    color="tab:blue", label="model")
    ax_capture.plot([0, 1], [0, 1], color="grey", lw=0.8, label="random")
    ax_capture.set(xlabel="share of customers (highest predicted first)", ylabel="share of next-period spend",
                   title="Value capture", xlim=(0, 1), ylim=(0, 1))
    ax_capture.legend(fontsize=8)
    ax_capture.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


RISK_TIERS = (("high", slice(7, 10)), ("medium", slice(3, 7)), ("low", slice(0, 3)))  # risk bins, of 10, by tier


def _survival_release(hists: dict[str, SurvivalHistogram]) -> tuple[SurvivalScale, np.ndarray, np.ndarray]:
    """A time-to-churn evaluation pooled over partners: its scale, the summed counts
    (noised ones clipped at 0: plots and tables read counts, not sums) and each risk bin's
    curve (that of its representative risk, `fedcrm.ml.survival.bin_curves`)."""
    from fedcrm.ml import survival

    first = next(iter(hists.values()))
    scale = survival.SurvivalScale(periods=first.periods, period_days=first.period_days,
                                   bins=len(first.counts) // (first.periods + 1))
    counts = np.clip(scale.joint(np.sum([np.asarray(h.counts, float) for h in hists.values()], axis=0)), 0, None)
    curves = survival.bin_curves(scale, scale.check_edges(first.edges), np.asarray(first.alpha or [0.0] * scale.periods))
    return scale, counts, curves


def survival_bins(hists: dict[str, SurvivalHistogram]) -> list[dict[str, float]]:
    """A time-to-churn task's last evaluation by risk bin from the highest: customers, the
    predicted and observed share leaving within the horizon, and the predicted and observed
    months retained (within it)."""
    from fedcrm.ml import survival

    scale, counts, curves = _survival_release(hists)
    observed = survival.observed_curves(counts, scale, [[b] for b in range(scale.bins)])
    months = scale.period_days / survival.DAYS_PER_MONTH
    rows = []
    for b in range(scale.bins - 1, -1, -1):
        n = counts[b].sum()
        rows.append({"bin": scale.bins - b, "customers": n, "predicted_left": float(1 - curves[b, -1]),
                     "observed_left": float(1 - observed[b, -1]) if n > 0 else float("nan"),
                     "predicted_months": float(survival.expected_retention(curves[b:b + 1])[0] * months),
                     "observed_months": float(survival.expected_retention(observed[b:b + 1])[0] * months)
                     if n > 0 else float("nan")})
    return rows


def _survival_plot(hists: dict[str, SurvivalHistogram]) -> str:
    """Survival by risk tier (observed life tables, solid; the model's curves, dashed) and
    calibration of leaving within 3 months and within the horizon, by risk bin."""
    from fedcrm.ml import survival

    scale, counts, curves = _survival_release(hists)
    per_bin = counts.sum(axis=1)
    months = np.arange(scale.periods + 1) * scale.period_days / survival.DAYS_PER_MONTH
    fig, (ax_s, ax_c) = plt.subplots(1, 2, figsize=(10, 3.8))
    tiers = [(name, list(range(scale.bins))[part]) for name, part in RISK_TIERS]
    observed = survival.observed_curves(counts, scale, [rows for _, rows in tiers])
    for i, (name, rows) in enumerate(tiers):
        w = per_bin[rows]
        predicted = (curves[rows] * w[:, None]).sum(axis=0) / w.sum() if w.sum() > 0 else np.full(scale.periods, np.nan)
        ax_s.plot(months, np.r_[1.0, observed[i]], "o-", color=f"C{i}", label=f"{name} risk: observed")
        ax_s.plot(months, np.r_[1.0, predicted], "--", color=f"C{i}", label=f"{name} risk: predicted")
    ax_s.set(xlabel="months after the cutoff", ylabel="share still buying", title="Survival by risk tier", ylim=(0, 1.02))
    ax_s.legend(fontsize=7)
    ax_s.grid(alpha=0.3)
    marks = sorted({min(3, scale.periods), scale.periods})
    by_bin = survival.observed_curves(counts, scale, [[b] for b in range(scale.bins)])
    for j, k in enumerate(marks):
        keep = per_bin > 0
        label = f"within {months[k]:.0f} months"
        ax_c.scatter(1 - curves[keep, k - 1], 1 - by_bin[keep, k - 1], s=15 + 150 * per_bin[keep] / per_bin.max(),
                     color=f"C{j + 3}", label=label)
        ax_c.plot(1 - curves[keep, k - 1], 1 - by_bin[keep, k - 1], color=f"C{j + 3}")
    ax_c.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax_c.set(xlabel="predicted share leaving", ylabel="observed share leaving", title="Calibration by risk bin",
             xlim=(0, 1), ylim=(0, 1))
    ax_c.legend(fontsize=8)
    ax_c.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def _caps(rounds: list[RoundRecord]) -> dict[str, float]:
    """Each partner's ε cap, as its node stated it in its last charged training reply."""
    caps: dict[str, float] = {}
    for r in rounds:
        for name, part in r.partners.items():
            train = part.trained()
            if train is not None and train.epsilon_cap is not None:
                caps[name] = train.epsilon_cap
    return caps


def _plots(rounds: list[RoundRecord], eps: dict[str, list[EpsilonPoint]],
           hists: dict[str, ScoreHistogram], sizes: dict[str, dict[str, float]]) -> dict[str, str]:
    plots: dict[str, str] = {}

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    value = any((g := r.evaluated()) is not None and g.spearman is not None for r in rounds)
    survival = any((g := r.evaluated()) is not None and g.c_index is not None for r in rounds)
    field, label = (("spearman", "Spearman, value rank") if value else ("c_index", "c-index, time to churn") if survival
                    else ("auc", "ROC-AUC"))
    pooled = [(r.round, getattr(g, field)) for r in rounds
              if (g := r.evaluated()) is not None and getattr(g, field) is not None]
    if pooled:
        ax.plot(*zip(*pooled), "o-", lw=2.5, color="black", label="global (pooled)")
    for name, by_round in sorted(_own_auc(rounds, EvaluateAggregate.key(field)).items()):
        ax.plot(list(by_round), list(by_round.values()), "o--", label=name)
    plots["auc"] = _by_round(ax, f"{label} (held-out)", f"{label.split(',')[0]} by round")

    if eps:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        caps = _caps(rounds)
        for i, (name, series) in enumerate(sorted(eps.items())):
            ax.plot([e.round for e in series], [e.epsilon for e in series], "o-", color=f"C{i}", label=name)
            if name in caps:
                ax.axhline(caps[name], color=f"C{i}", ls="--", lw=1)
        plots["epsilon"] = _by_round(ax, "cumulative ε", "ε by round (dashed: each partner's cap)")

    if hists:
        total_pos = np.sum([np.asarray(h.pos, float) for h in hists.values()], axis=0)
        total_neg = np.sum([np.asarray(h.neg, float) for h in hists.values()], axis=0)
        curves = {"global": (total_pos, total_neg)} | {n: (np.asarray(h.pos, float), np.asarray(h.neg, float))
                                                     for n, h in sorted(hists.items())}
        fig, (ax_roc, ax_gain) = plt.subplots(1, 2, figsize=(10, 4))
        for name, (pos, neg) in curves.items():
            style = dict(lw=2.5, color="black") if name == "global" else dict(lw=1.2, ls="--")
            if pos.sum() and neg.sum():
                ax_roc.plot(*roc_points(pos, neg), label=name, **style)
            if pos.sum():
                ax_gain.plot(*gains_points(pos, neg), label=name, **style)
        ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax_gain.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax_gain.axvline(0.1, color="grey", ls=":", lw=0.8)
        ax_roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (held-out, last round)")
        ax_gain.set(xlabel="share of customers contacted, top scores first", ylabel="share of positives reached",
                    title="Cumulative gains (lift)")
        for ax in (ax_roc, ax_gain):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        plots["roc_lift"] = png(fig)

        fig, ax = plt.subplots(figsize=(5, 4))
        predicted, observed, n = calibration_points(total_pos, total_neg)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.scatter(predicted, observed, s=20 + 200 * n / n.max(), color="tab:blue")
        ax.plot(predicted, observed, color="tab:blue")
        ax.set(xlabel="mean predicted score", ylabel="observed rate", title="Calibration (pooled, 10 equal-width score bins)",
               xlim=(0, 1), ylim=(0, 1))
        ax.grid(alpha=0.3)
        plots["calibration"] = png(fig)

    if sizes:
        fig, (ax_n, ax_rate) = plt.subplots(1, 2, figsize=(10, 3.4))
        names = list(sizes)
        ax_n.bar(names, [sizes[n]["train"] for n in names], label="train")
        ax_n.bar(names, [sizes[n]["test"] for n in names], bottom=[sizes[n]["train"] for n in names], label="held-out")
        ax_n.set(title="Customers per partner", ylabel="rows")
        ax_n.legend(fontsize=8)
        ax_rate.bar(names, [sizes[n]["label_rate"] for n in names], color="tab:orange")
        ax_rate.set(title="Label rate (held-out)", ylabel="share of positives", ylim=(0, 1))
        for ax in (ax_n, ax_rate):
            ax.tick_params(axis="x", labelrotation=15)
        plots["partners"] = png(fig)
    return plots


def _partner_sizes(rounds: list[RoundRecord]) -> dict[str, dict[str, float]]:
    sizes: dict[str, dict[str, float]] = {}
    for r in rounds:
        for name, part in r.partners.items():
            s = sizes.setdefault(name, {"train": 0, "test": 0, "label_rate": 0.0})
            if part.train.get(EXAMPLES):
                s["train"] = part.train[EXAMPLES]
            if part.evaluate.get(EXAMPLES):
                s["test"] = part.evaluate[EXAMPLES]
                s["label_rate"] = part.evaluate.get(POSITIVES, 0) / part.evaluate[EXAMPLES]
    return sizes


VALUE_KPIS = (("spearman", "Spearman, value rank"), ("value_capture_top_decile", "value captured, top 10 %"),
              ("r2_log", "R², log value"), ("mae_log", "MAE, log value"), ("rmse_log", "RMSE, log value"))
SURVIVAL_KPIS = (("c_index", "c-index, time to churn"), ("integrated_brier", "integrated Brier"),
                 ("left_observed", "left within the horizon"), ("left_predicted", "predicted to leave"))
KPIS = (("auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("log_loss", "log loss"), ("brier", "Brier"),
        ("lift_top_decile", "lift, top 10 %"), ("capture_top_decile", "capture, top 10 %"), ("ece", "calibration error"))


def build(run_dir: Path, baselines: Path | None = None) -> dict[str, Any]:
    from fedcrm.reports.evaluation_tables import local_baselines

    run = RunDir(run_dir)
    rounds, summary = run.rounds(), run.summary()
    eps, hist_file = run.epsilon(), run.histograms()
    hists = hist_file.rounds[max(hist_file.rounds)] if hist_file and hist_file.rounds else {}
    value_hists = hist_file.value_rounds[max(hist_file.value_rounds)] if hist_file and hist_file.value_rounds else {}
    value_table = value_bins(value_hists) if value_hists else []
    survival_hists = (hist_file.survival_rounds[max(hist_file.survival_rounds)]
                      if hist_file and hist_file.survival_rounds else {})
    survival_table = survival_bins(survival_hists) if survival_hists else []
    final = next((g for r in reversed(rounds) if (g := r.evaluated()) is not None), None)
    sizes = _partner_sizes(rounds)
    own = {name: by_round[max(by_round)] for name, by_round in _own_auc(rounds).items()}
    shown = (VALUE_KPIS if final is not None and final.spearman is not None else  # a value task's own
             SURVIVAL_KPIS if final is not None and final.c_index is not None else KPIS)
    kpis = [(EvaluateAggregate.key(f), label, getattr(final, f) if final else None) for f, label in shown]
    return {"run_id": run.run_id, "status": summary.status, "plan": run.plan, "kpis": kpis, "own_auc": own,
            "epsilon_final": summary.epsilon, "sizes": sizes,
            "plots": {**_plots(rounds, eps.partners if eps else {}, hists, sizes),
                      **({"value": _value_plot(value_table)} if value_table else {}),
                      **({"survival": _survival_plot(survival_hists)} if survival_table else {})},
            "value_bins": value_table, "survival_bins": survival_table, "baselines": run.baselines(baselines),
            "score_bins": hist_file.bins if hist_file else None, "local_baselines": local_baselines(rounds),
            **_evaluation(run, hists)}


def _evaluation(run: RunDir, hists: dict[str, ScoreHistogram]) -> dict[str, Any]:
    """Deciles, tiers at the scoring thresholds, per-partner calibration (last evaluated
    round's histograms), and what the published model leans on."""
    from fedcrm.config.tiers import TierRule
    from fedcrm.reports.evaluation_tables import decile_table, importances, partner_calibration, tier_table

    out: dict[str, Any] = {"deciles": [], "tiers": [], "tier_rule": TierRule(), "calibration": [],
                           "importance": None}
    if hists:
        pos = np.sum([np.clip(np.asarray(h.pos, float), 0, None) for h in hists.values()], axis=0)
        neg = np.sum([np.clip(np.asarray(h.neg, float), 0, None) for h in hists.values()], axis=0)
        out.update(deciles=decile_table(pos, neg), tiers=tier_table(pos, neg, out["tier_rule"]),
                   calibration=partner_calibration(hists))
    if run.has(MODEL_META) and run.has(MODEL_WEIGHTS):
        import torch

        meta = run.model_meta()
        state = torch.load(run.path / MODEL_WEIGHTS, weights_only=True)
        out["importance"] = importances(meta.kind, state, meta.features)
    return out


def write(run_dir: Path, baselines: Path | None = None) -> Path:
    env = Environment(loader=PackageLoader("fedcrm.reports", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["num"] = lambda v, d=3: "–" if v is None or v != v else f"{v:.{d}f}"  # None or NaN
    page = env.get_template("run_report.html").render(**build(run_dir, baselines))
    path = Path(run_dir) / "report.html"
    path.write_text(page)
    return path
