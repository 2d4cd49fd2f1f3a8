"""The partner's key: the HMAC key its pseudonyms, its memo and its split derive from.

Created once on the node (`fedcrm partner init`), readable by its owner only, never sent.
Its own module, apart from the pseudonymisation that uses it: every node process reads the
key, and few of them pseudonymise anything (a deployed message answers from prepared
arrays and never imports pandas).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from fedcrm.errors import ConfigError

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
