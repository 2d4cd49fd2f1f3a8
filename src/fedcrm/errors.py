"""Errors a partner or coordinator can act on: each names the file, row and column."""

from __future__ import annotations

from pathlib import Path


class FedcrmError(Exception):
    """Base of every error fedcrm raises on purpose."""


class ConfigError(FedcrmError):
    """A config file is missing, malformed or inconsistent."""


class MappingError(FedcrmError):
    """A partner's column mapping cannot be applied to its file."""

    def __init__(self, partner: str, file: Path, column: str, detail: str) -> None:
        self.partner, self.file, self.column = partner, file, column
        super().__init__(f"partner {partner!r}, file {file}, column {column!r}: {detail}")


class DataError(FedcrmError):
    """A raw file cannot be read as a table at all (so no row can be quarantined)."""

    def __init__(self, file: Path, detail: str, row: int | None = None, column: str | None = None) -> None:
        self.file, self.row, self.column = file, row, column
        where = f"file {file}"
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {detail}")


class PrivacyBudgetError(FedcrmError):
    """Training would exceed, or the history cannot prove, the partner's privacy budget."""


class AlreadyCharged(PrivacyBudgetError):
    """The ledger holds this release (run, round, kind) already: it is never computed and
    charged twice. The node may still send the kept copy when the input is the same
    (`fedcrm.privacy.replies`)."""


class PolicyRefusal(FedcrmError):
    """The run asks for something the partner's privacy policy does not allow (DP off, more
    ε or rounds than one run may take, a release kind the partner does not make, a hold-out
    too small to evaluate on); nothing was computed or released for it."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind, self.reason = kind, reason
        super().__init__(f"{kind} refused by the partner's privacy policy: {reason}")
