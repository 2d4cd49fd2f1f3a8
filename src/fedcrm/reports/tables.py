"""Turn a run directory into what people read: the per-round table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel
from rich.table import Table

from fedcrm.rundir import RunDir

if TYPE_CHECKING:  # the CLI prints rounds without loading torch or Opacus
    from fedcrm.privacy.accounting import RunPlan
    from fedcrm.privacy.history import SpendHistory
    from fedcrm.privacy.membership import AuditResult


class RoundRow(BaseModel):
    round: int
    auc: float | None
    log_loss: float | None
    accuracy: float | None
    epsilon: dict[str, float]
    spearman: float | None = None  # a value task's: rank correlation, value captured by the top decile, R² (log)
    value_capture: float | None = None
    r2_log: float | None = None
    c_index: float | None = None  # a time-to-churn task's: concordance, integrated Brier, share left
    integrated_brier: float | None = None
    left_observed: float | None = None

    @property
    def value(self) -> bool:
        return self.spearman is not None

    @property
    def survival(self) -> bool:
        return self.c_index is not None

    @property
    def max_epsilon(self) -> float | None:
        return max(self.epsilon.values()) if self.epsilon else None


def read_rounds(run_dir: Path) -> list[RoundRow]:
    """Rounds whose federated evaluation has landed in the run directory (none yet: empty),
    and the trained rounds the run declared no evaluation for (metrics '-', ε as stated)."""
    run = RunDir.open(run_dir)
    rows = []
    evaluated = set(run.plan.evaluation_rounds()) if run else set()
    for r in run.rounds() if run else []:
        g = r.evaluated()
        if g is None or (g.auc is None and g.log_loss is None and g.spearman is None and g.c_index is None):
            if r.round not in evaluated and r.train:
                rows.append(RoundRow(round=r.round, auc=None, log_loss=None, accuracy=None, epsilon=r.epsilon()))
            continue
        rows.append(RoundRow(round=r.round, auc=g.auc, log_loss=g.log_loss, accuracy=g.accuracy, epsilon=r.epsilon(),
                             spearman=g.spearman, value_capture=g.value_capture_top_decile, r2_log=g.r2_log,
                             c_index=g.c_index, integrated_brier=g.integrated_brier, left_observed=g.left_observed))
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def round_table(rows: list[RoundRow], partners: list[str]) -> Table:
    table = Table(title="fedcrm: per-round global metrics and cumulative ε per partner")
    value = any(row.value for row in rows)  # a value or time-to-churn task: its own three columns
    survival = any(row.survival for row in rows)
    for col in (("round", "Spearman", "value top 10 %", "R² log", "max ε") if value else
                ("round", "concordance", "integrated Brier", "left in horizon", "max ε") if survival else
                ("round", "global AUC", "log loss", "accuracy", "max ε")):
        table.add_column(col, justify="right")
    for name in partners:
        table.add_column(f"ε {name}", justify="right")
    for row in rows:
        figures = ((row.spearman, row.value_capture, row.r2_log) if value else
                   (row.c_index, row.integrated_brier, row.left_observed) if survival else
                   (row.auc, row.log_loss, row.accuracy))
        table.add_row(str(row.round), *map(_fmt, figures), _fmt(row.max_epsilon, 2),
                      *[_fmt(row.epsilon.get(n), 2) for n in partners])
    return table


def format_row(row: RoundRow, partners: list[str]) -> str:
    eps = "  ".join(f"{n}={_fmt(row.epsilon.get(n), 2)}" for n in partners)
    if row.survival:
        return (f"round {row.round:>2}  concordance {_fmt(row.c_index)}  integrated Brier {_fmt(row.integrated_brier)}  "
                f"left {_fmt(row.left_observed)}  max ε {_fmt(row.max_epsilon, 2)}  |  ε {eps}")
    if row.value:
        return (f"round {row.round:>2}  Spearman {_fmt(row.spearman)}  value top 10 % {_fmt(row.value_capture)}  "
                f"R² log {_fmt(row.r2_log)}  max ε {_fmt(row.max_epsilon, 2)}  |  ε {eps}")
    return (f"round {row.round:>2}  AUC {_fmt(row.auc)}  log-loss {_fmt(row.log_loss)}  "
            f"acc {_fmt(row.accuracy)}  max ε {_fmt(row.max_epsilon, 2)}  |  ε {eps}")


def new_failures(run_dir: Path, seen: set[tuple[int, str, str]]) -> list[str]:
    """Refusals and failures recorded since the last call (`seen` keeps count), one line
    each with the node's reason: a coordinator learns at once why a partner is missing."""
    run = RunDir.open(run_dir)
    out = []
    for r in run.rounds() if run else []:
        for f in r.failures:
            key = (r.round, f.partner or f"node {f.node_id}", f.kind)
            if key not in seen:
                seen.add(key)
                out.append(f"round {r.round:>2}  {key[1]} refused {f.kind}: {f.reason}")
    return out


def next_commands(run_dir: Path, federation: Path | None) -> list[str]:
    """What a coordinator does with a finished run, as commands to copy."""
    fed = f" --federation {federation}" if federation else " --config partner.toml"
    return [f"fedcrm report run {run_dir}                      # metrics, ROC, lift, calibration",
            f"fedcrm privacy audit {run_dir}{fed} --out {run_dir}/audits   # membership audit",
            f"fedcrm report compliance {run_dir} --pdf         # what compliance signs",
            f"fedcrm score --model {run_dir} --partner-config partner.toml   # on each partner's node"]


