"""Reading config files: TOML in, pydantic models out, errors that name the file.

A simulated node answers every message in the same long-lived process, and each message
names its configs afresh; parsing is cached by file content so that costs nothing twice.
"""

from __future__ import annotations

import hashlib
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fedcrm.errors import ConfigError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Loaded = TypeVar("_Loaded")


def load_cached(cls: type[_Loaded], path: Path) -> _Loaded:
    """A simulated node answers every message in the same long-lived process, and each
    message names its configs afresh: parsing a 1000-member federation file per message
    made a round quadratic in partners. Keyed by the file's content, an edited config is
    read again however quickly it was rewritten."""
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return cls._load(path)  # the loader names the missing file
    return _parsed(cls, path, digest)


@lru_cache(maxsize=256)
def _parsed(cls: type[_Loaded], path: Path, digest: str) -> _Loaded:  # noqa: ARG001 (cache key)
    return cls._load(path)


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def pretty(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )
