"""What the federation buys, against honest baselines, on the same splits and seeds.

For each split and seed, on one set of partner exports (HMAC keys derived from the seed, so
the held-out split by keyed pseudonym, and every figure, repeats on a re-run):
- local-only: every partner trains the same model alone (same optimiser, as many epochs as
  the federation runs rounds) on its own rows, normalised with its own statistics, and is
  scored on its own held-out rows;
- federated: real `flwr run` simulations without DP and at ε ∈ {1, 3, 8} per partner, each
  on fresh ledgers;
- pooled: one non-private logistic regression (scikit-learn) on every partner's training
  rows together — the upper reference. It needs all data in one place, so it exists only
  here, as a yardstick.
Every figure is the AUC over all partners' held-out rows pooled (and the mean of partners'
own AUCs), as mean ± sd over seeds. Results go to JSON and a Markdown table.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.coordinator.receipts import simulated_receipts
from fedcrm.data.layout import FeatureLayout
from fedcrm.ml.fedstats import combine, partner_sums
from fedcrm.ops.launcher import simulate
from fedcrm.ml.models import build_model
from fedcrm.data.prepare import PreparedData, prepare
from fedcrm.sandbox.public_data import EXPORTS, split_public
from fedcrm.rundir import RunDir
from fedcrm.ml.training import predict, train_local

EPSILONS = (1.0, 3.0, 8.0)


def variants(epsilons: tuple[float, ...] | list[float] = EPSILONS) -> tuple[str, ...]:
    """The table's rows, in order, for the ε values a study runs."""
    return ("local-only", "federated, no DP", *(f"federated, ε={e:g}" for e in epsilons), "pooled LR (reference)")


VARIANTS = variants()


class Settings(BaseModel):
    data: Literal["telco", "bank"] = "telco"
    partners: int = 5
    splits: list[str] = ["iid", "label-skew"]
    seeds: list[int] = [0, 1, 2]
    rounds: int = 10
    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.5
    model: Literal["logistic", "mlp"] = "logistic"  # for local-only and federated; the reference stays pooled LR
    keep_fraction: float = Field(1.0, gt=0, le=1, description="share of each partner's rows kept (data-scarce runs)")
    epsilons: list[Annotated[float, Field(gt=0)]] = Field(list(EPSILONS), min_length=1,
                                                          description="target ε of the DP variants")

    @property
    def name(self) -> str:
        """Results file stem: `utility_<data>`, plus what differs from the default run, so a
        data-scarce, MLP or longer run never overwrites the default table."""
        return (f"utility_{self.data}" + (f"_keep{round(self.keep_fraction * 100)}" if self.keep_fraction < 1 else "")
                + ("_mlp" if self.model != "logistic" else "") + (f"_r{self.rounds}" if self.rounds != 10 else "")
                + ("" if tuple(self.epsilons) == EPSILONS else "_eps" + "-".join(f"{e:g}" for e in self.epsilons)))


class Score(BaseModel):
    auc: float
    mean_partner_auc: float | None = None  # weighted by held-out rows
    partner_aucs: dict[str, float] = {}  # each partner's own held-out AUC


def _auc_pair(ys: list[np.ndarray], ps: list[np.ndarray], names: list[str]) -> Score:
    two_class = [i for i, y in enumerate(ys) if 0 < y.sum() < len(y)]
    own = {names[i]: float(roc_auc_score(ys[i], ps[i])) for i in two_class}
    return Score(auc=float(roc_auc_score(np.concatenate(ys), np.concatenate(ps))),
                 mean_partner_auc=float(np.average(list(own.values()), weights=[len(ys[i]) for i in two_class]))
                 if own else None, partner_aucs=own)


