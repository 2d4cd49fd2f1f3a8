"""The canonical customer schema every partner maps its own export onto.

One table of plain data describes each field: its type, whether it is a key field
(missing → the row is "to be supplemented"), and its data grade. The grade decides what
may ever become a model feature: core-sensitive fields (direct identifiers) are dropped
at pseudonymisation, sensitive quasi-identifiers only enter the model generalised, and
only non-sensitive or generalised fields reach the feature matrix.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class FieldKind(StrEnum):
    ID = "id"
    TEXT = "text"
    DATE = "date"
    MONEY = "money"
    COUNT = "count"
    NUMBER = "number"
    CATEGORY = "category"
    BOOL = "bool"


class Grade(StrEnum):
    CORE_SENSITIVE = "core-sensitive"  # direct identifiers: never leave the raw layer
    SENSITIVE = "sensitive"  # quasi-identifiers: only generalised
    NON_SENSITIVE = "non-sensitive"


class CanonicalField(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    kind: FieldKind
    grade: Grade
    key: bool = False
    description: str = ""
    vocabulary: tuple[str, ...] = ()  # for CATEGORY: the canonical spellings


UNKNOWN = "unknown"

FIELDS: tuple[CanonicalField, ...] = (
    CanonicalField(name="customer_id", kind=FieldKind.ID, grade=Grade.CORE_SENSITIVE, key=True,
                   description="Partner's unique customer number; HMAC-pseudonymised on the node."),
    CanonicalField(name="full_name", kind=FieldKind.TEXT, grade=Grade.CORE_SENSITIVE),
    CanonicalField(name="phone", kind=FieldKind.TEXT, grade=Grade.CORE_SENSITIVE),
    CanonicalField(name="email", kind=FieldKind.TEXT, grade=Grade.CORE_SENSITIVE),
    CanonicalField(name="national_id", kind=FieldKind.TEXT, grade=Grade.CORE_SENSITIVE),
    CanonicalField(name="address", kind=FieldKind.TEXT, grade=Grade.CORE_SENSITIVE),
    CanonicalField(name="record_date", kind=FieldKind.DATE, grade=Grade.NON_SENSITIVE,
                   description="When the record was last updated; the newest duplicate wins."),
    CanonicalField(name="signup_date", kind=FieldKind.DATE, grade=Grade.SENSITIVE,
                   description="Customer since; generalised to tenure in months."),
    CanonicalField(name="tenure_months", kind=FieldKind.NUMBER, grade=Grade.NON_SENSITIVE,
                   description="Explicit tenure when the export has no signup date."),
    CanonicalField(name="birth_date", kind=FieldKind.DATE, grade=Grade.SENSITIVE),
    CanonicalField(name="age", kind=FieldKind.NUMBER, grade=Grade.SENSITIVE,
                   description="Generalised to an age band before it becomes a feature."),
    CanonicalField(name="gender", kind=FieldKind.CATEGORY, grade=Grade.SENSITIVE,
                   vocabulary=("female", "male")),
    CanonicalField(name="senior", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="has_partner", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="has_dependents", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="region", kind=FieldKind.CATEGORY, grade=Grade.SENSITIVE),
    CanonicalField(name="postcode", kind=FieldKind.TEXT, grade=Grade.SENSITIVE),
    CanonicalField(name="contract", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("month-to-month", "one-year", "two-year")),
    CanonicalField(name="internet_service", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("dsl", "fiber", "none")),
    CanonicalField(name="payment_method", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("electronic-check", "mailed-check", "bank-transfer", "credit-card")),
    CanonicalField(name="paperless_billing", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="tech_support", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="online_security", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="monthly_spend", kind=FieldKind.MONEY, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="total_spend", kind=FieldKind.MONEY, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="interactions", kind=FieldKind.COUNT, grade=Grade.NON_SENSITIVE,
                   description="Service contacts (calls, tickets, campaign contacts) in the last year."),
    # banking: product holdings and the history of marketing contacts (coarse by design:
    # a partner's own job titles or school grades map onto these groups)
    CanonicalField(name="occupation", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("employed", "self-employed", "retired", "student", "unemployed"),
                   description="Occupation group; job titles are generalised by the partner's value map."),
    CanonicalField(name="education", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("basic", "secondary", "tertiary")),
    CanonicalField(name="credit_default", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE,
                   description="Has credit in default."),
    CanonicalField(name="housing_loan", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="personal_loan", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="contact_channel", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("mobile", "landline")),
    CanonicalField(name="last_contact_month", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
                   description="Month of the latest marketing contact (a month, never a date)."),
    CanonicalField(name="previous_contacts", kind=FieldKind.COUNT, grade=Grade.NON_SENSITIVE,
                   description="Marketing contacts before the current campaign."),
    CanonicalField(name="previous_outcome", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE,
                   vocabulary=("success", "failure", "none"),
                   description="Outcome of the previous campaign ('none': not contacted before)."),
    CanonicalField(name="market_rate", kind=FieldKind.NUMBER, grade=Grade.NON_SENSITIVE,
                   description="Reference interest rate (e.g. 3-month Euribor, %) at the latest contact: "
                               "the market context a product's uptake depends on."),
    CanonicalField(name="churned", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE,
                   description="Explicit churn label source."),
    CanonicalField(name="responded", kind=FieldKind.BOOL, grade=Grade.NON_SENSITIVE,
                   description="Explicit propensity label source (bought / answered a campaign)."),
)

BY_NAME: dict[str, CanonicalField] = {f.name: f for f in FIELDS}

DIRECT_IDENTIFIERS: tuple[str, ...] = tuple(
    f.name for f in FIELDS if f.grade is Grade.CORE_SENSITIVE and f.name != "customer_id"
)

LABEL_SOURCES: dict[str, str] = {"churn": "churned", "propensity": "responded"}


def field(name: str) -> CanonicalField:
    """Look up a canonical field, with the list of valid names in the error."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown canonical field {name!r}; known: {', '.join(BY_NAME)}") from None


