"""Draft a partner's mapping of its export onto a contract: `fedcrm partner map`.

Each contract field is matched to an export column by normalised name (case and
punctuation ignored: `MonthlyCharges` is `monthly_charges`), then by a list of common
synonyms (`tenure` -> tenure_months, `y` -> responded), then by the words the names share;
a candidate is taken only when the column's values fit the field's kind (a date column is
never a money field). Date formats, the money unit, true/false spellings and category
spellings are inferred from the sample. The result is a partner.toml in today's
`PartnerConfig` format, with `# REVIEW:` comments, and the list of contract fields it
could not map and export columns it did not use.

A file that repeats its customer ids and has dates is a purchase (or interaction) log: when
the contract has a [transactions] (or [interactions]) table, that table is mapped from the
same file too, and the customers table keeps one row per customer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fedcrm.contract.draft import DEFAULT_FALSE, DEFAULT_TRUE, Profile, Sample, profile, read_sample, split_words
from fedcrm.contract.model import Contract, FieldSpec, Kind, normalise_token
from fedcrm.errors import DataError

# contract field -> other names it goes by (compared with case and punctuation removed)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "customer_id": ("customerid", "custid", "custno", "customerno", "customernumber", "customernr", "clientid",
                    "clientref", "clientno", "clientnumber", "accountid", "cid", "id", "customerref", "custref"),
    "full_name": ("name", "fullname", "customername", "clientname"),
    "phone": ("phone", "phonenumber", "mobile", "mobilenumber", "msisdn", "tel", "telephone"),
    "email": ("email", "emailaddress", "mail", "eMail"),
    "national_id": ("nationalid", "ssn", "idcard", "idnumber", "passport", "nin"),
    "address": ("address", "street", "streetaddress", "homeaddress"),
    "record_date": ("recorddate", "lastupdated", "updated", "updatedat", "asof", "modified", "lastmodified",
                    "updatedate", "lastupdate"),
    "signup_date": ("signupdate", "joindate", "joindt", "joined", "opened", "opendate", "customersince", "startdate",
                    "activationdate", "createdat", "signup", "since"),
    "tenure_months": ("tenure", "tenuremonths", "monthsactive", "monthsasCustomer"),
    "birth_date": ("birthdate", "dob", "dateofbirth", "birthday"),
    "age": ("age", "ageyears"),
    "gender": ("gender", "sex"),
    "senior": ("senior", "seniorcitizen", "over65", "elderly"),
    "has_partner": ("partner", "haspartner"),
    "has_dependents": ("dependents", "hasdependents"),
    "region": ("region", "state", "province", "county", "city"),
    "country": ("country", "countrycode", "nation"),
    "postcode": ("postcode", "zip", "zipcode", "postalcode", "plz"),
    "contract": ("contract", "plan", "contracttype", "plantype"),
    "internet_service": ("internetservice", "internet", "net", "service", "broadband"),
    "payment_method": ("paymentmethod", "payment", "pay", "paymenttype", "paymethod"),
    "paperless_billing": ("paperlessbilling", "paperless", "ebill", "ebilling", "estatement"),
    "tech_support": ("techsupport", "support", "hassupport"),
    "online_security": ("onlinesecurity", "security"),
    "monthly_spend": ("monthlyspend", "monthlycharges", "monthlycharge", "monthlyfee", "monthlyfeecents", "monthly",
                      "spend", "spendk", "mrc", "arpu"),
    "total_spend": ("totalspend", "totalcharges", "totalcharge", "totalfees", "lifetimevalue", "ltv", "totalspent"),
    "interactions": ("interactions", "supportcalls", "calls", "calls12m", "tickets", "contacts", "servicecalls"),
    "churned": ("churned", "churn", "churnflag", "exited", "attrition", "left", "ischurned", "churnlabel", "status"),
    "responded": ("responded", "response", "y", "subscribed", "accepted", "acceptedoffer", "campaignresponse", "resp",
                  "converted", "target"),
    "occupation": ("occupation", "job", "jobtitle", "profession", "employment"),
    "education": ("education", "educationlevel", "schooling"),
    "credit_default": ("creditdefault", "default", "indefault", "hasdefault"),
    "housing_loan": ("housingloan", "housing", "mortgage"),
    "personal_loan": ("personalloan", "loan", "consumerloan"),
    "marital_status": ("maritalstatus", "marital", "civilstatus"),
    "balance": ("balance", "accountbalance", "avgbalance", "averagebalance"),
    "contact_channel": ("contactchannel", "contact", "contacttype", "channel"),
    "last_contact_month": ("lastcontactmonth", "month", "contactmonth"),
    "last_contact_weekday": ("lastcontactweekday", "dayofweek", "weekday", "contactday"),
    "campaign_contacts": ("campaigncontacts", "campaign", "contactsthiscampaign", "numcontacts"),
    "days_since_previous_contact": ("dayssincepreviouscontact", "pdays", "dayssincelastcontact"),
    "previous_contacts": ("previouscontacts", "previous", "priorcontacts"),
    "previous_outcome": ("previousoutcome", "poutcome", "lastoutcome"),
    "market_rate": ("marketrate", "euribor3m", "euribor", "referencerate", "interestrate"),
    "emp_var_rate": ("empvarrate", "employmentvariationrate"),
    "cons_price_idx": ("conspriceidx", "consumerpriceindex", "cpi"),
    "cons_conf_idx": ("consconfidx", "consumerconfidenceindex"),
    "nr_employed": ("nremployed", "numberemployed", "employees"),
    # event tables
    "tx_id": ("txid", "invoiceno", "invoice", "invoiceid", "invoicenumber", "orderref", "orderid", "order", "orderno",
              "ordernumber", "receipt", "receiptno", "basketid"),
    "tx_date": ("txdate", "invoicedate", "date", "orderdate", "purchasedate", "transactiondate", "day", "datetime",
                "timestamp"),
    "product": ("product", "stockcode", "sku", "productid", "item", "itemid", "article", "productcode"),
    "category": ("category", "productcategory", "department", "productgroup"),
    "quantity": ("quantity", "qty", "units", "count"),
    "unit_price": ("unitprice", "price", "priceeach", "itemprice"),
    "amount": ("amount", "linetotal", "total", "value", "linevalue", "revenue", "sales"),
    "description": ("description", "productdescription", "itemdescription", "desc"),
    "ix_date": ("ixdate", "date", "when", "contactdate", "calldate", "timestamp", "datetime"),
    "channel": ("channel", "via", "medium", "contactchannel", "type"),
}
# words that say little on their own: a match on them alone is no match
GENERIC_WORDS = frozenset({"id", "no", "nr", "num", "number", "date", "dt", "type", "code", "flag", "is", "has",
                           "value", "amount", "total", "count", "the", "of", "in", "at", "on", "k", "m"})
# export spelling -> canonical spellings it may stand for (tried when the spelling is not one)
VALUE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "no": ("none",), "nonexistent": ("none",), "never": ("none",), "f": ("female",), "w": ("female",),
    "woman": ("female",), "m": ("male",), "man": ("male",), "cellular": ("mobile",), "cell": ("mobile",),
    "telephone": ("landline",), "fixed": ("landline",), "fixed-line": ("landline",), "fibre": ("fiber",),
    "fibre-optic": ("fiber",), "adsl": ("dsl",), "vdsl": ("dsl",),
}

COMPATIBLE: dict[Kind, frozenset[Kind]] = {  # contract kind -> export column kinds that can feed it
    Kind.ID: frozenset({Kind.ID, Kind.TEXT, Kind.COUNT, Kind.NUMBER}),
    Kind.TEXT: frozenset({Kind.TEXT, Kind.ID, Kind.COUNT, Kind.NUMBER, Kind.CATEGORY}),
    Kind.DATE: frozenset({Kind.DATE}),
    Kind.MONEY: frozenset({Kind.MONEY, Kind.NUMBER, Kind.COUNT}),
    Kind.COUNT: frozenset({Kind.COUNT, Kind.NUMBER, Kind.MONEY}),
    Kind.NUMBER: frozenset({Kind.NUMBER, Kind.COUNT, Kind.MONEY}),
    Kind.CATEGORY: frozenset({Kind.CATEGORY, Kind.BOOL, Kind.TEXT}),
    Kind.ORDINAL: frozenset({Kind.CATEGORY, Kind.COUNT, Kind.NUMBER, Kind.TEXT}),
    Kind.BOOL: frozenset({Kind.BOOL}),
}


def _key(name: str) -> str:
    return "".join(split_words(name))


def _word_set(name: str) -> set[str]:
    return set(split_words(name))


def name_score(field_name: str, column: str) -> int:
    """100: the same name; 90: a known synonym; 70: the same words; 60: one name's
    meaningful words are all in the other's; 0: no match."""
    f, c = _key(field_name), _key(column)
    if not f or not c:
        return 0
    if f == c:
        return 100
    if c in {_key(s) for s in SYNONYMS.get(field_name, ())}:
        return 90
    fw, cw = _word_set(field_name), _word_set(column)
    if fw == cw:
        return 70
    small, big = (fw, cw) if len(fw) <= len(cw) else (cw, fw)
    if small - GENERIC_WORDS and small <= big:
        return 60
    return 0


