"""A small, deterministic consortium of telecom partners with realistic, messy exports.

Three partners, three raw layouts (column names, id formats, date formats, money units,
file formats) over one synthetic population (`demo_population`). Each partner gets its own
folder (data, partner config, secret key and node work dir) standing in for its machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.sandbox.consortium import TELCO_STYLE_VALUES, init_partner_folder, with_privacy_policy, write_federation
from fedcrm.sandbox.demo_population import (AS_OF, NORTH_ID, SPECS, add_problems, latent_customers,
                                            purchases_for)

# Each partner sets its own lifetime ε cap; the demo's default run spends 3 of it.
PRIVACY_CAPS = {"north-telecom": 10.0, "east-mobile": 8.0, "south-broadband": 12.0}


def _identity(name: str, partner_id: int) -> str:
    """The top of a partner config: who it is, where its key and work dir are, the export date."""
    return (f'name = "{name}"\npartner_id = {partner_id}\nwork_dir = "work"\nsecret_file = "secret.key"\n'
            f'as_of = "{AS_OF}"\n')


def _yes_no(x: pd.Series, yes: str = "Yes", no: str = "No") -> pd.Series:
    return x.map(lambda v: None if pd.isna(v) else (yes if int(v) else no))


def write_north(df: pd.DataFrame, folder: Path, purchases: pd.DataFrame) -> str:
    pay = {"electronic-check": "Electronic check", "mailed-check": "Mailed check",
           "bank-transfer": "Bank transfer (automatic)", "credit-card": "Credit card (automatic)"}
    out = pd.DataFrame({
        "CustomerID": df["cid"].map(NORTH_ID), "FullName": df["name"], "Email": df["email"],
        "SignupDate": df["signup"].dt.strftime("%Y-%m-%d"), "Gender": df["gender"].str.title(),
        "SeniorCitizen": df["senior"], "Contract": df["contract"].map({"month-to-month": "Month-to-month", "one-year": "One year", "two-year": "Two year"}),
        "InternetService": df["internet"].map({"dsl": "DSL", "fiber": "Fiber optic", "none": "No"}),
        "PaymentMethod": df["payment"].map(pay), "PaperlessBilling": _yes_no(df["paperless"]),
        "TechSupport": _yes_no(df["tech"]), "MonthlyCharges": df["monthly"], "TotalCharges": df["total"],
        "SupportCalls": df["calls"], "LastUpdated": df["updated"].dt.strftime("%Y-%m-%d"), "Churn": _yes_no(df["churn"]),
        "AcceptedOffer": _yes_no(df["respond"]),
    })
    out.to_csv(folder / "customers.csv", index=False)
    purchases.to_csv(folder / "topups.csv", index=False)
    return f'''{_identity("north-telecom", 1)}
[customers]
path = "customers.csv"
date_formats = ["%Y-%m-%d"]
money_unit = "units"

[customers.columns]
customer_id = "CustomerID"
full_name = "FullName"
email = "Email"
signup_date = "SignupDate"
record_date = "LastUpdated"
gender = "Gender"
senior = "SeniorCitizen"
contract = "Contract"
internet_service = "InternetService"
payment_method = "PaymentMethod"
paperless_billing = "PaperlessBilling"
tech_support = "TechSupport"
monthly_spend = "MonthlyCharges"
total_spend = "TotalCharges"
interactions = "SupportCalls"
churned = "Churn"
responded = "AcceptedOffer"

[transactions]
path = "topups.csv"

[transactions.columns]
customer_id = "CustomerID"
tx_id = "OrderRef"
tx_date = "Date"
quantity = "Qty"
unit_price = "UnitPrice"
''' + TELCO_STYLE_VALUES


def write_east(df: pd.DataFrame, folder: Path, rng: np.random.Generator) -> str:
    iso = rng.random(len(df)) < 0.1  # a tenth of the rows came from a system that writes ISO dates
    signup = np.where(iso, df["signup"].dt.strftime("%Y-%m-%d"), df["signup"].dt.strftime("%d/%m/%Y"))
    out = pd.DataFrame({
        "cust_no": df["cid"] + 500_000, "name": df["name"], "phone": df["phone"], "join_dt": signup,
        "sex": df["gender"].map({"female": "F", "male": "M"}), "over65": _yes_no(df["senior"], "Y", "N"),
        "plan": df["contract"].map({"month-to-month": "M2M", "one-year": "1Y", "two-year": "2Y"}),
        "net": df["internet"].map({"dsl": "adsl", "fiber": "fibre", "none": "none"}),
        "pay": df["payment"].map({"electronic-check": "E-CHECK", "mailed-check": "POST", "bank-transfer": "DIRECT DEBIT", "credit-card": "CARD"}),
        "e_bill": _yes_no(df["paperless"], "Y", "N"),
        "monthly_fee_cents": (df["monthly"].astype(float) * 100).round().astype("Int64"),
        "calls_12m": df["calls"], "churned": df["churn"].astype("Int64"), "resp": df["respond"],
        "updated": df["updated"].dt.strftime("%d/%m/%Y"),
    })
    out.to_csv(folder / "export.csv", index=False, sep=";")
    return f'''{_identity("east-mobile", 2)}
[customers]
path = "export.csv"
delimiter = ";"
date_formats = ["%d/%m/%Y", "%Y-%m-%d"]
money_unit = "cents"

[customers.columns]
customer_id = "cust_no"
full_name = "name"
phone = "phone"
signup_date = "join_dt"
record_date = "updated"
gender = "sex"
senior = "over65"
contract = "plan"
internet_service = "net"
payment_method = "pay"
paperless_billing = "e_bill"
monthly_spend = "monthly_fee_cents"
interactions = "calls_12m"
churned = "churned"
responded = "resp"

[customers.values.gender]
f = "female"
m = "male"

[customers.values.contract]
m2m = "month-to-month"
1y = "one-year"
2y = "two-year"

[customers.values.internet_service]
adsl = "dsl"
fibre = "fiber"

[customers.values.payment_method]
e-check = "electronic-check"
post = "mailed-check"
direct-debit = "bank-transfer"
card = "credit-card"
'''


def write_south(df: pd.DataFrame, folder: Path) -> str:
    out = pd.DataFrame({
        "client_ref": df["cid"].map(lambda i: f"SB{i * 7919 % 1_000_003:07d}"),
        "age": df["age"].astype("Int64"), "opened": df["signup"].dt.strftime("%Y%m%d"),
        "contract_type": df["contract"].map({"month-to-month": "MONTHLY", "one-year": "ANNUAL", "two-year": "BIENNIAL"}),
        "service": df["internet"].str.upper(), "payment": df["payment"].str.replace("-", " ").str.upper(),
        "has_support": df["tech"].astype(bool), "spend_k": (df["monthly"].astype(float) / 1000).round(5),
        "tickets": df["calls"].astype("Int64"), "status": df["churn"].map(lambda v: None if pd.isna(v) else ("CHURNED" if v else "ACTIVE")),
        "as_of": df["updated"].dt.strftime("%Y-%m-%d"), "campaign_response": df["respond"].astype(bool),
    })
    out.to_parquet(folder / "customers.parquet", index=False)
    return f'''{_identity("south-broadband", 3)}
[customers]
path = "customers.parquet"
date_formats = ["%Y%m%d", "%Y-%m-%d"]
money_unit = "thousands"
true_values = ["churned", "true"]
false_values = ["active", "false"]

[customers.columns]
customer_id = "client_ref"
age = "age"
signup_date = "opened"
record_date = "as_of"
contract = "contract_type"
internet_service = "service"
payment_method = "payment"
tech_support = "has_support"
monthly_spend = "spend_k"
interactions = "tickets"
churned = "status"
responded = "campaign_response"

[customers.values.contract]
monthly = "month-to-month"
annual = "one-year"
biennial = "two-year"
'''


def generate(out: Path, seed: int = 7) -> Path:
    """Write the consortium under `out`; returns the federation config path."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    members = []
    for spec in SPECS:
        folder = out / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        df = latent_customers(spec, rng)
        df["cid"] = np.arange(1, len(df) + 1)
        bought = purchases_for(df, rng, NORTH_ID) if spec.name == "north-telecom" else None
        df = add_problems(df, rng)
        writer = {"north-telecom": lambda: write_north(df, folder, bought), "east-mobile": lambda: write_east(df, folder, rng),
                  "south-broadband": lambda: write_south(df, folder)}[spec.name]
        init_partner_folder(folder, with_privacy_policy(writer(), PRIVACY_CAPS[spec.name]))
        members.append((spec.partner_id, spec.name))
    return write_federation(out, "demo-telecom-consortium", members)
