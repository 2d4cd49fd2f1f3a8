"""Customer value (the `clv` task) and time to churn (the `time-to-churn` task) on UCI
Online Retail: federated against pooled training and against the classical models
(buy-till-you-die for value; Kaplan-Meier and Cox for time to churn), through real
`flwr run` simulations.

For each seed the log's customers are dealt at random to three shops, which are onboarded
the way a consortium would (the shipped retail contract, `partner map`'s draft, the review:
`benchmarks/contract_utility.py`). Every figure below is measured on the same hold-out
customers (each shop's own hold-out split of the task's population, all three together:
the customers it had at the cutoff, under the retail contract's `population =
"bought-by-cutoff"`), exactly: the benchmark
holds every shop's data, so it scores the published model itself, not its noised release.
- **pooled fractional logit**: the federated model's own model and loss (cross-entropy of
  a sigmoid against the unit-scaled capped log spend) fitted to its optimum on every shop's
  training rows together: the reference of the targets;
- **pooled least squares** on the capped log spend, the same features;
- **pooled LightGBM**: a regressor on the same rows, what more capacity buys;
- **BG/NBD + Gamma-Gamma** (`lifetimes`): the standard buy-till-you-die CLV model, fitted on
  every shop's purchases up to the cutoff (pooled), predicting each hold-out customer's
  spend over the horizon as expected purchases times expected spend per purchase;
- **federated, no DP** and **at ε = 3** (the default model: a fractional logit), and an
  **MLP at ε = 3**: `fedcrm run --task clv` for 10 rounds.
- **the mean fit** (`clv-mean`, the same label with `value_fit = "mean"`: the model learns
  the expected capped spend instead of the log spend; `fedcrm.ml.value.ValueScale`): the
  pooled fractional logit, pooled LightGBM (a regressor on the capped spend itself) and
  federated at ε = 3, logistic and MLP, scored on the same log scale.

Time to churn (the month of six after the cutoff in which a customer reaches 90 days
without a purchase, or none), exact concordance (Harrell's C) and integrated Brier score
of the survival curves at the six month ends, on the same shops' hold-outs:
- **pooled hazard model**: the federated model's own model and loss (a logit-linear hazard
  per month, `fedcrm.ml.survival.HazardModel`) fitted to its optimum on every shop's
  training rows together (full-batch L-BFGS): the reference of the targets;
- **Kaplan-Meier** (`lifelines`, pooled, no features: every customer the same curve, so a
  concordance of 0.5) and **Cox proportional hazards** (`lifelines`, pooled, the same
  features; months as durations, Efron ties);
- **federated, no DP**, **at ε = 3** and an **MLP at ε = 3**: `fedcrm run --task time-to-churn`.

    .venv/bin/pip install -e '.[bench]'                            # lifetimes and lifelines
    .venv/bin/python benchmarks/value_and_time.py                 # 3 seeds (~20 min)
    .venv/bin/python benchmarks/value_and_time.py --seeds 0 --tasks time-to-churn

Targets (issue 16): federated no DP within 2 % of pooled on Spearman and c-index; ε = 3
within 5 %; the federated model at least matches BG/NBD + Gamma-Gamma on top-decile value
capture.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from contract_utility import CONTRACTS, PARTNERS, onboard, set_policy  # noqa: E402

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan  # noqa: E402
from fedcrm.data.prepare import (as_of_date, label_field, prepare, prepared_frame, task_activity, task_rows,  # noqa: E402
                                  test_mask)
from fedcrm.data.pseudonymise import PID  # noqa: E402
from fedcrm.data.secret import load_secret  # noqa: E402
from fedcrm.ml import survival  # noqa: E402
from fedcrm.ml.value import ValueScale, predict_log_value, value_metrics  # noqa: E402
from fedcrm.ops.launcher import FLWR_ENV  # noqa: E402
from fedcrm.rundir import RunDir  # noqa: E402
from fedcrm.sandbox.public_data import BENCHMARK_POLICY, RETAIL_CSV  # noqa: E402
from fedcrm.sandbox.utility import simulate_fresh  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASK, TIME_TASK, MEAN_TASK = "clv", "time-to-churn", "clv-mean"
ROUNDS = 10
METRICS = ("spearman", "value_capture_top_decile", "r2_log", "mae_log", "rmse_log")
TIME_METRICS = ("c_index", "integrated_brier", "left_observed", "left_predicted")


def deal(folder: Path, seed: int) -> list[Path]:
    """The purchase log's customers dealt at random (by seed) to the shops; lines without a
    customer go to the first shop (its cleaning quarantines them)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = pd.read_csv(RETAIL_CSV, dtype=str, keep_default_na=False)
    customers = log["CustomerID"].replace("", np.nan).dropna().unique()
    owner = dict(zip(customers, np.random.default_rng(seed).permutation(len(customers)) % PARTNERS))
    shop = log["CustomerID"].map(owner).fillna(0).astype(int).to_numpy()
    paths = [folder / f"p{i + 1}.csv" for i in range(PARTNERS)]
    for i, path in enumerate(paths):
        log[shop == i].to_csv(path, index=False)
    return paths