def compatible(spec: FieldSpec, prof: Profile) -> bool:
    if spec.kind is Kind.BOOL and prof.kind is Kind.CATEGORY:
        return prof.distinct == 2  # two spellings: which is true is for the partner to say
    if prof.present == 0:
        return True  # an empty column fits anything (and is flagged)
    return prof.kind in COMPATIBLE[spec.kind]


@dataclass
class TableDraft:
    table: str  # customers | transactions | interactions
    columns: dict[str, str] = field(default_factory=dict)  # contract field -> export column
    how: dict[str, str] = field(default_factory=dict)  # contract field -> why it matched
    unmapped: dict[str, str] = field(default_factory=dict)  # contract field -> why not
    date_formats: list[str] = field(default_factory=list)
    money_unit: str = "units"
    money_note: str | None = None
    true_values: list[str] | None = None
    false_values: list[str] | None = None
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {raw: canonical}
    unresolved: dict[str, list[str]] = field(default_factory=dict)  # field -> raw spellings not placed
    review: list[str] = field(default_factory=list)
    sample: Sample | None = None  # the export this table reads, when not the customers export


@dataclass
class MappingDraft:
    sample: Sample
    contract: Contract
    tables: list[TableDraft]
    unused: list[str]  # export columns no table uses
    notes: list[str] = field(default_factory=list)

    def leftovers(self) -> list[str]:
        """Contract fields not mapped and export columns not used, one line each."""
        out = []
        for t in self.tables:
            prefix = "" if t.table == "customers" else f"{t.table}."
            out += [f"field {prefix}{name}: {why}" for name, why in t.unmapped.items()]
        out += [f"column {col!r}: not used" for col in self.unused]
        return out

    def toml(self, name: str, partner_id: int, base: Path | None = None) -> str:
        return render(self, name, partner_id, base)


def match_table(spec_fields: list[FieldSpec], profiles: dict[str, Profile], table: str) -> TableDraft:
    """Greedy best-first assignment of export columns to one table's fields."""
    out = TableDraft(table=table)
    candidates = []
    reasons: dict[str, str] = {}
    reasons_col: dict[str, str] = {}
    for order, spec in enumerate(spec_fields):
        for col, prof in profiles.items():
            score = name_score(spec.name, col)
            if not score:
                continue
            if not compatible(spec, prof):
                if spec.name not in reasons:
                    reasons[spec.name] = (f"column {col!r} matches by name but holds {prof.kind.value} values, "
                                          f"not {spec.kind.value}")
                    reasons_col[spec.name] = col
                continue
            candidates.append((-score, order, col, spec))
    candidates.sort(key=lambda c: (c[0], c[1]))
    used: set[str] = set()
    for neg, _, col, spec in candidates:
        if spec.name in out.columns or col in used:
            continue
        out.columns[spec.name] = col
        out.how[spec.name] = {100: "same name", 90: "synonym", 70: "same words"}.get(-neg, "shared words")
        used.add(col)
    for spec in spec_fields:
        if spec.name not in out.columns:
            why = reasons.get(spec.name)
            if why is None or reasons_col.get(spec.name) in used:  # that column went to a better match
                why = "no export column matches"
            out.unmapped[spec.name] = why
    # keep the contract's field order
    out.columns = {s.name: out.columns[s.name] for s in spec_fields if s.name in out.columns}
    return out