# ---------------------------------------------------------------- transactions
TX_FIELDS: tuple[CanonicalField, ...] = (
    CanonicalField(name="customer_id", kind=FieldKind.ID, grade=Grade.CORE_SENSITIVE, key=True),
    CanonicalField(name="tx_date", kind=FieldKind.DATE, grade=Grade.SENSITIVE, key=True,
                   description="Purchase date; enters models only as recency/frequency over windows."),
    CanonicalField(name="tx_id", kind=FieldKind.TEXT, grade=Grade.NON_SENSITIVE,
                   description="Invoice/order number: lines of one order count as one purchase."),
    CanonicalField(name="product", kind=FieldKind.TEXT, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="category", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="quantity", kind=FieldKind.COUNT, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="unit_price", kind=FieldKind.MONEY, grade=Grade.NON_SENSITIVE),
    CanonicalField(name="amount", kind=FieldKind.MONEY, grade=Grade.NON_SENSITIVE,
                   description="Line value; quantity × unit_price when the export has no amount."),
)
TX_BY_NAME: dict[str, CanonicalField] = {f.name: f for f in TX_FIELDS}


# ---------------------------------------------------------------- interactions
IX_FIELDS: tuple[CanonicalField, ...] = (
    CanonicalField(name="customer_id", kind=FieldKind.ID, grade=Grade.CORE_SENSITIVE, key=True),
    CanonicalField(name="ix_date", kind=FieldKind.DATE, grade=Grade.SENSITIVE, key=True,
                   description="When the customer called, wrote or visited; enters models only as counts."),
    CanonicalField(name="channel", kind=FieldKind.CATEGORY, grade=Grade.NON_SENSITIVE),
)
IX_BY_NAME: dict[str, CanonicalField] = {f.name: f for f in IX_FIELDS}
