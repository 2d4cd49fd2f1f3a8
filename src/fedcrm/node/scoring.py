"""Scoring a partner's current customers with the global model, on the partner's node.

Every customer in today's export is scored — labelled or not; the label is the future — with
features taken at the export date (training used the cutoff before the label horizon).
Scores are joined back to the partner's own customer ids through its local pseudonym
lookup, so the output carries real ids and never leaves the node. A customer whose every
row was quarantined is listed as not scored, with the reason.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fedcrm.data.clean import REASON
from fedcrm.config import PartnerConfig
from fedcrm.config.tiers import TierRule
from fedcrm.errors import ConfigError
from fedcrm.data.ingest import ROW
from fedcrm.data.prepare import as_of_date, at_rows, prepared_frame
from fedcrm.data.pseudonymise import PID
from fedcrm.data.secret import load_secret
from fedcrm.rundir import MODEL_WEIGHTS, RunDir
from fedcrm.ml.training import predict
from fedcrm.ml import survival
from fedcrm.ml.value import predict_log_value
from fedcrm.protocol import RunId
from fedcrm.privatefiles import private_dir, private_open


class ScoreSummary(BaseModel):
    partner: str
    task: str
    run_id: RunId
    customers: int
    scored: int
    not_scored: int
    rows_without_id: int
    by_tier: dict[str, int]
    path: str


def model_fingerprint(run: RunDir) -> str:
    """The first 16 hex digits of the SHA-256 of the published weights (model.pt)."""
    return hashlib.sha256((run.path / MODEL_WEIGHTS).read_bytes()).hexdigest()[:16]


def deciles(scores: np.ndarray) -> np.ndarray:
    """1 for the top 10 % of scores … 10 for the bottom 10 % (ties broken by order)."""
    rank = pd.Series(-scores).rank(method="first").to_numpy()
    return np.minimum((np.ceil(rank / len(scores) * 10)).astype(int), 10)


def churn_tiers(scores: np.ndarray, rule: TierRule) -> np.ndarray:
    if rule.by == "deciles":
        d = deciles(scores)
        return np.where(d <= rule.high_deciles, "high", np.where(d <= rule.medium_deciles, "medium", "low"))
    return np.where(scores >= rule.high, "high", np.where(scores >= rule.medium, "medium", "low"))


def score_partner(cfg: PartnerConfig, run: RunDir, rule: TierRule, out: Path | None = None) -> ScoreSummary:
    plan = run.plan
    as_of = as_of_date(cfg)
    now = cfg.model_copy(update={"activity": cfg.activity.model_copy(update={"cutoff": as_of})})
    # no label needed to be scored; the features as the model's layout (model.json) builds them
    pseudo, raw, cleaned, lookup = prepared_frame(now, None, None, load_secret(cfg.secret_file), tags=False)
    layout = run.layout()
    x = layout.matrix(pseudo, as_of)
    norm = run.normalisation()
    task = cfg.contract_model.task(plan.task)
    scale, periods = task.value_scale(), task.survival_scale()
    features = norm.apply(x) if norm else x
    curves = None
    if scale is not None:  # a value task: the model predicts the capped log spend of the horizon
        scores = predict_log_value(run.model(), features, scale)
    elif periods is not None:  # time to churn: a survival curve; the score is leaving within the horizon
        curves = survival.survival_curves(run.model(), features)
        scores = survival.leave_risk(curves)
    else:
        scores = predict(run.model(), features).astype(np.float64)

    ids = pd.Series(lookup["customer_id"].to_numpy(), index=lookup[PID].to_numpy())
    scored = pd.DataFrame({"customer_id": pseudo[PID].map(ids).astype(str).to_numpy(), "score": scores})
    churn_like = task.scores == "risk-tiers"  # the contract says how
    if curves is not None and periods is not None:
        for months, k in periods.month_periods().items():  # "who leaves within 3 months?"
            scored[f"p_leave_{months}m"] = 1.0 - curves[:, k - 1]
        scored["expected_retention_months"] = (survival.expected_retention(curves) * periods.period_days
                                               / survival.DAYS_PER_MONTH)  # within the horizon
    if scale is not None:
        scored["predicted_value"] = scale.spend(scores)  # spend in the next horizon_days, in the export's units
        scored["value_decile"] = pd.array(deciles(scores), dtype="Int64")
        # the marketing tags' value tier is past spend (RFM); this one is the model's view of the horizon ahead
        scored["predicted_value_tier"] = pd.cut(scored["value_decile"].astype(float), [0, 2, 5, 10],
                                                labels=["top", "middle", "low"]).astype(str)
        tier_col = "value_decile"
    elif churn_like:
        scored["churn_risk"] = churn_tiers(scores, rule)
        tier_col = "churn_risk"
    else:
        scored["propensity_decile"] = pd.array(deciles(scores), dtype="Int64")  # stays 1..10 beside unscored rows
        tier_col = "propensity_decile"
    scored["status"] = "scored"

    # customers none of whose rows survived cleaning: listed, with the first reason
    raw_ids = raw["customer_id"].astype("string").str.strip()
    has_id = raw_ids.notna() & (raw_ids != "")
    q = cleaned.quarantine.assign(
        customer_id=at_rows(raw.assign(customer_id=raw_ids), cleaned.quarantine[ROW].to_numpy())["customer_id"].to_numpy())
    q = q[q["customer_id"].notna() & (q["customer_id"] != "") & ~q["customer_id"].isin(set(scored["customer_id"]))]
    missing = q.drop_duplicates("customer_id")[["customer_id", REASON]]
    unscored = pd.DataFrame({"customer_id": missing["customer_id"].astype(str).to_numpy(), "score": np.nan,
                             "status": ("not scored: " + missing[REASON].astype(str)).to_numpy()})
    table = pd.concat([scored, unscored], ignore_index=True)
    # which model scored them: a score file read months later still says so
    table["run_id"], table["model_sha256"] = str(run.run_id), model_fingerprint(run)
    table["scored_as_of"] = pd.Timestamp(as_of).date().isoformat()

    path = out or cfg.work_dir / "scores" / f"{plan.task}-run-{run.run_id}.parquet"
    if path.suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{path}: write scores to a .parquet or .csv file")
    # real customer ids next to their scores: 0600 from creation; the node's own scores
    # folder is 0700, a folder the partner named (`--out`) keeps its mode
    if out is None:
        private_dir(cfg.work_dir)
    private_dir(path.parent, tighten=out is None)
    with private_open(path, "wb") as fh:
        if path.suffix == ".csv":
            table.to_csv(fh, index=False)
        else:
            table.to_parquet(fh, index=False)
    return ScoreSummary(
        partner=cfg.name, task=plan.task, run_id=run.run_id, customers=len(table), scored=len(scored),
        not_scored=len(unscored), rows_without_id=int((~has_id).sum()),
        by_tier={str(k): int(v) for k, v in scored[tier_col].value_counts().sort_index().items()}, path=str(path))
