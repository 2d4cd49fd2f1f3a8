"""Rewrite the README's generated blocks from the code that owns them.

    .venv/bin/python scripts/readme_sync.py          # rewrite
    .venv/bin/python scripts/readme_sync.py --check  # exit 1 if the README is behind

Blocks sit between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`; `egress` is
`fedcrm.protocol.egress_markdown()` (what leaves a node). tests/test_protocol.py runs --check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from fedcrm.protocol import egress_markdown

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = {"egress": egress_markdown}


def synced(text: str) -> str:
    for name, make in BLOCKS.items():
        pattern = re.compile(rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no generated:{name} block")
        text = pattern.sub(lambda m: m.group(1) + make() + m.group(2), text)
    return text


def main() -> None:
    text = README.read_text()
    new = synced(text)
    if "--check" in sys.argv:
        if new != text:
            raise SystemExit("README.md is behind the code: run `.venv/bin/python scripts/readme_sync.py`")
        return
    README.write_text(new)


if __name__ == "__main__":
    main()
