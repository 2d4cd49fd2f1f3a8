"""Keyed pseudonyms and removal of direct identifiers, on the partner's node.

The key is a partner-held secret file (0600, `fedcrm.data.secret`). A keyed HMAC rather than a plain hash
because customer numbers are guessable: without the key nobody — the coordinator
included — can rebuild the id → pseudonym table by hashing candidate ids.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa


PID = "pid"


def _keyed_states(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after HMAC's inner and outer key blocks (RFC 2104), built as the
    standard library's own `hmac` builds them without OpenSSL. Copying these two states per
    id is HMAC-SHA256 without the `hmac` object's Python-level calls: at a million ids
    measured 2.5 times faster than copying a keyed `hmac` object, and 2.3 times faster than
    `hmac.digest`. `pseudonyms` checks a result against `hmac.new` all the same."""
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return hashlib.sha256(key.translate(hmac.trans_36)), hashlib.sha256(key.translate(hmac.trans_5C))


def _hex_strings(digests: bytes, width: int, index: pd.Index) -> pd.Series:
    """Concatenated digests → one hex string each, as an Arrow-backed text column built from
    one buffer: no Python string per id (those cost more than the hashing saved, and
    Arrow text is what the hold-out split and the Parquet files read fastest)."""
    n = len(digests) // width
    text = digests.hex().encode("ascii")
    offsets = np.arange(0, 2 * width * (n + 1), 2 * width, dtype=np.int64)
    hexes = pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    out = hexes.to_pandas()  # pandas' own text dtype: Arrow-backed (no copy) from pandas 3 on
    out.index = index
    return out


def pseudonyms(ids: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each id (as UTF-8 text), hex, Arrow-backed text with the ids' index."""
    values = pa.array(ids.astype(str), from_pandas=True).cast(pa.large_binary()).to_pylist()
    inner_key, outer_key = _keyed_states(key)
    digests = []
    for value in values:
        inner = inner_key.copy()
        inner.update(value)
        outer = outer_key.copy()
        outer.update(inner.digest())
        digests.append(outer.digest())
    if digests and digests[0] != hmac.new(key, values[0], hashlib.sha256).digest():
        raise AssertionError("pseudonyms: the keyed SHA-256 states disagree with hmac")
    return _hex_strings(b"".join(digests), hashlib.sha256().digest_size, ids.index)


def pseudonymise(frame: pd.DataFrame, key: bytes, identifiers: list[str] | tuple[str, ...] = ()
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replace customer_id by its pseudonym and drop the contract's direct identifiers
    (`Contract.identifiers()`; the caller passes them: the contract is the authority).

    Returns the pseudonymised frame and the local lookup (pid → customer_id) that lets the
    partner join scores back to its own customers; the lookup never leaves the node.
    """
    pids = pseudonyms(frame["customer_id"], key)
    lookup = pd.DataFrame({PID: pids, "customer_id": frame["customer_id"].astype(str)})
    dropped = [c for c in (*identifiers, "customer_id") if c in frame.columns]
    out = frame.drop(columns=dropped)
    out.insert(0, PID, pids)
    return out, lookup
