"""Keyed pseudonyms and removal of direct identifiers, on the partner's node.

The key is a partner-held secret file (0600). A keyed HMAC rather than a plain hash
because customer numbers are guessable: without the key nobody — the coordinator
included — can rebuild the id → pseudonym table by hashing candidate ids.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

import pandas as pd

from fedcrm.errors import ConfigError

PID = "pid"
KEY_BYTES = 32


def create_secret(path: Path, *, overwrite: bool = False, key_hex: str | None = None) -> Path:
    """Write a fresh random HMAC key readable by the owner only. `key_hex` is for public
    benchmark data only, where a key derived from the seed makes the held-out split (by
    keyed pseudonym) the same on every run; a real partner's key is always random."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"secret {path} exists already; refusing to replace a partner's key") from None
    with os.fdopen(fd, "w") as fh:
        fh.write((key_hex or secrets.token_hex(KEY_BYTES)) + "\n")
    os.chmod(path, 0o600)
    return path


def load_secret(path: Path) -> bytes:
    """Read the key, refusing one that others can read or that is too short."""
    if not path.is_file():
        raise ConfigError(f"secret file {path} not found (create it with `fedcrm partner init`)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"secret file {path} has mode {oct(mode)}; it must be 0600 (owner only)")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"secret file {path} must hold a hex key") from None
    if len(key) < KEY_BYTES:
        raise ConfigError(f"secret file {path} holds {len(key)} bytes; at least {KEY_BYTES} are needed")
    return key


def pseudonyms(ids: pd.Series, key: bytes) -> pd.Series:
    """HMAC-SHA256 of each id (as text), hex. Copying a keyed HMAC object is the fastest
    way per id here (measured: faster than `hmac.digest` one-shot calls)."""
    base = hmac.new(key, digestmod=hashlib.sha256)
    out = []
    for value in ids.astype(str).tolist():
        h = base.copy()
        h.update(value.encode("utf-8"))
        out.append(h.hexdigest())
    return pd.Series(out, index=ids.index, dtype=object)


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
