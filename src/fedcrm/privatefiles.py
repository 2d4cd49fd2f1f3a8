"""Files only the node's owner may read: 0600 files in 0700 folders, from creation.

Everything on a partner node that holds raw values, linkage or privacy state (quarantine,
pseudonym lookup, tags, the prepared cache, scores, the privacy ledger, kept replies, the
egress and error logs, audits, keys) is written through these helpers. Files are created
by `os.open(..., 0o600)` and folders by `os.mkdir(..., 0o700)`, so no other user can open
them even for an instant, whatever the process umask; a file or folder left wider by an
older version is narrowed when it is written again.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700

_FLAGS = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
          "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}


def private_dir(path: Path | str, *, tighten: bool = True) -> Path:
    """Create `path` and any missing parents as 0700 folders. With `tighten` an existing
    `path` (not its parents) is narrowed to 0700 too; pass `tighten=False` for a folder the
    user named (an `--out` folder), whose other contents are theirs."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, DIR_MODE)  # umask can only narrow this
        except FileExistsError:  # another process or thread made it first
            continue
        _narrow(folder, DIR_MODE)  # e.g. an odd umask that dropped the owner's bits
    if tighten and path not in missing:
        _narrow(path, DIR_MODE)
    return path


def _narrow(path: Path, mode: int) -> None:
    if stat.S_IMODE(os.stat(path).st_mode) != mode:
        os.chmod(path, mode)


def _private_fd(path: Path, kind: str) -> int:
    """`path` opened for writing (`kind`: "w", "a" or "x"), created 0600 in 0700 folders,
    narrowed to 0600 if it was wider; the caller closes the descriptor."""
    private_dir(path.parent, tighten=False)
    fd = os.open(path, _FLAGS[kind] | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_open(path: Path | str, mode: str = "wb", *, encoding: str | None = None) -> IO[Any]:
    """Open `path` for writing ("w", "a" or "x", text or "b"), created 0600; missing
    parent folders are created 0700. A file that exists with a wider mode is narrowed
    before anything is written to it."""
    kind = mode.replace("b", "").replace("+", "")
    if kind not in _FLAGS:
        raise ValueError(f"private_open is for writing ('w', 'a', 'x'), not {mode!r}")
    fd = _private_fd(Path(path), kind)
    try:
        if "b" in mode:
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding=encoding or "utf-8")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def private_replace(path: Path | str, mode: str = "wb", *, encoding: str | None = None) -> Iterator[IO[Any]]:
    """Write a new version of `path` in a temporary file of its own (0600, beside it) and
    put it in place in one step when the block ends; if the block raises, `path` is left
    as it was. Two processes writing the same file at once each replace it whole: a reader
    never sees a mix or a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with private_open(tmp, mode.replace("a", "w").replace("x", "w"), encoding=encoding) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def private_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path`, a 0600 file from the start."""
    with private_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def private_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path`, a 0600 file from the start."""
    with private_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def private_append_line(path: Path | str, line: str) -> Path:
    """Append one line to a 0600 log (created on first use) by one `write` on a file
    opened O_APPEND: processes appending at once never interleave within a line. Plain
    os calls, no buffered file object: a simulated node logs every message it answers."""
    path = Path(path)
    fd = _private_fd(path, "a")
    try:
        os.write(fd, (line if line.endswith("\n") else line + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return path


# the name `fedcrm.ops.pki` has always used for its keys
write_private = private_write_bytes
