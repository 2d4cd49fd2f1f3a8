"""A contract's tables as the partner pipeline reads them: fields by their pipeline name.

The contract names its fields freely; the pipeline joins and derives by a few fixed roles
(the customer id every table carries, a purchase's date, order, quantity, price and amount,
an interaction's date and channel). Each table is seen under *pipeline names*: a customers
field keeps its contract name except the customer id (`customer_id`), and an event field
with a role takes that role's name (`tx_date`, `amount`, ...). Everything else about a field
(kind, grade, key, vocabulary, levels, missing-value and outlier rules) is the contract's.

A partner config that names no contract maps onto the standard contract shipped with the
package (`standard.toml`): the telecom and banking fields fedcrm started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from fedcrm.contract.model import Contract, FieldSpec, Kind, TableName

CUSTOMER_ID = "customer_id"
ROLE_NAMES: dict[str, dict[str, str]] = {  # event table -> role -> pipeline name
    "transactions": {"customer": CUSTOMER_ID, "date": "tx_date", "order": "tx_id", "product": "product",
                     "category": "category", "quantity": "quantity", "unit_price": "unit_price", "amount": "amount"},
    "interactions": {"customer": CUSTOMER_ID, "date": "ix_date", "channel": "channel"},
}


@lru_cache(maxsize=1)
def standard_contract() -> Contract:
    """The contract of partner configs and federations that name none."""
    return Contract.loads(files("fedcrm.contract").joinpath("standard.toml").read_text(encoding="utf-8"),
                          source="fedcrm/contract/standard.toml")


@lru_cache(maxsize=64)
def _load(path: Path, stamp: tuple[int, int]) -> Contract:  # noqa: ARG001 (cache key)
    return Contract.load(path)


def load_contract(path: Path | None) -> Contract:
    """The contract at `path` (parsed once per file version), or the standard one."""
    if path is None:
        return standard_contract()
    try:
        st = path.stat()
    except OSError:
        return Contract.load(path)  # names the missing file
    return _load(path, (st.st_mtime_ns, st.st_size))


@dataclass(frozen=True)
class TableSchema:
    """One table of a contract under pipeline names."""

    table: TableName
    fields: dict[str, FieldSpec]  # pipeline name -> the contract's field
    internal: dict[str, str] = field(default_factory=dict)  # contract name -> pipeline name

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def __getitem__(self, name: str) -> FieldSpec:
        return self.fields[name]

    def get(self, name: str) -> FieldSpec | None:
        return self.fields.get(name)

    def key_fields(self) -> list[str]:
        return [n for n, f in self.fields.items() if f.key]

    def contract_name(self, name: str) -> str:
        """The contract's name of a pipeline column (for messages the partner reads)."""
        return self.fields[name].name if name in self.fields else name

    def of_kind(self, *kinds: Kind) -> list[str]:
        return [n for n, f in self.fields.items() if f.kind in kinds]


def table_schema(contract: Contract, table: TableName = "customers") -> TableSchema:
    internal: dict[str, str] = {}
    for f in contract.table(table):
        if table == "customers":
            internal[f.name] = CUSTOMER_ID if f is contract.customer_id else f.name
        else:
            internal[f.name] = ROLE_NAMES[table].get(f.role or "", f.name)
    fields = {internal[f.name]: f for f in contract.table(table)}
    return TableSchema(table=table, fields=fields, internal=internal)


def spellings(spec: FieldSpec) -> tuple[str, ...]:
    """A category's declared spellings (none for a learned vocabulary)."""
    return tuple(spec.vocabulary) if isinstance(spec.vocabulary, list) else ()
