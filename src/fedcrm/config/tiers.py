"""How a partner turns churn scores into risk tiers (`fedcrm score`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class TierRule(BaseModel):
    """Churn-risk tiers: by score thresholds, or by deciles (decile 1 = highest scores)."""

    by: Literal["thresholds", "deciles"] = Field("thresholds", description="churn tiers by score thresholds or by deciles")
    high: float = Field(0.5, gt=0, lt=1, description="score at or above: high risk")
    medium: float = Field(0.25, gt=0, lt=1, description="score at or above: medium risk")
    high_deciles: int = Field(1, ge=1, le=10, description="deciles 1..n: high risk")
    medium_deciles: int = Field(3, ge=1, le=10, description="deciles up to n: medium risk")

    @model_validator(mode="after")
    def _ordered(self) -> TierRule:
        if self.medium > self.high or self.medium_deciles < self.high_deciles:
            raise ValueError("the medium tier must sit below the high tier")
        return self
