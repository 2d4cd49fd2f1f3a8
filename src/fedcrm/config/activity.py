"""A partner's purchase-activity rules: the RFM and trend windows, label horizons and the
thresholds of the marketing tags (`fedcrm.data.activity` applies them)."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel, ConfigDict, Field


class ActivityConfig(BaseModel):
    """Windows, label rules and tag thresholds; all configurable per partner."""

    model_config = ConfigDict(extra="forbid")

    cutoff: date | None = Field(None, description="default: the export date minus the horizon")
    window_days: int = Field(365, gt=0, description="RFM window before the cutoff")
    trend_days: int = Field(90, gt=0, description="activity trend: this window vs the one before")
    horizon_days: int = Field(90, gt=0, description="label horizon after the cutoff")
    target_category: str | None = Field(None, description="propensity: bought this category in the horizon")
    lapse_days: int = Field(90, gt=0, description="time-to-churn: days without a purchase after which a customer has "
                                                  "left (the contract's task sets it)")
    tier_high: int = Field(10, description="purchases a year for the high-frequency tier")
    tier_mid: int = Field(5, description="purchases a year for the mid tier (low: 1 to tier_mid-1)")
    new_days: int = Field(90, description="first purchase this recent: lifecycle 'new'")
    active_days: int = Field(90, description="last purchase this recent: 'active'; older: 'dormant'")
    lost_days: int = Field(365, description="no purchase for this long: 'lost'")
    risk_frequency_drop: float = Field(0.30, description="churn-risk flag: purchase frequency down at least this")
    risk_interaction_drop: float = Field(0.50, description="…and interactions down at least this (when known)")

    def cutoff_for(self, as_of: date) -> date:
        return self.cutoff or (as_of - timedelta(days=self.horizon_days))