_CENTS = frozenset({"cents", "cent", "pence", "ct", "cts", "fen"})
_THOUSANDS = frozenset({"k", "thousands", "thousand", "000", "tsd", "kusd", "keur"})
_WAN = frozenset({"wan"})


def _money_unit(columns: list[str]) -> tuple[str, str | None]:
    units = {}
    for col in columns:
        words = _word_set(col)
        unit = ("cents" if words & _CENTS else "thousands" if words & _THOUSANDS else "wan" if words & _WAN
                else "units")
        units[col] = unit
    found = set(units.values())
    if len(found) > 1:
        return "units", (f"money columns disagree on their unit ({', '.join(f'{c}: {u}' for c, u in units.items())}); "
                         "one table has one money_unit: convert the export")
    unit = found.pop() if found else "units"
    if unit != "units":
        return unit, f"money_unit {unit!r} from the column names ({', '.join(units)})"
    return unit, None


def _fill_details(out: TableDraft, spec_fields: list[FieldSpec], profiles: dict[str, Profile]) -> None:
    specs = {s.name: s for s in spec_fields}
    formats: list[str] = []
    money_cols = []
    extra_true: list[str] = []
    extra_false: list[str] = []
    for name, col in out.columns.items():
        spec, prof = specs[name], profiles[col]
        if prof.notes:
            out.review += [f"{name} ({col}): {n}" for n in prof.notes]
        if prof.present == 0:
            out.review.append(f"{name} ({col}): the column is empty in the sample")
        if spec.kind is Kind.DATE:
            formats += [f for f in prof.date_formats if f not in formats]
        elif spec.kind is Kind.MONEY:
            money_cols.append(col)
        elif spec.kind is Kind.BOOL:
            if prof.kind is Kind.BOOL:
                extra_true += [v for v in prof.bool_true if v not in DEFAULT_TRUE and v not in extra_true]
                extra_false += [v for v in prof.bool_false if v not in DEFAULT_FALSE and v not in extra_false]
            elif (guess := flag_spellings([v for v, _ in prof.values])) is not None:
                yes, no = guess
                extra_true += [yes] if yes not in extra_true else []
                extra_false += [no] if no not in extra_false else []
                out.review.append(f"{name} ({col}) reads {yes!r} as true and {no!r} as false (guessed from the words)")
            elif len(prof.values) >= 2:
                a, b = (v for v, _ in prof.values[:2])
                out.review.append(f"{name} ({col}) reads {a!r} / {b!r}: add the true one to true_values and the other "
                                  "to false_values")
        elif spec.kind is Kind.CATEGORY and isinstance(spec.vocabulary, list):
            mapped, unresolved = value_map(prof, spec.vocabulary)
            if mapped:
                out.values[name] = mapped
            if unresolved:
                out.unresolved[name] = unresolved
        elif spec.kind is Kind.ORDINAL and spec.levels:
            odd = [v for v, _ in prof.values if normalise_token(v) not in spec.levels][:10]
            if odd:
                out.review.append(f"{name} ({col}): spellings {odd} are not levels of {sorted(spec.levels)}; "
                                  "recode them in the export")
    out.date_formats = formats
    out.money_unit, out.money_note = _money_unit(money_cols)
    if extra_true:
        out.true_values = DEFAULT_TRUE + extra_true
    if extra_false:
        out.false_values = DEFAULT_FALSE + extra_false