def baseline_table(run_dir: Path) -> Table | None:
    """The run's local-only baselines beside the federation's model, if it asked for them."""
    from fedcrm.reports.evaluation_tables import local_baselines

    rows = local_baselines(RunDir(run_dir).rounds())
    if not rows:
        return None
    table = Table(title="federated against local-only, on each partner's own hold-out")
    for col in ("partner", "AUC federated", "AUC local-only", "gain", "ε after"):
        table.add_column(col, justify="left" if col == "partner" else "right")
    for b in rows:
        if b.refused:
            table.add_row(b.partner, _fmt(b.federated_auc), f"refused: {b.refused}", "", "")
        else:
            table.add_row(b.partner, _fmt(b.federated_auc), _fmt(b.local_auc),
                          "–" if b.gain is None else f"{b.gain:+.3f}", _fmt(b.epsilon, 2))
    return table


def plan_table(plans: list[RunPlan]) -> Table:
    table = Table(title="fedcrm privacy plan: noise per partner and cumulative ε after each round")
    for col in ("partner", "rows", "statistics σ", "q", "steps/round", "σ", "ε before", "ε per round",
                "evaluations σ", "hold-out ε", "ε after", "run adds", "cap", "remaining", "δ"):
        table.add_column(col, justify="left" if col in ("partner", "ε per round") else "right")
    for p in plans:
        rounds = " ".join(f"{r.epsilon:.2f}" + ("" if r.within_cap else "!") for r in p.projections)
        if p.epsilon_after_baseline is not None:  # the local-only baseline, after the last round
            rounds += f" | baseline {p.epsilon_after_baseline:.2f}" + ("" if p.baseline_within_cap else "!")
        table.add_row(p.partner, str(p.rows), f"{p.statistics_noise:g}" if p.statistics_noise else "–",
                      f"{p.sample_rate:.4f}", str(p.steps_per_round),
                      f"{p.noise_multiplier:.3f}", _fmt(p.spent_before, 2), rounds,
                      f"{p.evaluations} × {p.evaluation_noise:.2f}" if p.evaluations else "–",
                      _fmt(p.epsilon_holdout_after, 2), _fmt(p.epsilon_after, 2),
                      _fmt(p.epsilon_after - p.spent_before, 2), f"{p.epsilon_cap:g}",
                      _fmt(max(p.epsilon_cap - p.epsilon_after, 0.0), 2), f"{p.delta:g}")
    table.caption = (f"{plans[0].accountant.upper()} accountant; '!' marks a round past the partner's cap; "
                     "baseline: the partner's ε after the run's local-only baseline, if it asks for one; "
                     "statistics σ: the noised column sums the run pays for before round 1 (–: none new, "
                     "e.g. a kept release sent again at no cost); evaluations σ: noise (in counts) on each "
                     "evaluation's histograms, which read only the hold-out customers (hold-out ε: theirs after "
                     "the run); ε per round and after: the partner's, the larger of its training and hold-out side") if plans else ""
    return table


def audit_table(results: list[AuditResult]) -> Table:
    table = Table(title="fedcrm privacy audit: loss-threshold membership inference on each partner's rows")
    for col in ("partner", "run", "rows each", "attack AUC", "null AUC 95%", "advantage", "null adv. 95%",
                "ε", "DP bound on advantage", "verdict"):
        table.add_column(col, justify="left" if col in ("partner", "verdict") else "right")
    for r in results:
        colour = {"pass": "green", "review": "yellow", "fail": "red"}[r.verdict]
        table.add_row(r.partner, str(r.run_id), str(r.members), _fmt(r.attack.auc),
                      f"{r.null_auc_band[0]:.3f}–{r.null_auc_band[1]:.3f}", _fmt(r.attack.advantage),
                      f"≤ {r.null_advantage_band[1]:.3f}", _fmt(r.epsilon, 2),
                      _fmt(r.advantage_bound) if r.advantage_bound is not None else "none (no DP)",
                      f"[{colour}]{r.verdict}[/{colour}]")
    return table


def history_table(histories: list[SpendHistory]) -> Table:
    """Each partner's runs in ledger order: what each spent, by kind, against the cap."""
    table = Table(title="fedcrm privacy history: each partner's ε over all runs, from its ledger")
    for col in ("partner", "run", "first charge", "last charge", "training", "evaluations", "statistics",
                "ε before", "ε after", "rise", "cap"):
        table.add_column(col, justify="left" if col in ("partner", "run", "first charge", "last charge") else "right")
    for h in histories:
        if not h.runs:
            table.add_row(h.partner, "no releases yet", *[""] * 9)
        for i, run in enumerate(h.runs):
            last = i == len(h.runs) - 1
            table.add_row(h.partner if i == 0 else "", run.run_id, run.first, run.last,
                          str(run.releases.get("train", 0)) + (" + baseline" if run.releases.get("baseline") else ""),
                          *(str(run.releases.get(k, 0)) for k in ("evaluate", "statistics")),
                          _fmt(run.epsilon_before), _fmt(run.epsilon_after), _fmt(run.rise),
                          f"{h.epsilon_cap:g}" if last and h.epsilon_cap is not None else "",
                          end_section=last)
    return table
