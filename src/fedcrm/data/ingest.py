"""Read a partner's raw export and rename its columns to the contract's fields.

Everything is read as text: parsing belongs to `standardise`, where a bad value can be
quarantined with its row and column instead of failing the whole file or being coerced
silently by a reader's type inference.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fedcrm.config import TableSpec
from fedcrm.errors import DataError, MappingError

ROW = "_row"  # 1-based data row number in the source file (header not counted)


def read_table(mapping: TableSpec) -> pd.DataFrame:
    """Read the raw file as strings; `ROW` holds each row's position in the file."""
    path = mapping.path
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty (not even a header)")
    if mapping.file_format == "parquet":
        try:
            frame = pq.read_table(path).to_pandas()
        except Exception as exc:  # pyarrow raises several unrelated types
            raise DataError(path, f"not a readable Parquet file: {exc}") from None
        # typed Parquet columns stay typed: standardise parses each distinct value once
    else:
        try:
            frame = pd.read_csv(
                path, sep=r"\s+" if mapping.delimiter == "whitespace" else mapping.delimiter, dtype=str,
                keep_default_na=False, encoding=mapping.encoding, skipinitialspace=False,
            )
        except pd.errors.EmptyDataError:
            raise DataError(path, "file is empty (not even a header)") from None
        except pd.errors.ParserError as exc:
            line = re.search(r"line (\d+)", str(exc))
            raise DataError(
                path,
                f"malformed CSV ({exc}); fix the row or the delimiter "
                f"(configured {mapping.delimiter!r})",
                row=int(line.group(1)) - 1 if line else None,
            ) from None
        except UnicodeDecodeError as exc:
            raise DataError(path, f"not {mapping.encoding} text: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(path, f"has a header ({len(frame.columns)} columns) but no data rows")
    frame[ROW] = np.arange(1, len(frame) + 1)  # appended, not inserted: no copy of the table
    return frame


def apply_mapping(frame: pd.DataFrame, mapping: TableSpec, partner: str) -> pd.DataFrame:
    """Keep only mapped columns, renamed to their pipeline names (`TableSpec.pipeline_columns`)."""
    available = [c for c in frame.columns if c != ROW]
    for canonical, raw in mapping.columns.items():
        if raw not in frame.columns:
            hint = ""
            if len(available) == 1 and any(d in available[0] for d in ",;|\t"):
                hint = f" (the file parsed as one column: is delimiter {mapping.delimiter!r} right?)"
            raise MappingError(
                partner, mapping.path, raw,
                f"mapped to contract field {canonical!r} but not in the file; columns are {available}{hint}",
            )
    for raw in mapping.columns.values():
        column = frame[raw]
        if column.dtype == object:
            first = column.dropna().head(1).tolist()
            if first and isinstance(first[0], (list, tuple, dict, np.ndarray)):
                raise DataError(mapping.path, f"holds {type(first[0]).__name__} values (a nested Parquet column), "
                                "not one value per row: flatten it in the export, or leave it unmapped", column=raw)
    columns = mapping.pipeline_columns()
    out = frame[[ROW, *columns.values()]]  # copy-on-write: no eager copy
    out.columns = [ROW, *columns.keys()]
    return out