# Outcome words: what a two-valued label column says when it is not yes/no.
TRUE_WORDS = frozenset({"left", "churned", "churn", "lost", "closed", "cancelled", "canceled", "gone", "exited",
                        "quit", "terminated", "attrited", "lapsed", "bought", "purchased", "subscribed", "accepted",
                        "responded", "converted", "success", "positive", "won", "renewed-no"})
FALSE_WORDS = frozenset({"stayed", "active", "retained", "current", "kept", "existing", "remained", "declined",
                         "rejected", "refused", "ignored", "negative", "none", "open"})


def flag_spellings(values: list[str]) -> tuple[str, str] | None:
    """(true, false) spellings of a two-valued column by outcome words ('Left' / 'Stayed',
    'Churned' / 'Not churned', 'Subscribed' / 'Declined'), or None when the words do not say."""
    if len(values) != 2:
        return None

    def sense(v: str) -> bool | None:
        words = set(re.split(r"[^a-z]+", v.lower())) - {""}
        if words & {"not", "no", "non", "never"}:
            return False
        if words & TRUE_WORDS:
            return True
        if words & FALSE_WORDS:
            return False
        return None

    a, b = values
    sa, sb = sense(a), sense(b)
    if sa is True and sb is not True:
        return a, b
    if sb is True and sa is not True:
        return b, a
    if sa is False and sb is None:
        return b, a
    if sb is False and sa is None:
        return a, b
    return None


def value_map(prof: Profile, vocabulary: list[str]) -> tuple[dict[str, str], list[str]]:
    """{export spelling: canonical spelling} for spellings that are not already canonical
    but clearly stand for one (a synonym, or one a prefix of the other at a word break),
    and the spellings left for a person to place."""
    mapped: dict[str, str] = {}
    unresolved: list[str] = []
    for raw, _ in prof.values:
        token = normalise_token(raw)
        if token in vocabulary:
            continue
        options = [v for v in VALUE_SYNONYMS.get(token, ()) if v in vocabulary]
        if not options:
            options = [v for v in vocabulary if _prefix_at_break(token, v) or _prefix_at_break(v, token)]
        if len(options) == 1:
            mapped[raw] = options[0]
        else:
            unresolved.append(raw)
    return mapped, unresolved[:50]


def _prefix_at_break(long: str, short: str) -> bool:
    return len(long) > len(short) and long.startswith(short) and not long[len(short)].isalnum()


def match_export(contract: Contract, sample: Sample) -> MappingDraft:
    profiles = profile(sample)
    tables = [match_table(contract.fields, profiles, "customers")]
    notes = []
    cid = tables[0].columns.get(contract.customer_id.name)
    is_log = cid is not None and profiles[cid].distinct < profiles[cid].present
    if is_log:
        p = profiles[cid]
        notes.append(f"the id column {cid!r} repeats ({p.present} rows, {p.distinct} ids in the sample): the customers "
                     "table keeps one row per customer (the rest are reported as duplicates)")
        for name in ("transactions", "interactions"):
            events = getattr(contract, name)
            if events is None:
                continue
            t = match_table(events.fields, profiles, name)
            needed = [f.name for f in events.fields if f.role in ("customer", "date")]
            if all(n in t.columns for n in needed):
                tables.append(t)
                break  # one log is one table
    _fallbacks(contract, tables[0], profiles)
    for t in tables:
        specs = contract.table(t.table)  # type: ignore[arg-type]
        _fill_details(t, specs, profiles)
    used = {col for t in tables for col in t.columns.values()}
    unused = [c for c in sample.frame.columns if c not in used]
    return MappingDraft(sample=sample, contract=contract, tables=tables, unused=unused, notes=notes)


