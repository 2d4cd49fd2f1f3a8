"""Public datasets cut into partner exports, for tests and benchmarks.

The files are read where `../shared/datasets` keeps them and never copied into the repo;
each partner folder gets its slice, a partner config mapping the public columns onto the
canonical schema, and its own HMAC key — the same shape a real partner node has.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedcrm.pseudonymise import create_secret

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

[customers.values.internet_service]
"fiber optic" = "fiber"
"no" = "none"

[customers.values.payment_method]
"bank transfer automatic" = "bank-transfer"
"credit card automatic" = "credit-card"
'''


def split_telco(out: Path, by: str = "Contract", csv: Path = TELCO_CSV) -> Path:
    """One partner per value of `by` (non-IID); returns the federation config path."""
    if not csv.is_file():
        raise FileNotFoundError(f"IBM Telco churn file not found at {csv}")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    members = []
    for pid, (value, part) in enumerate(sorted(frame.groupby(by)), start=1):
        name = "telco-" + "".join(ch if ch.isalnum() else "-" for ch in str(value).lower()).strip("-")
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / "customers.csv", index=False)
        (folder / "partner.toml").write_text(
            f'name = "{name}"\npartner_id = {pid}\nwork_dir = "work"\nsecret_file = "secret.key"\n'
            f'as_of = "2026-01-01"\n{TELCO_MAPPING}'
        )
        if not (folder / "secret.key").exists():
            create_secret(folder / "secret.key")
        members.append(f'[[members]]\npartner_id = {pid}\nname = "{name}"\nconfig = "{name}/partner.toml"\n')
    fed = out / "federation.toml"
    fed.write_text(f'name = "telco-by-{by.lower()}"\n\n' + "\n".join(members))
    return fed