def holdout_ids(cfg: PartnerConfig, data_y: np.ndarray, task: str = TASK) -> np.ndarray:
    """The shop's own customer ids of its hold-out rows, in the rows' order (the pipeline's
    split, by pseudonym; restored through the shop's local lookup, as scoring does)."""
    general, _, _, lookup = prepared_frame(cfg, task, label_field(cfg, task), load_secret(cfg.secret_file), tags=False)
    general = general.loc[task_rows(cfg, task, general)]  # the task's population, as prepare() takes it
    test = test_mask(general[PID], cfg.privacy.holdout_fraction)
    ids = pd.Series(lookup["customer_id"].to_numpy(), index=lookup[PID].to_numpy())
    y = general[label_field(cfg, task)].to_numpy(dtype=np.float32)[test]
    assert np.array_equal(y, data_y), "the hold-out rows are not those prepare() split"
    return general[PID][test].map(ids).astype(str).to_numpy()


def bg_nbd(configs: list[PartnerConfig], ids: np.ndarray) -> tuple[np.ndarray, dict]:
    """BG/NBD + Gamma-Gamma on every shop's cleaned purchases up to the task's cutoff
    (pooled): each customer's expected spend over the horizon, for `ids` (0 for one never
    seen), and the fitted parameters.

    Fitted without a penalty on customers with T > 0: a first purchase on the cutoff day
    (T = 0) makes the likelihood NaN, and every penalised fit here (0.001, 0.01; daily or
    weekly time) failed to converge. The fit drives the dropout parameter a to 0 (the
    model becomes NBD: 6 months of history do not identify dropout); that is what it is."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import summary_data_from_transaction_data

    from fedcrm.data.activity import purchases
    from fedcrm.data.prepare import load_events

    activity = task_activity(configs[0], TASK)
    cutoff, horizon_days = pd.Timestamp(activity.cutoff_for(as_of_date(configs[0]))), activity.horizon_days
    frames = []
    for cfg in configs:
        _, tx = load_events(cfg.transactions, cfg.name, cfg.cleaning, as_of_date(cfg))
        bought = purchases(tx.clean)
        frames.append(pd.DataFrame({"customer": bought["customer_id"].astype(str), "date": bought["date"],
                                    "value": bought["value"].astype(float)}))
    log = pd.concat(frames, ignore_index=True)
    log = log[(log["date"] <= cutoff) & (log["value"] > 0)]
    rfm = summary_data_from_transaction_data(log, "customer", "date", monetary_value_col="value",
                                             observation_period_end=cutoff, freq="D")
    seen = rfm[rfm["T"] > 0]
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(seen["frequency"], seen["recency"], seen["T"])
    repeat = rfm[(rfm["frequency"] > 0) & (rfm["monetary_value"] > 0)]
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])
    purchases_ahead = bgf.conditional_expected_number_of_purchases_up_to_time(
        horizon_days, rfm["frequency"], rfm["recency"], rfm["T"])
    per_purchase = ggf.conditional_expected_average_profit(rfm["frequency"], rfm["monetary_value"])
    spend = (purchases_ahead * per_purchase).clip(lower=0)
    params = {"bg_nbd": {k: round(float(v), 4) for k, v in bgf.params_.items()},
              "gamma_gamma": {k: round(float(v), 4) for k, v in ggf.params_.items()},
              "customers_fitted": int(len(seen)), "cutoff": str(cutoff.date()), "horizon_days": horizon_days}
    return pd.Series(spend, index=rfm.index).reindex(ids).fillna(0.0).to_numpy(), params


def fractional_logit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The federated model's own model and loss, fitted pooled to its optimum: weights and
    intercept minimising the cross-entropy of sigmoid(x·w + b) against y in [0, 1] (convex;
    L-BFGS to convergence)."""
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    xb = np.hstack([x, np.ones((len(x), 1))])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ w
        value = -(y * log_expit(z) + (1 - y) * log_expit(-z)).mean()
        return float(value), xb.T @ (expit(z) - y) / len(y)

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 2000}).x


