"""The run report's evaluation tables, from what the coordinator already holds: the noised
score histograms of every partner's held-out customers (no new release) and the published
model's weights.

- a decile lift table (customers ranked by score, in tenths of the pooled hold-out);
- the tier table at the scoring thresholds `fedcrm score` uses (a confusion matrix per tier);
- per-partner calibration (each partner's base rate against its mean predicted score);
- what the model leans on, by feature name (logistic weights, tree split counts, or the
  first layer's weight norms for an MLP).

Histogram counts are DP-noised: they are clipped at zero, so small cells are approximate.
Within a histogram bin the scores are unknown, so a decile boundary falls on a bin edge.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel

from fedcrm.config.tiers import TierRule
from fedcrm.protocol import EvaluateReply
from fedcrm.rundir import RoundRecord, ScoreHistogram


class DecileRow(BaseModel):
    decile: int
    customers: float
    positives: float
    rate: float
    lift: float
    capture: float  # cumulative share of all positives reached by this decile


class TierRow(BaseModel):
    tier: str
    min_score: float
    customers: float
    positives: float
    negatives: float
    precision: float  # positives / customers in the tier
    recall: float  # share of all positives in this tier


class PartnerCalibration(BaseModel):
    partner: str
    customers: float
    base_rate: float
    mean_score: float
    gap: float  # mean predicted minus observed


class LocalBaseline(BaseModel):
    """One partner's hold-out metrics of the federation's last model beside a model it
    trained on its own rows alone (`TrainPlan.local_baseline`), or why it has none."""

    partner: str
    federated_auc: float | None = None
    local_auc: float | None = None
    federated_pr_auc: float | None = None
    local_pr_auc: float | None = None
    epsilon: float | None = None  # the partner's ε after the baseline, as its node stated it
    refused: str | None = None

    @property
    def gain(self) -> float | None:
        """What the federation adds on this partner's own customers (AUC points)."""
        if self.federated_auc is None or self.local_auc is None:
            return None
        return self.federated_auc - self.local_auc


def local_baselines(rounds: list[RoundRecord]) -> list[LocalBaseline]:
    """The last round's local-only baselines, every partner that answered or refused one."""
    if not rounds:
        return []
    last = max(rounds, key=lambda r: r.round)
    auc, pr_auc, eps = (EvaluateReply.key(f) for f in ("auc", "pr_auc", "epsilon"))
    out = {name: LocalBaseline(partner=name, federated_auc=p.evaluate.get(auc), local_auc=p.baseline.get(auc),
                               federated_pr_auc=p.evaluate.get(pr_auc), local_pr_auc=p.baseline.get(pr_auc),
                               epsilon=p.baseline.get(eps))
           for name, p in last.partners.items() if p.baseline}
    for f in last.failures:
        if f.kind == "baseline":
            name = f.partner or f"node {f.node_id}"
            evaluated = last.partners.get(f.partner)
            out[name] = LocalBaseline(partner=name, refused=f.reason,
                                      federated_auc=evaluated.evaluate.get(auc) if evaluated else None)
    return [out[n] for n in sorted(out)]


class Importance(BaseModel):
    feature: str
    value: float


def _counts(h: ScoreHistogram) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(np.asarray(h.pos, float), 0, None), np.clip(np.asarray(h.neg, float), 0, None)


def _centres(bins: int) -> np.ndarray:
    return (np.arange(bins) + 0.5) / bins


def decile_table(pos: np.ndarray, neg: np.ndarray) -> list[DecileRow]:
    """Bins from the top score down, each given to the decile its cumulative midpoint falls in."""
    rows, p = (pos + neg)[::-1], pos[::-1]
    total, positives = rows.sum(), p.sum()
    if total <= 0 or positives <= 0:
        return []
    mid = (np.cumsum(rows) - rows / 2) / total
    decile = np.minimum((mid * 10).astype(int), 9)
    n = np.bincount(decile, weights=rows, minlength=10)
    k = np.bincount(decile, weights=p, minlength=10)
    base = positives / total
    out, reached = [], 0.0
    for d in range(10):
        if n[d] <= 0:
            continue
        reached += k[d]
        out.append(DecileRow(decile=d + 1, customers=n[d], positives=k[d], rate=k[d] / n[d],
                             lift=(k[d] / n[d]) / base, capture=reached / positives))
    return out


def tier_table(pos: np.ndarray, neg: np.ndarray, rule: TierRule) -> list[TierRow]:
    """High, medium and low risk at the score thresholds of `rule`, against the outcome."""
    centre = _centres(len(pos))
    edges = (("high", rule.high, 1.01), ("medium", rule.medium, rule.high), ("low", 0.0, rule.medium))
    total_pos = pos.sum()
    out = []
    for tier, lo, hi in edges:
        inside = (centre >= lo) & (centre < hi)
        k, m = pos[inside].sum(), neg[inside].sum()
        out.append(TierRow(tier=tier, min_score=lo, customers=k + m, positives=k, negatives=m,
                           precision=k / (k + m) if k + m > 0 else 0.0, recall=k / total_pos if total_pos > 0 else 0.0))
    return out


def partner_calibration(hists: dict[str, ScoreHistogram]) -> list[PartnerCalibration]:
    out = []
    for name, h in sorted(hists.items()):
        pos, neg = _counts(h)
        n = pos.sum() + neg.sum()
        if n <= 0:
            continue
        mean = float(((pos + neg) * _centres(len(pos))).sum() / n)
        rate = float(pos.sum() / n)
        out.append(PartnerCalibration(partner=name, customers=n, base_rate=rate, mean_score=mean, gap=mean - rate))
    return out


def importances(kind: str, state: dict[str, torch.Tensor], features: list[str], top: int = 15
                ) -> tuple[str, list[Importance]]:
    """What the model leans on, by feature name, largest first, and what the number is."""
    if kind == "logistic":
        weight = next(v for k, v in state.items() if k.endswith("weight")).reshape(-1).double().numpy()
        how, values = "weight on the standardised feature (log-odds per standard deviation)", weight
    elif kind == "gbdt":
        from fedcrm.ml.tree_ensemble import FEATURE, THRESHOLD

        used = state[FEATURE].long().numpy()[np.isfinite(state[THRESHOLD].numpy())]
        how, values = "splits on the feature, over all trees", np.bincount(used, minlength=len(features)).astype(float)
    else:
        first = next(v for k, v in state.items() if k.endswith("weight") and v.dim() == 2)
        how, values = "norm of the feature's first-layer weights", first.double().norm(dim=0).numpy()
    order = np.argsort(-np.abs(values))[:top]
    return how, [Importance(feature=features[i], value=float(values[i])) for i in order if values[i] != 0]