def local_only(data: list[PreparedData], s: Settings, seed: int, names: list[str]) -> Score:
    ys, ps = [], []
    for i, d in enumerate(data):
        own = combine([partner_sums(d.x_train)]).normalisation  # alone, a partner knows only its own rows
        model = build_model(s.model, d.x_train.shape[1], seed=seed)
        out = train_local(model, own.apply(d.x_train), d.y_train, epochs=s.rounds * s.local_epochs,
                          batch_size=s.batch_size, lr=s.learning_rate, optimizer="sgd", seed=seed * 31 + i, dp=None)
        model.load_state_dict(out.state_dict)
        ys.append(d.y_test)
        ps.append(predict(model, own.apply(d.x_test)))
    return _auc_pair(ys, ps, names)


def pooled(data: list[PreparedData], names: list[str], layout: FeatureLayout | None = None) -> Score:
    norm = combine([partner_sums(d.x_train, layout=layout) for d in data], layout=layout).normalisation
    model = LogisticRegression(max_iter=5000).fit(np.vstack([norm.apply(d.x_train) for d in data]),
                                                  np.concatenate([d.y_train for d in data]))
    return _auc_pair([d.y_test for d in data], [model.predict_proba(norm.apply(d.x_test))[:, 1] for d in data], names)


def federated(fed: Path, work: Path, s: Settings, epsilon: float | None, seed: int, task: str,
              data: list[PreparedData], names: list[str]) -> Score:
    """A real `flwr run` simulation of the settings' model, scored on the exact hold-outs."""
    plan = TrainPlan(task=task, model=s.model, num_server_rounds=s.rounds, local_epochs=s.local_epochs,
                     batch_size=s.batch_size, learning_rate=s.learning_rate, seed=seed, min_partners=s.partners,
                     dp_enabled=epsilon is not None, dp_target_epsilon=epsilon or 1.0)
    run_dir = work / f"run-{'nodp' if epsilon is None else epsilon}"
    simulate_fresh(fed, run_dir, work, plan)
    return scored_run(run_dir, data, names)


def simulate_fresh(fed: Path, run_dir: Path, work: Path, plan: TrainPlan) -> None:
    """A real `flwr run` simulation of `plan` on fresh ledgers: each variant starts at ε = 0."""
    for m in FederationConfig.load(fed).members:
        shutil.rmtree(PartnerConfig.load(m.config).privacy_dir, ignore_errors=True)
    simulated_receipts(fed).unlink(missing_ok=True)  # and no receipt of the ledgers just removed
    shutil.rmtree(run_dir, ignore_errors=True)
    simulate(fed, run_dir, work / "flower", plan.to_run_config())


def scored_run(run_dir: Path, data: list[PreparedData], names: list[str]) -> Score:
    """The run's published model scored here, on every partner's exact hold-out. The run's
    own evaluations are DP releases (noised counts): a benchmark that holds every partner's
    data measures the model, not the noise."""
    run = RunDir(run_dir)
    model, norm = run.model(), run.normalisation()
    scale = norm.apply if norm is not None else (lambda x: x)
    return _auc_pair([d.y_test for d in data], [predict(model, scale(d.x_test)) for d in data], names)


def run(s: Settings, work: Path, log: Callable[[str], None] = print) -> dict:
    export = EXPORTS[s.data]
    results: dict[str, dict[str, list[dict]]] = {}
    for split in s.splits:
        for seed in s.seeds:
            folder = work / f"{split}-seed{seed}"
            shutil.rmtree(folder, ignore_errors=True)
            fed = split_public(export, folder / "consortium", by=split, partners=s.partners, seed=seed,
                               keep=s.keep_fraction, seeded_keys=True, benchmark_policy=True)
            members = FederationConfig.load(fed).members
            data = [prepare(PartnerConfig.load(m.config), export.task) for m in members]
            names = [m.name for m in members]
            t0 = time.monotonic()
            scores = {"local-only": local_only(data, s, seed, names), "pooled LR (reference)": pooled(data, names)}
            scores["federated, no DP"] = federated(fed, folder, s, None, seed, export.task, data, names)
            for eps in s.epsilons:
                scores[f"federated, ε={eps:g}"] = federated(fed, folder, s, eps, seed, export.task, data, names)
            for variant, score in scores.items():
                results.setdefault(split, {}).setdefault(variant, []).append({"seed": seed, **score.model_dump()})
            log(f"{split} seed {seed} ({time.monotonic() - t0:.0f}s): "
                + ", ".join(f"{k} {v.auc:.4f}" for k, v in scores.items()))
    return {"settings": s.model_dump(), "results": results, "summary": summarise(results)}