def pooled(data: list, scale: ValueScale) -> dict[str, np.ndarray]:
    """Pooled references on every shop's training rows: predicted log spend of the hold-out
    rows by the federated model's own model and loss (fractional logit), least squares on
    the log spend, and LightGBM."""
    import lightgbm
    from scipy.special import expit
    from sklearn.linear_model import LinearRegression

    x = np.vstack([d.x_train for d in data])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    spend = np.concatenate([d.y_train for d in data])
    y = scale.target(spend)
    x_test = np.vstack([d.x_test for d in data])
    w = fractional_logit((x - mean) / std, scale.unit_target(spend).astype(np.float64))
    logit = expit(np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))]) @ w) * scale.top
    linear = LinearRegression().fit((x - mean) / std, y).predict((x_test - mean) / std)
    gbm = lightgbm.LGBMRegressor(verbose=-1, random_state=0).fit(x, y).predict(x_test)
    # the mean fit: the same model and loss against the capped spend over the cap; LightGBM on the capped spend
    mean_scale = scale.model_copy(update={"fit": "mean"})
    w = fractional_logit((x - mean) / std, mean_scale.unit_target(spend).astype(np.float64))
    logit_mean = mean_scale.log_value(expit(np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))]) @ w))
    capped = np.clip(spend, 0.0, scale.cap)
    gbm_mean = np.log1p(np.clip(lightgbm.LGBMRegressor(verbose=-1, random_state=0).fit(x, capped).predict(x_test),
                                0.0, scale.cap))
    return {"pooled_fractional_logit": logit, "pooled_least_squares": linear, "pooled_lightgbm": gbm,
            "pooled_fractional_logit_mean": logit_mean, "pooled_lightgbm_mean": gbm_mean}


def federated(fed: Path, work: Path, seed: int, epsilon: float | None, data: list, tag: str,
              model: str = "logistic", task: str = TASK) -> tuple[np.ndarray, dict]:
    """One real `flwr run --task TASK` on fresh ledgers: the published model's predictions
    on the hold-out rows (a value task's predicted log spend; a time-to-churn task's
    survival curves), its wall time, the largest ε it left and its own (noised) figures."""
    plan = TrainPlan(task=task, seed=seed, min_partners=PARTNERS, num_server_rounds=ROUNDS, model=model,
                     dp_enabled=epsilon is not None, dp_target_epsilon=epsilon or 1.0)
    run_dir = work / f"run-{task}-{tag}"
    t0 = time.perf_counter()
    simulate_fresh(fed, run_dir, work, plan)
    seconds = time.perf_counter() - t0
    run = RunDir(run_dir)
    net, norm = run.model(), run.normalisation()
    scale = PartnerConfig.load(FederationConfig.load(fed).members[0].config).contract_model.task(task).value_scale()
    if scale is not None:
        predicted = np.concatenate([predict_log_value(net, norm.apply(d.x_test), scale) for d in data])
    else:
        predicted = np.concatenate([survival.survival_curves(net, norm.apply(d.x_test)) for d in data])
    summary = json.loads((run_dir / "summary.json").read_text())
    eps = [max(points, key=lambda p: p["round"])["epsilon"] for points in
           json.loads((run_dir / "epsilon.json").read_text())["partners"].values()] if epsilon else []
    reported = {k: summary["final_global"].get(k.replace("_", "-"))
                for k in (METRICS if scale is not None else TIME_METRICS)}
    return predicted, {"seconds": round(seconds, 1), "rounds": ROUNDS, "epsilon_max": max(eps) if eps else None,
                       "reported": reported}


