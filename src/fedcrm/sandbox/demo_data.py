"""A small, deterministic consortium of telecom partners with realistic, messy exports.

Three partners, three raw layouts (column names, id formats, date formats, money units,
file formats), and the problems real CRM exports have: duplicate ids with conflicting
values, missing values, a few outliers. The churn signal is shared (contract, tenure,
price, fibre, payment by electronic check, service calls) but each partner's customer mix
differs, so the federation is non-IID the way a real consortium is.

Each partner gets its own folder — data, partner config, secret key and node work dir —
standing in for that partner's machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.data.pseudonymise import create_secret

AS_OF = "2026-06-30"

# IBM-Telco-style spellings ("Fiber optic", "Bank transfer (automatic)") → canonical values
TELCO_STYLE_VALUES = """
[customers.values.internet_service]
"fiber optic" = "fiber"
"no" = "none"

[customers.values.payment_method]
"bank transfer automatic" = "bank-transfer"
"credit card automatic" = "credit-card"
"""
CONTRACTS = np.array(["month-to-month", "one-year", "two-year"])
INTERNET = np.array(["dsl", "fiber", "none"])
NORTH_ID = "NT-{:06d}".format
PAYMENTS = np.array(["electronic-check", "mailed-check", "bank-transfer", "credit-card"])


@dataclass(frozen=True)
class PartnerSpec:
    name: str
    partner_id: int
    n: int
    contract_mix: tuple[float, float, float]
    fiber_share: float
    base_logit: float


SPECS = (
    PartnerSpec("north-telecom", 1, 2400, (0.65, 0.20, 0.15), 0.55, -2.0),
    PartnerSpec("east-mobile", 2, 1800, (0.40, 0.30, 0.30), 0.35, -2.2),
    PartnerSpec("south-broadband", 3, 1500, (0.25, 0.30, 0.45), 0.45, -2.1),
)


def latent_customers(spec: PartnerSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Canonical-valued customers with churn drawn from one shared logistic model."""
    n = spec.n
    contract = rng.choice(CONTRACTS, n, p=spec.contract_mix)
    max_tenure = np.select([contract == "month-to-month", contract == "one-year"], [40, 60], 72)
    tenure = np.floor(rng.uniform(0, 1, n) ** 1.3 * max_tenure).astype(int) + 1
    internet = np.where(rng.random(n) < spec.fiber_share, "fiber",
                        rng.choice(["dsl", "none"], n, p=[0.7, 0.3]))
    payment = rng.choice(PAYMENTS, n, p=[0.35, 0.2, 0.22, 0.23])
    monthly = np.round(np.select([internet == "fiber", internet == "dsl"], [80.0, 55.0], 22.0)
                       + rng.normal(0, 12, n), 2).clip(15, 130)
    total = np.round(monthly * tenure * rng.uniform(0.9, 1.05, n), 2)
    calls = rng.poisson(np.where(internet == "fiber", 2.0, 1.0))
    senior = (rng.random(n) < 0.16).astype(int)
    tech = (rng.random(n) < np.where(internet == "none", 0.0, 0.35)).astype(int)
    paperless = (rng.random(n) < 0.6).astype(int)
    gender = rng.choice(["female", "male"], n)
    age = np.clip(rng.normal(47, 16, n), 18, 90).astype(int) + senior * 20
    logit = (spec.base_logit + 1.1 * (contract == "month-to-month") - 1.2 * (contract == "two-year")
             - 0.045 * (tenure - 30) + 0.015 * (monthly - 65) + 0.7 * (internet == "fiber")
             + 0.6 * (payment == "electronic-check") + 0.3 * calls - 0.5 * tech + 0.35 * senior)
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    offer_logit = -1.6 + 0.9 * (internet == "fiber") + 0.02 * (tenure - 30) + 0.5 * paperless - 0.6 * senior
    respond = (rng.random(n) < 1 / (1 + np.exp(-offer_logit))).astype(int)
    signup = pd.Timestamp(AS_OF) - pd.to_timedelta(tenure * 30.4375 + rng.uniform(0, 25, n), unit="D")
    updated = pd.Timestamp(AS_OF) - pd.to_timedelta(rng.integers(1, 300, n), unit="D")
    first = rng.choice(["Li", "Wang", "Anna", "Jonas", "Mei", "Sofia", "Omar", "Chen", "Zoë", "José"], n)
    last = rng.choice(["Zhang", "Müller", "Smith", "Garcia", "Liu", "Novak", "Rossi", "Kim"], n)
    return pd.DataFrame({
        "name": [f"{a} {b}" for a, b in zip(first, last)],
        "phone": [f"+86 138 {rng.integers(1000, 9999)} {rng.integers(1000, 9999)}" for _ in range(n)],
        "email": [f"{a.lower()}.{b.lower()}{i}@example.com" for i, (a, b) in enumerate(zip(first, last))],
        "signup": signup.normalize(), "updated": updated.normalize(), "gender": gender, "age": age,
        "senior": senior, "contract": contract, "internet": internet, "payment": payment,
        "paperless": paperless, "tech": tech, "monthly": monthly, "total": total, "calls": calls, "churn": churn,
        "respond": respond,
    })


