"""Public datasets cut into partner exports, for tests and benchmarks.

The files are read where `../shared/datasets` keeps them and never copied into the repo;
each partner folder gets its slice, a partner config mapping the public columns onto the
canonical schema, and its own HMAC key — the same shape a real partner node has.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from fedcrm.sandbox.consortium import TELCO_STYLE_VALUES, init_partner_folder, with_privacy_policy, write_federation

if TYPE_CHECKING:
    import tomlkit

SHARED_DATASETS = Path(__file__).resolve().parents[4] / "shared" / "datasets"
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


BANK_CSV = SHARED_DATASETS / "bank-marketing" / "bank-additional-full.csv"
RETAIL_CSV = SHARED_DATASETS / "online-retail" / "online_retail.csv.gz"

# A bank partner's review of the value maps `partner map` drafts for UCI Bank Marketing on
# the shipped banking contract: its job titles and school grades onto the contract's
# groups (left as REVIEW lines by the draft; `partner check` finds most rows 'unknown'
# until they are filled in).
BANK_REVIEW: dict[str, dict[str, str]] = {
    "occupation": {"admin.": "employed", "blue-collar": "employed", "technician": "employed",
                   "services": "employed", "management": "employed", "housemaid": "employed",
                   "retired": "retired", "entrepreneur": "self-employed", "self-employed": "self-employed",
                   "unemployed": "unemployed", "student": "student"},
    "education": {"high.school": "secondary", "university.degree": "tertiary", "professional.course": "tertiary",
                  "illiterate": "basic"},
}


def review_values(doc: tomlkit.TOMLDocument, field_values: dict[str, dict[str, str]]) -> None:
    """Fill a drafted partner config's value maps (`[customers.values.<field>]`), in place."""
    import tomlkit

    for name, values in field_values.items():
        table = doc["customers"]["values"].setdefault(name, tomlkit.table())  # type: ignore[union-attr]
        for raw, canonical in values.items():
            table[raw] = canonical

# `duration` (the call's length) is only known once the call is over and leaks the label:
# it is never mapped. The economic indicators other than the 3-month Euribor, `pdays`
# (carried by previous_outcome) and marital status (a quasi-identifier we do not need) are
# not mapped either.
BANK_MAPPING = """
[customers]
path = "customers.csv"

[customers.columns]
customer_id = "client_id"
age = "age"
occupation = "job"
education = "education"
credit_default = "default"
housing_loan = "housing"
personal_loan = "loan"
contact_channel = "contact"
last_contact_month = "month"
interactions = "campaign"
previous_contacts = "previous"
previous_outcome = "poutcome"
market_rate = "euribor3m"
responded = "y"

[customers.values.occupation]
"admin." = "employed"
"blue-collar" = "employed"
"technician" = "employed"
"services" = "employed"
"management" = "employed"
"housemaid" = "employed"
"entrepreneur" = "self-employed"

[customers.values.education]
"basic.4y" = "basic"
"basic.6y" = "basic"
"basic.9y" = "basic"
"illiterate" = "basic"
"high.school" = "secondary"
"professional.course" = "secondary"
"university.degree" = "tertiary"

[customers.values.contact_channel]
"cellular" = "mobile"
"telephone" = "landline"

[customers.values.previous_outcome]
"nonexistent" = "none"
"""


class PublicExport(BaseModel):
    """One public file and how it becomes partner exports."""

    model_config = ConfigDict(frozen=True)

    key: str
    csv: Path
    delimiter: str
    label: str  # raw label column, for label-skewed splits
    task: str
    mapping: str
    id_prefix: str = ""  # the file has no customer id: rows get "<prefix><row number>"


TELCO = PublicExport(key="telco", csv=TELCO_CSV, delimiter=",", label="Churn", task="churn", mapping=TELCO_MAPPING)
BANK = PublicExport(key="bank", csv=BANK_CSV, delimiter=";", label="y", task="propensity", mapping=BANK_MAPPING,
                    id_prefix="BANK-")
EXPORTS = {e.key: e for e in (TELCO, BANK)}


# Public data in a benchmark: runs without DP are the non-private baselines, and a
# data-scarce split may leave a partner a hold-out of a few dozen rows.
# Exact statistics too: the published utility and audit figures were measured with them, and
# a no-DP baseline should not carry statistics noise. (A partner's default policy noises its
# statistics at σ 8, ε ≈ 0.44 of each run's target: `fedcrm privacy plan` shows it.)
BENCHMARK_POLICY: dict[str, object] = {"dp_required": False, "min_holdout_rows": 1, "min_stats_noise_multiplier": 0.0,
                                       "min_eval_noise_multiplier": 0.0}


def read_export(export: PublicExport, csv: Path | None = None) -> pd.DataFrame:
    path = csv or export.csv
    if not path.is_file():
        raise FileNotFoundError(f"{export.key} data not found at {path} (expected under ../shared/datasets)")
    frame = pd.read_csv(path, sep=export.delimiter, dtype=str, keep_default_na=False)
    if export.id_prefix:  # UCI's contacts carry no id: number them so each stays one customer
        frame.insert(0, "client_id", [f"{export.id_prefix}{i:06d}" for i in range(len(frame))])
    return frame


def split_public(export: PublicExport, out: Path, by: str, partners: int = 5, seed: int = 0,
                 csv: Path | None = None, keep: float = 1.0, seeded_keys: bool = False,
                 benchmark_policy: bool = False) -> Path:
    """Partner exports of a public file: one partner per value of column `by` (non-IID), or
    `partners` partners by 'iid' or 'label-skew'; returns the federation config path.
    `keep` < 1 keeps that random share of each partner's rows: the data-scarce regime.
    `seeded_keys`: HMAC keys derived from the split and seed, so the held-out split (by
    keyed pseudonym) repeats run after run — for benchmarks on public data only.
    `benchmark_policy`: the partners' policies are `BENCHMARK_POLICY`, which allows the
    non-private baselines, exact statistics and the small hold-outs of a data-scarce study
    (a real partner's node refuses or noises them by default)."""
    frame = read_export(export, csv)
    if by in ("iid", "label-skew"):
        groups = frame.groupby(assign_partners(frame[export.label], partners, by, seed))
        parts = [(f"{by}-p{int(i) + 1}", part) for i, part in groups]
    else:
        parts = sorted(frame.groupby(by))
    members = []
    for pid, (value, part) in enumerate(parts, start=1):
        if keep < 1.0:
            part = part.sample(frac=keep, random_state=seed * 1000 + pid)
        name = f"{export.key}-" + "".join(ch if ch.isalnum() else "-" for ch in str(value).lower()).strip("-")
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        part.to_csv(folder / "customers.csv", index=False)
        key = hashlib.sha256(f"fedcrm-public:{export.key}:{by}:{keep}:{seed}:{pid}".encode()).hexdigest()
        config = (f'name = "{name}"\npartner_id = {pid}\nwork_dir = "work"\n'
                  f'secret_file = "secret.key"\nas_of = "2026-01-01"\n{export.mapping}')
        init_partner_folder(folder, with_privacy_policy(config, **BENCHMARK_POLICY) if benchmark_policy else config,
                            key_hex=key if seeded_keys else None)
        members.append((pid, name))
    return write_federation(out, f"{export.key}-by-{by.lower()}", members)


def split_telco(out: Path, by: str = "Contract", csv: Path = TELCO_CSV, partners: int = 5, seed: int = 0,
                benchmark_policy: bool = False) -> Path:
    """IBM Telco by `by` (default: one partner per contract type)."""
    return split_public(TELCO, out, by, partners, seed, csv, benchmark_policy=benchmark_policy)