def match_events(contract: Contract, sample: Sample, taken: set[str]) -> tuple[TableDraft, list[str]]:
    """A separate events export (purchases or interactions) onto the first of the
    contract's event tables not `taken` whose customer and date fields it has; returns the
    table and the export's unused columns."""
    profiles = profile(sample)
    tried = []
    for name in ("transactions", "interactions"):
        events = getattr(contract, name)
        if events is None or name in taken:
            continue
        t = match_table(events.fields, profiles, name)
        needed = [f.name for f in events.fields if f.role in ("customer", "date")]
        if all(n in t.columns for n in needed):
            _fill_details(t, contract.table(name), profiles)  # type: ignore[arg-type]
            t.sample = sample
            used = set(t.columns.values())
            return t, [c for c in sample.frame.columns if c not in used]
        tried.append(f"{name} (needs columns for {', '.join(needed)}; matched {', '.join(t.columns) or 'none'})")
    if not tried:
        raise DataError(sample.path, f"contract {contract.name!r} has no event table left to map this export onto")
    raise DataError(sample.path, "matches none of the contract's event tables: " + "; ".join(tried))


def _fallbacks(contract: Contract, customers: TableDraft, profiles: dict[str, Profile]) -> None:
    """When no name matches: the customer id is the one column whose values are all
    distinct, and a task's label the one flag column nothing else took (each a REVIEW)."""
    used = set(customers.columns.values())
    cid = contract.customer_id.name
    if cid not in customers.columns:
        unique = [c for c, p in profiles.items() if c not in used and p.unique and p.present >= 0.9 * p.rows
                  and p.kind in (Kind.ID, Kind.TEXT, Kind.COUNT)]
        if len(unique) > 1:
            unique = [c for c in unique if profiles[c].kind is Kind.ID] or unique
        if len(unique) == 1:
            customers.columns = {cid: unique[0], **customers.columns}
            customers.how[cid] = "its values: the only column with a distinct value on every row"
            customers.unmapped.pop(cid, None)
            used.add(unique[0])
        elif unique:
            customers.unmapped[cid] = f"several columns could be the id: {unique}"
    labels = [f for f in contract.label_fields() if f not in customers.columns]
    flags = [c for c, p in profiles.items() if c not in used
             and (p.kind is Kind.BOOL or p.kind is Kind.CATEGORY and p.distinct == 2)]
    if len(labels) == 1 and len(flags) == 1:
        customers.columns[labels[0]] = flags[0]
        customers.how[labels[0]] = "its values: the only two-valued column left"
        customers.unmapped.pop(labels[0], None)
    order = [f.name for f in contract.fields]
    customers.columns = {n: customers.columns[n] for n in order if n in customers.columns}


def draft_mapping(contract: Contract | str | Path, data_path: str | Path, delimiter: str | None = None,
                  sample_rows: int = 50_000, events: list[Path] | tuple[Path, ...] = ()) -> MappingDraft:
    """The customers export (or a purchase log) onto the contract; each of `events` (a
    purchases or interactions export beside it, its delimiter sniffed) onto an event table."""
    if not isinstance(contract, Contract):
        contract = Contract.load(contract)
    sample = read_sample(Path(data_path), delimiter, sample_rows)
    draft = match_export(contract, sample)
    for path in events:
        taken = {t.table for t in draft.tables}
        table, unused = match_events(contract, read_sample(Path(path), None, sample_rows), taken)
        draft.tables.append(table)
        draft.unused += [f"{Path(path).name}: {col}" for col in unused]
    return draft


def draft_partner_config(contract: Contract | str | Path, data_path: str | Path, name: str, partner_id: int,
                         delimiter: str | None = None, base: Path | None = None,
                         events: list[Path] | tuple[Path, ...] = ()) -> tuple[str, list[str]]:
    """A partner.toml (today's PartnerConfig format) mapping the export onto the contract,
    and the contract fields it could not map and export columns it did not use. `base`:
    the folder the partner.toml will be in (the data path is written relative to it)."""
    draft = draft_mapping(contract, data_path, delimiter, events=events)
    return draft.toml(name, partner_id, base), draft.leftovers()


