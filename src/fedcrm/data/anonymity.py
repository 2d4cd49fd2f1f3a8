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
from fedcrm.contract.model import Contract, Generalise, Kind
from fedcrm.data.layout import AGE_FLOOR, AGE_TOP, age_band_start

PERIOD = {"month": "M", "quarter": "Q", "year": "Y"}


class KAnonymityReport(BaseModel):
    quasi_identifiers: list[str]
    k: int | None  # None when the export has no quasi-identifier
    k_threshold: int
    rows_below_threshold: int
    groups: int


def generalised_quasi_identifiers(frame: pd.DataFrame, as_of: date, gen: Generalisation | None = None,
                                  contract: Contract | None = None) -> pd.DataFrame:
    """The generalised form of each of the contract's quasi-identifiers (its sensitive
    fields) the partner maps and the contract lets reach the model (a field it drops reaches
    nothing): what could single a customer out there. Widths are the partner's."""
    from fedcrm.contract.tables import standard_contract

    gen = gen or Generalisation()
    contract = contract or standard_contract()
    out = pd.DataFrame(index=frame.index)
    periods = pd.DataFrame(index=frame.index)  # dates last
    ages: list[str] = []
    for qi in contract.quasi_identifiers():
        if qi.name not in frame.columns or qi.generalise == Generalise.DROP:
            continue
        col = frame[qi.name]
        if qi.generalise == Generalise.AGE_BAND:
            if ages:  # age and birth date: one age band, from the first the partner maps
                continue
            ages.append(qi.name)
            age = (pd.Timestamp(as_of) - col).dt.days / 365.25 if qi.kind == Kind.DATE else col.astype("float64")
            w = gen.age_band_years
            top = AGE_FLOOR + w * ((AGE_TOP - AGE_FLOOR) // w)
            low = age_band_start(age, w)
            out["age_band"] = low.map(lambda lo: "unknown" if pd.isna(lo) else
                                      f"{int(lo)}+" if lo >= top else f"{int(lo)}-{int(lo) + w - 1}")
        elif qi.kind == Kind.DATE:
            period = col.dt.to_period(PERIOD[gen.date_granularity]).astype("string")
            periods[f"{qi.name.removesuffix('_date')}_{gen.date_granularity}"] = period.fillna("unknown")
        elif qi.generalise == Generalise.POSTCODE_PREFIX or (qi.kind == Kind.TEXT and "post" in qi.name):
            out[f"{qi.name}_prefix"] = col.astype("string").str.slice(0, gen.postcode_prefix).fillna("unknown")
        elif qi.kind in (Kind.NUMBER, Kind.COUNT, Kind.MONEY, Kind.ORDINAL):
            continue  # a sensitive number reaches nothing ungeneralised (the contract says how, or drop)
        else:
            out[qi.name] = col.astype(str)
    return pd.concat([out, periods], axis=1)



def k_anonymity(qi: pd.DataFrame, k_threshold: int = 5) -> KAnonymityReport:
    if qi.shape[1] == 0 or len(qi) == 0:
        return KAnonymityReport(quasi_identifiers=list(qi.columns), k=None, k_threshold=k_threshold,
                                rows_below_threshold=0, groups=0)
    sizes = qi.groupby(list(qi.columns), dropna=False).size()
    return KAnonymityReport(
        quasi_identifiers=list(qi.columns), k=int(sizes.min()), k_threshold=k_threshold,
        rows_below_threshold=int(sizes[sizes < k_threshold].sum()), groups=int(len(sizes)),
    )
