"""The demo consortium's customers before any partner exports them: one shared churn model.

The churn signal is shared (contract, tenure, price, fibre, payment by electronic check,
service calls) but each partner's customer mix differs, so the federation is non-IID the
way a real consortium is. `add_problems` then gives each export what real CRM exports
have: duplicate ids with conflicting values, gaps, outliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

AS_OF = "2026-06-30"
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