# ---------------------------------------------------------------------------- rendering


def _path_text(path: Path, base: Path | None) -> str:
    path = path.resolve()
    if base is not None:
        try:
            return Path(os.path.relpath(path, base.resolve())).as_posix()
        except ValueError:  # another drive
            pass
    return path.as_posix()


def _sources(draft: MappingDraft) -> str:
    names = [draft.sample.path.name] + [t.sample.path.name for t in draft.tables if t.sample is not None]
    return " and ".join(names)


def render(draft: MappingDraft, name: str, partner_id: int, base: Path | None = None) -> str:
    """The drafted partner config as TOML, with a REVIEW comment on every inference."""
    import tomlkit

    s, c = draft.sample, draft.contract
    doc = tomlkit.document()
    for line in (
        f"Drafted by `fedcrm partner map` from {_sources(draft)} against contract {c.name!r} v{c.version} "
        f"(digest {c.digest()[:12]}).",
        "Every `# REVIEW:` line is an inference to confirm (then delete the line); [privacy] takes its defaults.",
    ):
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())
    doc.add("name", name)
    doc.add("partner_id", partner_id)
    doc.add("work_dir", "work")
    doc.add("secret_file", "secret.key")
    if c.source is not None:  # the node's own copy of the contract: a run under another one is refused
        doc.add("contract", _path_text(c.source, base))
    doc.add(tomlkit.comment('as_of = "YYYY-MM-DD"   # REVIEW: the date the export was taken (default: today)'))
    for note in draft.notes:
        doc.add(tomlkit.comment(f"REVIEW: {note}"))
    for col in draft.unused:
        doc.add(tomlkit.comment(f"export column {col!r} is not used"))
    for t in draft.tables:
        source = t.sample or s
        table = tomlkit.table()
        table.add("path", _path_text(source.path, base))
        table.add("format", source.format)
        if source.format == "csv":
            table.add("delimiter", source.delimiter or ",")
        if t.date_formats:
            table.add("date_formats", t.date_formats)
            table["date_formats"].comment("REVIEW: inferred from the sample; tried in order")
        table.add("money_unit", t.money_unit)
        if t.money_note:
            table["money_unit"].comment(f"REVIEW: {t.money_note}")
        if t.true_values:
            table.add("true_values", t.true_values)
        if t.false_values:
            table.add("false_values", t.false_values)
        for line in t.review:
            table.add(tomlkit.comment(f"REVIEW: {line}"))
        cols = tomlkit.table()
        for field_name, col in t.columns.items():
            cols.add(field_name, col)
            if t.how[field_name] not in ("same name",):
                cols[field_name].comment(f"REVIEW: matched by {t.how[field_name]}")
        for field_name, why in t.unmapped.items():
            cols.add(tomlkit.comment(f"{field_name} = ?   # not mapped: {why}"))
        table.add("columns", cols)
        if t.values or t.unresolved:
            values = tomlkit.table(is_super_table=True)
            for field_name in [f.name for f in c.table(t.table)]:  # type: ignore[arg-type]
                if field_name not in t.values and field_name not in t.unresolved:
                    continue
                vt = tomlkit.table()
                for raw, canonical in t.values.get(field_name, {}).items():
                    vt.add(raw, canonical)
                    vt[raw].comment("REVIEW: guessed")
                vocab = c.field(field_name, t.table).vocabulary  # type: ignore[arg-type]
                for raw in t.unresolved.get(field_name, []):
                    vt.add(tomlkit.comment(f'"{_escape(raw)}" = "?"   # REVIEW: one of {", ".join(vocab or [])}'))
                values.add(field_name, vt)
            table.add("values", values)
        doc.add(t.table, table)
    return tomlkit.dumps(doc)


def _escape(text: str) -> str:
    return re.sub(r'(["\\])', r"\\\1", text)
