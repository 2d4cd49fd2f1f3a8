"""The shared feature space: one fixed layout of columns every partner produces.

FedAvg averages arrays position by position, so every node must emit the same columns in
the same order whatever its raw layout. The layout comes from the canonical schema, not
from the data: a field a partner does not have becomes its neutral value (0, or the
category's 'unknown' column). Numeric fields are centred and scaled with fixed reference
values (a prior, not a statistic of anybody's data), so nothing about one partner's
distribution is needed to build another partner's matrix.

Only non-sensitive fields and generalised quasi-identifiers become features: age enters as
the midpoint of a ten-year band, signup date as tenure in months.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from fedcrm.config.schema import BY_NAME, UNKNOWN, Grade


@dataclass(frozen=True)
class NumericFeature:
    name: str
    center: float
    scale: float
    log: bool = False

    def transform(self, values: pd.Series) -> np.ndarray:
        x = values.astype("float64").to_numpy()
        if self.log:
            x = np.log1p(np.clip(x, 0, None))
        return np.clip((x - self.center) / self.scale, -5.0, 5.0)


NUMERIC: tuple[NumericFeature, ...] = (
    NumericFeature("tenure_months", center=30.0, scale=25.0),
    NumericFeature("monthly_spend", center=65.0, scale=30.0),
    NumericFeature("total_spend", center=7.0, scale=1.5, log=True),
    NumericFeature("interactions", center=1.0, scale=1.0, log=True),
    NumericFeature("age_band", center=45.0, scale=15.0),
    # from the purchases export, when the partner has one (see activity.py)
    NumericFeature("recency_days", center=90.0, scale=90.0),
    NumericFeature("frequency", center=1.0, scale=1.0, log=True),
    NumericFeature("monetary", center=6.0, scale=2.0, log=True),
    NumericFeature("activity_trend", center=0.0, scale=1.0),
    # banking (see schema): contact history and market context
    NumericFeature("previous_contacts", center=0.0, scale=1.0, log=True),
    NumericFeature("market_rate", center=3.0, scale=2.0),
)
BOOLEAN: tuple[str, ...] = ("senior", "has_partner", "has_dependents", "paperless_billing", "tech_support", "online_security",
                             "credit_default", "housing_loan", "personal_loan")
CATEGORICAL: tuple[str, ...] = ("contract", "internet_service", "payment_method", "gender",
                                "occupation", "education", "contact_channel", "last_contact_month", "previous_outcome")


def feature_names() -> list[str]:
    names = [f.name for f in NUMERIC] + list(BOOLEAN)
    for cat in CATEGORICAL:
        names += [f"{cat}={v}" for v in (*BY_NAME[cat].vocabulary, UNKNOWN)]
    return names


def _assert_grades() -> None:
    """Sensitive fields may only enter generalised (age_band, tenure_months)."""
    for name in [*BOOLEAN, *CATEGORICAL]:
        if BY_NAME[name].grade is Grade.CORE_SENSITIVE:
            raise AssertionError(f"{name} is core-sensitive and cannot be a feature")


_assert_grades()


def age_band_midpoint(age: pd.Series, width: int = 10) -> pd.Series:
    """Generalise age to the midpoint of its band (ten years: 18-27 → 22.5, …)."""
    return (np.floor((age - 18) / width) * width + 18 + (width - 1) / 2).where(age.notna())


def derive_generalised(frame: pd.DataFrame, as_of: date, age_band_years: int = 10) -> pd.DataFrame:
    """Replace sensitive quasi-identifiers by their generalised forms."""
    out = frame.copy()
    ref = pd.Timestamp(as_of)
    if "tenure_months" not in out.columns and "signup_date" in out.columns:
        tenure = ((ref - out["signup_date"]).dt.days / 30.4375).clip(lower=0)
        # a missing signup date is a non-key gap: the partner's median tenure stands in
        out["tenure_months"] = tenure.fillna(tenure.median() if tenure.notna().any() else 30.0)
    age = out["age"] if "age" in out.columns else None
    if age is None and "birth_date" in out.columns:
        age = (ref - out["birth_date"]).dt.days / 365.25
    if age is not None:
        band = age_band_midpoint(age.astype("float64"), age_band_years)
        out["age_band"] = band.fillna(band.median() if band.notna().any() else 45.0)
    for sensitive in ("signup_date", "birth_date", "age", "postcode", "region"):
        if sensitive in out.columns:
            out = out.drop(columns=sensitive)
    return out


def build_matrix(frame: pd.DataFrame) -> np.ndarray:
    """Feature matrix (float32) in the fixed layout of `feature_names()`.

    Filled column by column into one float32 array: at a million customers a stack of
    float64 columns cast afterwards costs three times the memory and a second pass."""
    n = len(frame)
    matrix = np.zeros((n, len(feature_names())), dtype=np.float32)  # a field the partner lacks stays 0
    j = 0
    for feat in NUMERIC:
        if feat.name in frame.columns:
            matrix[:, j] = feat.transform(frame[feat.name])
        j += 1
    for name in BOOLEAN:
        if name in frame.columns:
            matrix[:, j] = frame[name].astype("float64").fillna(0).to_numpy()
        j += 1
    for cat in CATEGORICAL:
        levels = [*BY_NAME[cat].vocabulary, UNKNOWN]
        if cat in frame.columns:  # integer codes, then one-hot: no string comparisons per level
            codes = pd.Categorical(frame[cat], categories=levels).codes
            codes = np.where(codes < 0, len(levels) - 1, codes)
            matrix[np.arange(n), j + codes] = 1.0
        else:
            matrix[:, j + len(levels) - 1] = 1.0  # 'unknown'
        j += len(levels)
    if not np.isfinite(matrix).all():
        raise AssertionError("non-finite feature value after cleaning")
    return matrix
