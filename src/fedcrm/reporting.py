"""Turn a run directory into what people read: the per-round table."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from rich.table import Table


class RoundRow(BaseModel):
    round: int
    auc: float | None
    log_loss: float | None
    accuracy: float | None
    epsilon: dict[str, float]

    @property
    def max_epsilon(self) -> float | None:
        return max(self.epsilon.values()) if self.epsilon else None


def read_rounds(run_dir: Path) -> list[RoundRow]:
    """Rounds whose federated evaluation has landed in metrics.json (empty if none yet)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return []
    rows = []
    for r in json.loads(path.read_text())["rounds"]:
        g = r.get("global", {})
        if "auc" not in g and "log-loss" not in g:
            continue
        eps = {n: p["train"]["epsilon"] for n, p in r["partners"].items() if "epsilon" in p.get("train", {})}
        rows.append(RoundRow(round=r["round"], auc=g.get("auc"), log_loss=g.get("log-loss"),
                             accuracy=g.get("accuracy"), epsilon=eps))
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def round_table(rows: list[RoundRow], partners: list[str]) -> Table:
    table = Table(title="fedcrm: per-round global metrics and cumulative ε per partner")
    for col in ("round", "global AUC", "log-loss", "accuracy", "max ε"):
        table.add_column(col, justify="right")
    for name in partners:
        table.add_column(f"ε {name}", justify="right")
    for row in rows:
        table.add_row(str(row.round), _fmt(row.auc), _fmt(row.log_loss), _fmt(row.accuracy),
                      _fmt(row.max_epsilon, 2), *[_fmt(row.epsilon.get(n), 2) for n in partners])
    return table


def format_row(row: RoundRow, partners: list[str]) -> str:
    eps = "  ".join(f"{n}={_fmt(row.epsilon.get(n), 2)}" for n in partners)
    return (f"round {row.round:>2}  AUC {_fmt(row.auc)}  log-loss {_fmt(row.log_loss)}  "
            f"acc {_fmt(row.accuracy)}  max ε {_fmt(row.max_epsilon, 2)}  |  ε {eps}")
