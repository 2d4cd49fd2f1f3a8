"""What an error reply may say when it leaves the node: a code and a redacted reason.

An error's full text is for the partner (the node's error log, `work/node-errors.jsonl`);
the coordinator gets enough to act on and nothing of the node's disk or data:

* no absolute paths: a path becomes its file name (`/srv/crm/export.csv` → `export.csv`);
* no file contents: a `MappingError` / `DataError` keeps the partner, file name, row and
  column its header names; in its detail every quoted value and every list (a raw cell,
  the columns a file has, which may be a data line when the header is missing) is dropped.
  Exceptions fedcrm did not raise on purpose are treated the same way;
* one line, at most `MAX_REASON` characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

MAX_REASON = 400
HIDDEN = "…"
PATH = "<path>"

# errors whose text is built from fedcrm's own config, ledger or checks (no raw data)
OWN_TEXT = {"ConfigError", "PrivacyBudgetError", "PolicyRefusal", "EgressViolation"}
DATA_ERRORS = {"MappingError", "DataError"}

_TYPED = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)\s*:\s*(?P<text>.*)$", re.S)
_EGRESS = re.compile(r"^egress refused on node: ")
_MAPPING = re.compile(r"^partner (?P<partner>'[^'\n]*'|\"[^\"\n]*\"), file (?P<file>.+?), "
                      r"column (?P<column>'[^'\n]*'|\"[^\"\n]*\"): (?P<detail>.*)$", re.S)
_DATA = re.compile(r"^file (?P<file>.+?)(?P<row>, row \d+)?(?:, column (?P<column>'[^'\n]*'|\"[^\"\n]*\"))?"
                   r": (?P<detail>.*)$", re.S)
_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_LIST = re.compile(r"\[(?!Errno \d+\])[^\[\]]*\]|\{[^{}]*\}")  # an OSError's [Errno 2] stays
# an absolute POSIX path (not the tail of a relative one or a URL's host part), ~/…, C:\…
_ABS_PATH = re.compile(r"(?<![\w.~/-])(?:~|[A-Za-z]:)?[/\\](?:[^\s'\",;:()\[\]{}<>]+)")
_URL = re.compile(r"\bfile://\S+")


def _name(path: str) -> str:
    path = path.strip().strip("'\"")
    name = (PureWindowsPath(path) if "\\" in path else PurePosixPath(path)).name
    return name or PATH


def _strip_paths(text: str, known: dict[str, str]) -> str:
    for full, name in sorted(known.items(), key=lambda kv: -len(kv[0])):  # longest first: a dir's file before the dir
        text = text.replace(full, name)
    text = _URL.sub(PATH, text)
    return _ABS_PATH.sub(lambda m: _name(m.group(0)), text)


def _scrub_values(text: str, keep: set[str]) -> str:
    """Drop every quoted value and list: only file names the node knows survive."""
    def quoted(m: re.Match[str]) -> str:
        inner = m.group(0)[1:-1]
        return m.group(0) if inner in keep else f"'{HIDDEN}'"
    text = _QUOTED.sub(quoted, text)
    previous = None
    while previous != text:  # nested lists, innermost first
        previous, text = text, _LIST.sub(f"<{HIDDEN}>", text)
    return text.replace(f"<{HIDDEN}>", f"[{HIDDEN}]")


def _data_error(kind: str, text: str, known: dict[str, str], keep: set[str]) -> str:
    pattern = _MAPPING if kind == "MappingError" else _DATA
    m = pattern.match(text)
    if m is None:
        return _scrub_values(_strip_paths(text, known), keep)
    head = []
    if kind == "MappingError":
        head.append(f"partner {m['partner']}")
    head.append(f"file {_name(m['file'])}")
    if kind == "DataError" and m["row"]:
        head[-1] += m["row"]
    if m["column"]:
        head.append(f"column {m['column']}")
    return ", ".join(head) + ": " + _scrub_values(_strip_paths(m["detail"], known), keep)


def redact_reason(reason: str, paths: Iterable[Path | str] = ()) -> str:
    """The reason an error reply may carry off the node. `paths`: files and folders of this
    node (its work dir, its raw files) that are always replaced, even if a regex would miss
    them (a path with spaces, a relative path)."""
    known: dict[str, str] = {}
    for p in paths:
        for form in {str(p), str(Path(p).resolve()) if str(p) else ""}:
            if form and form not in (".", "/"):
                known[form] = Path(form).name or PATH
    keep = {name for name in known.values() if name != PATH}
    text = " ".join(str(reason).split())  # one line
    m = _TYPED.match(text)
    kind, body = (m["type"], m["text"]) if m else ("", text)
    if _EGRESS.match(text):
        out = _strip_paths(text, known)
    elif kind.rsplit(".", 1)[-1] in DATA_ERRORS:
        out = f"{kind}: {_data_error(kind.rsplit('.', 1)[-1], body, known, keep)}"
    elif kind.rsplit(".", 1)[-1] in OWN_TEXT:
        out = f"{kind}: {_strip_paths(body, known)}"
    else:  # anything else may quote whatever it was handed: paths become names, values go
        out = _scrub_values(_strip_paths(text, known), keep | {_name(q) for q in _quoted_paths(text)})
    if len(out) > MAX_REASON:
        out = out[:MAX_REASON - 1].rstrip() + HIDDEN
    return out


def _quoted_paths(text: str) -> list[str]:
    """Quoted absolute paths (`'/srv/x.csv'` in an OSError): their names may stay."""
    return [q[1:-1] for q in _QUOTED.findall(text) if _ABS_PATH.fullmatch(q[1:-1])]