def add_problems(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Duplicates with conflicting values, gaps, outliers: what real exports contain."""
    df = df.copy()
    n = len(df)
    for col, share in (("gender", 0.04), ("payment", 0.03), ("total", 0.02), ("calls", 0.02)):
        df[col] = df[col].astype(object)
        df.loc[rng.random(n) < share, col] = None
    df.loc[rng.choice(n, 3, replace=False), "monthly"] = -abs(df["monthly"].iloc[:3].to_numpy())
    df.loc[rng.choice(n, 2, replace=False), "monthly"] = 9_999.0
    df.loc[rng.choice(n, 2, replace=False), "signup"] = pd.Timestamp(AS_OF) + pd.Timedelta(days=400)
    df.loc[rng.choice(n, 3, replace=False), "churn"] = None
    dups = df.iloc[rng.choice(n, max(3, n // 50), replace=False)].copy()
    dups["monthly"] = (dups["monthly"].astype(float) * 1.1).round(2)
    dups["updated"] = dups["updated"] - pd.Timedelta(days=30)  # the older, superseded record
    return pd.concat([df, dups]).sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


def purchases_for(df: pd.DataFrame, rng: np.random.Generator, id_of) -> pd.DataFrame:  # noqa: ANN001
    """Top-ups and add-on purchases over 15 months; churners buy less in their last 6."""
    n = len(df)
    rate = np.where(df["internet"] == "fiber", 1.5, 1.0)  # purchases per 30 days
    late_rate = rate * np.where(df["churn"] == 1, 0.25, 1.0)
    early, late = rng.poisson(rate * 270 / 30), rng.poisson(late_rate * 180 / 30)
    who = np.concatenate([np.repeat(np.arange(n), early), np.repeat(np.arange(n), late)])
    start = pd.Timestamp(AS_OF)
    days = np.concatenate([rng.uniform(180, 450, early.sum()), rng.uniform(0, 180, late.sum())])
    lines = pd.DataFrame({
        "CustomerID": df["cid"].to_numpy()[who], "OrderRef": [f"T{i:07d}" for i in range(len(who))],
        "Date": (start - pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"),
        "Qty": rng.integers(1, 3, len(who)), "UnitPrice": rng.choice([5.0, 10.0, 20.0, 30.0], len(who)),
    })
    lines["CustomerID"] = lines["CustomerID"].map(id_of).astype(object)
    refunds = rng.choice(len(lines), max(1, len(lines) // 200), replace=False)
    lines.loc[refunds, "Qty"] = -1  # refunds: quarantined as abnormal, reported
    lines.loc[rng.choice(len(lines), 5, replace=False), "CustomerID"] = None  # lines without a customer
    return lines.sort_values("Date", kind="stable").reset_index(drop=True)


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
    return f'''name = "north-telecom"
partner_id = 1
work_dir = "work"
secret_file = "secret.key"
as_of = "{AS_OF}"

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
    return f'''name = "east-mobile"
partner_id = 2
work_dir = "work"
secret_file = "secret.key"
as_of = "{AS_OF}"

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
    return f'''name = "south-broadband"
partner_id = 3
work_dir = "work"
secret_file = "secret.key"
as_of = "{AS_OF}"

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


# Each partner sets its own lifetime ε cap; the demo's default run spends 3 of it.
PRIVACY_CAPS = {"north-telecom": 10.0, "east-mobile": 8.0, "south-broadband": 12.0}


def with_privacy_policy(partner_toml: str, epsilon_cap: float, delta: float = 1e-5) -> str:
    """The partner's `[privacy]` table, placed before its first table."""
    block = f"[privacy]\nepsilon_cap = {epsilon_cap}\ndelta = {delta:g}\naccountant = \"prv\"\n\n"
    head, sep, rest = partner_toml.partition("\n[")
    return f"{head}\n{block}[{rest}" if sep else f"{partner_toml}\n{block}"


def init_partner_folder(folder: Path, partner_toml: str, key_hex: str | None = None) -> Path:
    """Write a partner's config next to its data and give it a key (kept if present)."""
    (folder / "partner.toml").write_text(partner_toml)
    if not (folder / "secret.key").exists():
        create_secret(folder / "secret.key", key_hex=key_hex)
    return folder / "partner.toml"


def write_federation(out: Path, name: str, members: list[tuple[int, str]]) -> Path:
    """Federation config whose member i reads `<name>/partner.toml` beside it."""
    blocks = [f'[[members]]\npartner_id = {pid}\nname = "{m}"\nconfig = "{m}/partner.toml"\n' for pid, m in members]
    fed = out / "federation.toml"
    fed.write_text(f'name = "{name}"\n\n' + "\n".join(blocks))
    return fed
