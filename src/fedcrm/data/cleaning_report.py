"""What cleaning did to one table, in counts: the partner's data-quality report, and a
part of every prepared summary. No values, so it may be shown wherever the counts may.
Its own module: the prepared-data cache reads it without importing the cleaning code
(pandas)."""

from __future__ import annotations

from pydantic import BaseModel


class CleaningReport(BaseModel):
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    duplicates: int
    unreadable_by_field: dict[str, int]
    filled_by_field: dict[str, int]
    completeness_pct: dict[str, float]
