"""Public datasets cut into partner exports, for tests and benchmarks.

The files are read where `../shared/datasets` keeps them and never copied into the repo;
each partner folder gets its slice, a partner config mapping the public columns onto the
canonical schema, and its own HMAC key — the same shape a real partner node has.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.demo_data import TELCO_STYLE_VALUES, init_partner_folder, write_federation

SHARED_DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
TELCO_CSV = SHARED_DATASETS / "telco-churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"

TELCO_MAPPING = '''
[customers]
path = "customers.csv"
false_values = ["no", "no internet service", "no phone service", "0"]

[customers.columns]
customer_id = "customerID"
gender = "gender"
senior = "SeniorCitizen"
has_partner = "Partner"
has_dependents = "Dependents"
tenure_months = "tenure"
contract = "Contract"
internet_service = "InternetService"
payment_method = "PaymentMethod"
paperless_billing = "PaperlessBilling"
tech_support = "TechSupport"
online_security = "OnlineSecurity"
monthly_spend = "MonthlyCharges"
total_spend = "TotalCharges"
churned = "Churn"
''' + TELCO_STYLE_VALUES


def assign_partners(labels: pd.Series, partners: int, how: str, seed: int, alpha: float = 1.0,
                    min_rows: int = 300) -> np.ndarray:
    """Partner index per row. 'iid': uniformly at random. 'label-skew': each class spread
    over the partners by Dirichlet(alpha) shares, so partners differ in label rate (and
    size); draws leaving a partner under `min_rows` rows are redrawn."""
    rng = np.random.default_rng(seed)
    if how == "iid":
        return rng.integers(0, partners, len(labels))
    if how != "label-skew":
        raise ValueError(f"unknown split {how!r}: use iid, label-skew or a column name")
    for _ in range(200):
        out = np.empty(len(labels), dtype=np.int64)
        for value in sorted(labels.unique()):
            rows = np.flatnonzero((labels == value).to_numpy())
            rng.shuffle(rows)
            cuts = (np.cumsum(rng.dirichlet([alpha] * partners))[:-1] * len(rows)).astype(int)
            for pid, chunk in enumerate(np.split(rows, cuts)):
                out[chunk] = pid
        if np.bincount(out, minlength=partners).min() >= min_rows:
            return out
    raise ValueError(f"no label-skew split with {partners} partners of at least {min_rows} rows")


def split_telco(out: Path, by: str = "Contract", csv: Path = TELCO_CSV, partners: int = 5, seed: int = 0) -> Path:
    """Partner exports of IBM Telco: one partner per value of column `by` (non-IID), or
    `partners` partners by 'iid' or 'label-skew'; returns the federation config path."""
    if not csv.is_file():
        raise FileNotFoundError(f"IBM Telco churn file not found at {csv}")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if by in ("iid", "label-skew"):
        groups = frame.groupby(assign_partners(frame["Churn"], partners, by, seed))
        parts = [(f"{by}-p{int(i) + 1}", part) for i, part in groups]
    else:
        parts = sorted(frame.groupby(by))
    members = []
    for pid, (value, part) in enumerate(parts, start=1):
        name = "telco-" + "".join(ch if ch.isalnum() else "-" for ch in str(value).lower()).strip("-")
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / "customers.csv", index=False)
        init_partner_folder(folder, f'name = "{name}"\npartner_id = {pid}\nwork_dir = "work"\n'
                                    f'secret_file = "secret.key"\nas_of = "2026-01-01"\n{TELCO_MAPPING}')
        members.append((pid, name))
    return write_federation(out, f"telco-by-{by.lower()}", members)
