"""`fedcrm score`: a partner scores its own customers with a run's model, on its node."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from fedcrm.cli.common import console, typer_app
from fedcrm.config.tiers import TierRule

app = typer_app(None)  # merged into the root app: `fedcrm score`


Tiers = StrEnum("Tiers", {v: v for v in get_args(TierRule.model_fields["by"].annotation)})


def _rule_option(field: str) -> Any:
    """A `TierRule` field as an option: its default and description declared once, there."""
    info = TierRule.model_fields[field]
    return typer.Option(Tiers(info.default) if field == "by" else info.default, help=info.description)


@app.command("score")
def score(
    model: Annotated[Path, typer.Option(help="the run directory holding the global model")],
    partner_config: Annotated[Path, typer.Option(help="this partner's config (run on its node)")],
    out: Annotated[Path | None, typer.Option(help=".parquet or .csv; default work/scores/<task>-run-<id>.parquet")] = None,
    tiers: Tiers = _rule_option("by"), high: float = _rule_option("high"), medium: float = _rule_option("medium"),
    high_deciles: int = _rule_option("high_deciles"), medium_deciles: int = _rule_option("medium_deciles"),
) -> None:
    """Score this partner's current customers locally: churn-risk tiers or propensity
    deciles, joined back to its own customer ids (the file stays on the node)."""
    from fedcrm.config import PartnerConfig
    from fedcrm.node.scoring import score_partner
    from fedcrm.rundir import RunDir

    rule = TierRule(by=tiers.value, high=high, medium=medium, high_deciles=high_deciles, medium_deciles=medium_deciles)
    summary = score_partner(PartnerConfig.load(partner_config), RunDir(model), rule, out)
    console.print(f"{summary.partner}: {summary.scored} customers scored, {summary.not_scored} not scored "
                  f"(every row quarantined), {summary.rows_without_id} rows without an id; "
                  f"{summary.task}: {' · '.join(f'{k} {v}' for k, v in summary.by_tier.items())}; "
                  f"written to {summary.path} (run {summary.run_id})")