def _mean_sd(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def own_gains(rows: list[dict], local: list[dict]) -> dict[str, dict[str, float] | None]:
    """What a variant buys each partner over training alone, on the partner's own held-out
    rows: per seed the weighted mean gain and the smallest and largest partner's gain."""
    mean, low, high = [], [], []
    for row, alone in zip(rows, local):
        gains = [row["partner_aucs"][n] - a for n, a in alone["partner_aucs"].items() if n in row["partner_aucs"]]
        if gains and row["mean_partner_auc"] is not None and alone["mean_partner_auc"] is not None:
            mean.append(row["mean_partner_auc"] - alone["mean_partner_auc"])
            low.append(min(gains))
            high.append(max(gains))
    return {"mean": _mean_sd(mean), "smallest_partner": _mean_sd(low), "largest_partner": _mean_sd(high)}


def summarise(results: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    return {split: {v: {"auc": _mean_sd([r["auc"] for r in rows]),
                        "mean_partner_auc": _mean_sd([r["mean_partner_auc"] for r in rows if r["mean_partner_auc"] is not None]),
                        "gain_over_local": own_gains(rows, variants["local-only"]) if v != "local-only" else None}
                    for v, rows in variants.items()} for split, variants in results.items()}


def write(report: dict, out: Path) -> tuple[Path, Path]:
    """`out`.json (every seed), `out`.md (the table) and `out`.baselines.json (the table
    in the shape `fedcrm report run --baselines` reads)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2))
    md_path.write_text(markdown(report))
    out.with_suffix(".baselines.json").write_text(json.dumps(baseline_table(report), indent=2))
    return json_path, md_path


def markdown(report: dict) -> str:
    s = report["settings"]
    kept = f", {s['keep_fraction']:.0%} of each partner's rows kept" if s.get("keep_fraction", 1.0) < 1 else ""
    model = f", {s['model']} model (learning rate {s['learning_rate']:g})" if s.get("model", "logistic") != "logistic" else ""
    lines = [f"Utility on {s['data']}: {s['partners']} partners{kept}{model}, {s['rounds']} rounds, seeds {s['seeds']}; "
             "AUC over all partners' held-out rows pooled, mean ± sd over seeds (mean of partners' own AUCs in brackets).", ""]
    splits = list(report["summary"])
    lines += ["| variant | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    rows = variants(s.get("epsilons", EPSILONS))
    for variant in rows:
        cells = []
        for split in splits:
            row = report["summary"][split].get(variant)
            own = row["mean_partner_auc"] if row else None
            cells.append("–" if row is None else f"{row['auc']['mean']:.4f} ± {row['auc']['sd']:.4f}"
                         + (f" ({own['mean']:.3f})" if own else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", "Gain over local-only on each partner's own held-out AUC, mean over seeds: weighted mean "
              "[smallest partner gain, largest partner gain].", "",
              "| variant | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for variant in rows[1:]:
        cells = []
        for split in splits:
            gain = (report["summary"][split].get(variant) or {}).get("gain_over_local") or {}
            parts = [gain.get(k) for k in ("mean", "smallest_partner", "largest_partner")]
            cells.append("–" if None in parts else f"{parts[0]['mean']:+.4f} [{parts[1]['mean']:+.4f}, {parts[2]['mean']:+.4f}]")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def baseline_table(report: dict) -> dict:
    """The run report's `baselines.json` shape."""
    splits = list(report["summary"])
    rows = [[v] + [f"{report['summary'][sp][v]['auc']['mean']:.4f} ± {report['summary'][sp][v]['auc']['sd']:.4f}"
                   for sp in splits] for v in variants(report["settings"].get("epsilons", EPSILONS))]
    return {"title": "Pooled held-out AUC, mean ± sd over seeds (fedcrm benchmark utility)",
            "columns": ["variant", *splits], "rows": rows}
