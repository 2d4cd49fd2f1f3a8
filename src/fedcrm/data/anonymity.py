"""k-anonymity of the generalised quasi-identifiers a partner holds.

k is the size of the smallest group of customers sharing one combination of generalised
quasi-identifiers (gender, age band, region, postcode prefix, signup period — widths per partner config). A
small k means a few customers are singled out by those fields alone: the partner sees it
in `fedcrm partner check` before anything is trained.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
from pydantic import BaseModel

from fedcrm.config import Generalisation
from fedcrm.data.features import age_band_midpoint

PERIOD = {"month": "M", "quarter": "Q", "year": "Y"}


class KAnonymityReport(BaseModel):
    quasi_identifiers: list[str]
    k: int | None  # None when the export has no quasi-identifier
    k_threshold: int
    rows_below_threshold: int
    groups: int


def generalised_quasi_identifiers(frame: pd.DataFrame, as_of: date, gen: Generalisation | None = None) -> pd.DataFrame:
    """The generalised form of each quasi-identifier present (what could reach a model)."""
    gen = gen or Generalisation()
    out = pd.DataFrame(index=frame.index)
    if "gender" in frame.columns:
        out["gender"] = frame["gender"].astype(str)
    age = frame["age"] if "age" in frame.columns else None
    if age is None and "birth_date" in frame.columns:
        age = (pd.Timestamp(as_of) - frame["birth_date"]).dt.days / 365.25
    if age is not None:
        w = gen.age_band_years
        low = age_band_midpoint(age.astype("float64"), w) - (w - 1) / 2
        out["age_band"] = low.map(lambda lo: "unknown" if pd.isna(lo) else f"{int(lo)}-{int(lo) + w - 1}")
    if "region" in frame.columns:
        out["region"] = frame["region"].astype(str)
    if "postcode" in frame.columns:
        out["postcode_prefix"] = frame["postcode"].astype("string").str.slice(0, gen.postcode_prefix).fillna("unknown")
    if "signup_date" in frame.columns:
        period = frame["signup_date"].dt.to_period(PERIOD[gen.date_granularity]).astype("string")
        out[f"signup_{gen.date_granularity}"] = period.fillna("unknown")
    return out


def k_anonymity(qi: pd.DataFrame, k_threshold: int = 5) -> KAnonymityReport:
    if qi.shape[1] == 0 or len(qi) == 0:
        return KAnonymityReport(quasi_identifiers=list(qi.columns), k=None, k_threshold=k_threshold,
                                rows_below_threshold=0, groups=0)
    sizes = qi.groupby(list(qi.columns), dropna=False).size()
    return KAnonymityReport(
        quasi_identifiers=list(qi.columns), k=int(sizes.min()), k_threshold=k_threshold,
        rows_below_threshold=int(sizes[sizes < k_threshold].sum()), groups=int(len(sizes)),
    )
