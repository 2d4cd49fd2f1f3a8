"""The consortium's data contract: fields, features and tasks as data (a TOML file), its
validation and digest (`model`), drafting a contract from an export (`draft`) and drafting
a partner's mapping onto a contract (`mapping`)."""

from fedcrm.contract.model import (
    Contract,
    ContractInfo,
    EventTable,
    Feature,
    FieldSpec,
    Generalise,
    GeneralisationRules,
    Grade,
    Kind,
    Label,
    QuasiIdentifier,
    Task,
)

__all__ = [
    "Contract", "ContractInfo", "EventTable", "Feature", "FieldSpec", "Generalise", "GeneralisationRules", "Grade",
    "Kind", "Label", "QuasiIdentifier", "Task",
]
