"""`fedcrm score`: a partner scores its own customers with a run's model, on its node."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import console, typer_app

app = typer_app(None)  # merged into the root app: `fedcrm score`


class Tiers(StrEnum):  # fedcrm.node.scoring.TierRule.by (not imported here: it pulls in torch)
    thresholds = "thresholds"
    deciles = "deciles"


@app.command("score")
def score(
    model: Annotated[Path, typer.Option(help="the run directory holding the global model")],
    partner_config: Annotated[Path, typer.Option(help="this partner's config (run on its node)")],
    out: Annotated[Path | None, typer.Option(help=".parquet or .csv; default work/scores/<task>-run-<id>.parquet")] = None,
    tiers: Annotated[Tiers, typer.Option(help="churn tiers by 'thresholds' or 'deciles'")] = Tiers.thresholds,
    high: float = 0.5, medium: float = 0.25, high_deciles: int = 1, medium_deciles: int = 3,
) -> None:
    """Score this partner's current customers locally: churn-risk tiers or propensity
    deciles, joined back to its own customer ids (the file stays on the node)."""
    from fedcrm.config import PartnerConfig
    from fedcrm.node.scoring import TierRule, score_partner
    from fedcrm.rundir import RunDir

    rule = TierRule(by=tiers.value, high=high, medium=medium, high_deciles=high_deciles, medium_deciles=medium_deciles)
    summary = score_partner(PartnerConfig.load(partner_config), RunDir(model), rule, out)
    console.print(f"{summary.partner}: {summary.scored} customers scored, {summary.not_scored} not scored "
                  f"(every row quarantined), {summary.rows_without_id} rows without an id; "
                  f"{summary.task} {summary.by_tier}; written to {summary.path}")