def pooled_hazard(x: np.ndarray, y: np.ndarray, periods: int) -> torch.nn.Module:
    """The federated model's own model and loss (`HazardModel` over a logistic network,
    `hazard_nll`) fitted pooled to its optimum: full-batch L-BFGS to convergence (convex
    in the weights and the period intercepts)."""
    from fedcrm.ml.models import build_model

    model = build_model("logistic", x.shape[1], seed=0, periods=periods)
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = survival.hazard_nll(model(xt), yt).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def time_references(data: list, scale: survival.SurvivalScale) -> dict[str, np.ndarray]:
    """Pooled references on every shop's training rows, as survival curves of the hold-out
    rows at the period ends: the pooled hazard model, Kaplan-Meier and Cox."""
    from lifelines import CoxPHFitter, KaplanMeierFitter

    x = np.vstack([d.x_train for d in data])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    y = np.concatenate([d.y_train for d in data])
    x_test = (np.vstack([d.x_test for d in data]) - mean) / std
    periods = np.arange(1, scale.periods + 1)
    hazard = survival.survival_curves(pooled_hazard((x - mean) / std, y, scale.periods), x_test)
    duration, event = np.minimum(y, scale.periods), (y <= scale.periods).astype(int)
    km = KaplanMeierFitter().fit(duration, event)
    km_curve = km.survival_function_at_times(periods).to_numpy()
    frame = pd.DataFrame((x - mean) / std, columns=[f"x{i}" for i in range(x.shape[1])])
    cox = CoxPHFitter(penalizer=1e-4).fit(frame.assign(duration=duration, event=event), "duration", "event")
    cox_curves = cox.predict_survival_function(pd.DataFrame(x_test, columns=frame.columns), times=periods).to_numpy().T
    return {"pooled_hazard": hazard, "kaplan_meier": np.tile(km_curve, (len(x_test), 1)), "cox": cox_curves}


def measure_time(seed: int, work: Path, fed: Path, configs: list[PartnerConfig]) -> dict:
    """Time to churn on the seed's shops: the pooled references and three federated runs."""
    data = [prepare(c, TIME_TASK, c.privacy.holdout_fraction) for c in configs]
    scale = configs[0].contract_model.task(TIME_TASK).survival_scale()
    assert scale is not None
    label = np.concatenate([d.y_test for d in data])
    out: dict = {"rows_holdout": len(label), "holdout_left_in_horizon": round(float((label <= scale.periods).mean()), 3)}

    def score(curves: np.ndarray) -> dict:
        m = survival.survival_metrics(label, curves, scale).model_dump()
        return {k: round(float(m[k]), 4) for k in TIME_METRICS}

    for name, curves in time_references(data, scale).items():
        out[name] = score(curves)
    set_policy(fed, BENCHMARK_POLICY)
    curves, info = federated(fed, work, seed, None, data, "nodp", task=TIME_TASK)
    out["federated_no_dp"] = {**score(curves), **info}
    set_policy(fed, {})
    curves, info = federated(fed, work, seed, 3.0, data, "eps3", task=TIME_TASK)
    out["federated_eps3"] = {**score(curves), **info}
    curves, info = federated(fed, work, seed, 3.0, data, "mlp-eps3", model="mlp", task=TIME_TASK)
    out["federated_mlp_eps3"] = {**score(curves), **info}
    return out


def measure(seed: int, tasks: list[str]) -> dict:
    work = ROOT / ".work" / "value_and_time" / f"seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    paths = deal(work / "data", seed)
    fed = onboard("retail", CONTRACTS / "retail.toml", paths, None, work, seed)
    configs = [PartnerConfig.load(m.config) for m in FederationConfig.load(fed).members]
    row: dict = {"seed": seed}
    if TIME_TASK in tasks:
        row["time_to_churn"] = measure_time(seed, work, fed, configs)
    if TASK in tasks:
        row.update(measure_value(seed, work, fed, configs))
    print(json.dumps(row), flush=True)
    return row


def measure_value(seed: int, work: Path, fed: Path, configs: list[PartnerConfig]) -> dict:
    """Customer value on the seed's shops: the pooled references, BG/NBD and three federated runs."""
    data = [prepare(c, TASK, c.privacy.holdout_fraction) for c in configs]
    task = configs[0].contract_model.task(TASK)
    scale = task.value_scale()
    assert scale is not None
    spend = np.concatenate([d.y_test for d in data])
    ids = np.concatenate([holdout_ids(c, d.y_test) for c, d in zip(configs, data)])
    row: dict = {"rows_train": sum(len(d.y_train) for d in data), "rows_holdout": len(spend),
                 "holdout_zero_spend": round(float((spend == 0).mean()), 3)}

    def score(predicted_log: np.ndarray) -> dict:
        m = value_metrics(spend, predicted_log, scale).model_dump()
        return {k: round(float(m[k]), 4) for k in METRICS}

    for name, predicted in pooled(data, scale).items():
        row[name] = score(predicted)
    expected, row["bg_nbd_fit"] = bg_nbd(configs, ids)
    row["bg_nbd_gamma_gamma"] = score(scale.target(expected))
    set_policy(fed, BENCHMARK_POLICY)  # no-DP runs are allowed by this policy only
    predicted, info = federated(fed, work, seed, None, data, "nodp")
    row["federated_no_dp"] = {**score(predicted), **info}
    set_policy(fed, {})  # the shops' default policy: statistics noised and charged, as a consortium runs
    predicted, info = federated(fed, work, seed, 3.0, data, "eps3")
    row["federated_eps3"] = {**score(predicted), **info}
    predicted, info = federated(fed, work, seed, 3.0, data, "mlp-eps3", model="mlp")
    row["federated_mlp_eps3"] = {**score(predicted), **info}
    predicted, info = federated(fed, work, seed, 3.0, data, "eps3", task=MEAN_TASK)
    row["federated_eps3_mean"] = {**score(predicted), **info}
    predicted, info = federated(fed, work, seed, 3.0, data, "mlp-eps3", model="mlp", task=MEAN_TASK)
    row["federated_mlp_eps3_mean"] = {**score(predicted), **info}
    return row


VARIANTS = ("pooled_fractional_logit", "pooled_least_squares", "pooled_lightgbm", "bg_nbd_gamma_gamma",
            "federated_no_dp", "federated_eps3", "federated_mlp_eps3", "pooled_fractional_logit_mean",
            "pooled_lightgbm_mean", "federated_eps3_mean", "federated_mlp_eps3_mean")
FEDERATED = ("federated_no_dp", "federated_eps3", "federated_mlp_eps3", "federated_eps3_mean",
             "federated_mlp_eps3_mean")


TIME_VARIANTS = ("pooled_hazard", "kaplan_meier", "cox", "federated_no_dp", "federated_eps3", "federated_mlp_eps3")


def summary(rows: list[dict]) -> dict:
    """Means over seeds; the targets against the pooled fit of the federated model's own
    model and loss (the pooled fractional logit; the pooled hazard model)."""
    out: dict = {"seeds": len(rows), "targets": {}}
    timed = [r["time_to_churn"] for r in rows if "time_to_churn" in r]
    if timed:
        tmean = {v: {k: round(statistics.fmean(t[v][k] for t in timed), 4) for k in TIME_METRICS}
                 for v in TIME_VARIANTS}
        ref = tmean["pooled_hazard"]["c_index"]
        out["time_mean"] = tmean
        out["targets"].update({
            "no_dp_c_index_within_2pct_of_pooled": tmean["federated_no_dp"]["c_index"] >= 0.98 * ref,
            "eps3_c_index_within_5pct_of_pooled": tmean["federated_eps3"]["c_index"] >= 0.95 * ref})
    rows = [r for r in rows if "federated_no_dp" in r]
    if not rows:
        return out
    mean = {v: {k: round(statistics.fmean(r[v][k] for r in rows), 4) for k in METRICS} for v in VARIANTS}
    ref = mean["pooled_fractional_logit"]["spearman"]
    capture_bg = mean["bg_nbd_gamma_gamma"]["value_capture_top_decile"]
    best = max(mean[v]["value_capture_top_decile"] for v in FEDERATED)
    out["mean"] = mean
    out["targets"].update({
        "no_dp_spearman_within_2pct_of_pooled": mean["federated_no_dp"]["spearman"] >= 0.98 * ref,
        "eps3_spearman_within_5pct_of_pooled": mean["federated_eps3"]["spearman"] >= 0.95 * ref,
        "federated_capture_at_least_bg_nbd": best >= capture_bg})
    return out


def time_markdown(rows: list[dict], summ: dict) -> list[str]:
    timed = [r for r in rows if "time_to_churn" in r]
    if not timed:
        return []
    first = timed[0]["time_to_churn"]
    lines = [f"UCI Online Retail, 3 shops, `time-to-churn` task (the month of six after the cutoff in which a "
             f"customer reaches 90 days without a purchase, or none), {len(timed)} seed(s); mean over seeds, exact "
             f"figures on the shops' hold-outs ({first['rows_holdout']} customers in seed {timed[0]['seed']}, "
             f"{100 * first['holdout_left_in_horizon']:.0f} % of them left within the six months):", "",
             "| model | c-index | integrated Brier | left (observed) | left (predicted) |", "|---|---|---|---|---|"]
    for v in TIME_VARIANTS:
        m = summ["time_mean"][v]
        lines.append(f"| {v.replace('_', ' ')} | {m['c_index']:.3f} | {m['integrated_brier']:.4f} | "
                     f"{m['left_observed']:.3f} | {m['left_predicted']:.3f} |")
    lines += ["", "Per seed (federated runs: wall time, largest ε, and the c-index and integrated Brier the run "
              "itself reported from the noised histograms):", "",
              "| seed | variant | c-index | integrated Brier | seconds | ε max | reported c-index | reported Brier |",
              "|---|---|---|---|---|---|---|---|"]
    cell = (lambda x: f"{x:.3f}" if isinstance(x, float) else "-")
    for r in timed:
        for v in TIME_VARIANTS[3:]:  # the federated runs
            f = r["time_to_churn"][v]
            eps = f"{f['epsilon_max']:.2f}" if f["epsilon_max"] is not None else "-"
            lines.append(f"| {r['seed']} | {v.replace('_', ' ')} | {f['c_index']:.3f} | {f['integrated_brier']:.4f} | "
                         f"{f['seconds']:.0f} | {eps} | {cell(f['reported']['c_index'])} | "
                         f"{cell(f['reported']['integrated_brier'])} |")
    return lines + [""]


def markdown(rows: list[dict], summ: dict, command: str) -> str:
    head = [f"Command: `{command}`", ""]
    targets = ["Targets: " + ", ".join(f"{k}: {'met' if ok else 'missed'}" for k, ok in summ["targets"].items()), ""]
    rows_v = [r for r in rows if "federated_no_dp" in r]
    if not rows_v:
        return "\n".join(head + time_markdown(rows, summ) + targets)
    lines = [f"UCI Online Retail, 3 shops, `clv` task (spend in the 180 days after the "
             f"cutoff, capped at 10,000), {len(rows_v)} seed(s); mean over seeds, exact figures on the shops' "
             f"hold-outs ({rows_v[0]['rows_holdout']} customers in seed {rows_v[0]['seed']}):", "",
             "| model | Spearman | top-decile value capture | R² (log) | MAE (log) | RMSE (log) |", "|---|---|---|---|---|---|"]
    for v in VARIANTS:
        m = summ["mean"][v]
        lines.append(f"| {v.replace('_', ' ')} | {m['spearman']:.3f} | {m['value_capture_top_decile']:.3f} | "
                     f"{m['r2_log']:.3f} | {m['mae_log']:.3f} | {m['rmse_log']:.3f} |")
    lines += ["", "Per seed (federated runs: wall time of the simulated run, largest ε, and Spearman / value capture "
              "as the run itself reported them from the noised histograms):", "",
              "| seed | variant | Spearman | capture | seconds | ε max | reported Spearman | reported capture |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows_v:
        for v in FEDERATED:
            f = r[v]
            eps = f"{f['epsilon_max']:.2f}" if f["epsilon_max"] is not None else "-"
            rep = f["reported"]
            cell = (lambda x: f"{x:.3f}" if isinstance(x, float) else "-")
            lines.append(f"| {r['seed']} | {v.replace('_', ' ')} | {f['spearman']:.3f} | "
                         f"{f['value_capture_top_decile']:.3f} | {f['seconds']:.0f} | {eps} | "
                         f"{cell(rep['spearman'])} | {cell(rep['value_capture_top_decile'])} |")
    return "\n".join(head + time_markdown(rows, summ) + lines + [""] + targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="*", default=[TIME_TASK, TASK], choices=[TIME_TASK, TASK])
    parser.add_argument("--out", type=Path, default=RESULTS / "value_and_time")
    parser.add_argument("--markdown-only", action="store_true", help="write the Markdown again from the JSON")
    args = parser.parse_args()
    if args.markdown_only:
        done = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(done["rows"], done["summary"], done["command"]))
        return
    try:
        import lifelines  # noqa: F401
        import lifetimes  # noqa: F401
    except ImportError:
        sys.exit("lifetimes or lifelines is not installed: .venv/bin/pip install -e '.[bench]'")
    if not RETAIL_CSV.is_file():
        print(f"skip: UCI Online Retail not found at {RETAIL_CSV} (../shared/datasets)")
        return
    os.environ.update(FLWR_ENV)
    command = "benchmarks/value_and_time.py " + " ".join(sys.argv[1:])
    rows = [measure(seed, args.tasks) for seed in args.seeds]
    summ = summary(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "summary": summ}, indent=2))
    args.out.with_suffix(".md").write_text(markdown(rows, summ, command))
    print(markdown(rows, summ, command))


if __name__ == "__main__":
    main()
