"""Laying out a consortium on one machine: each partner's folder (config, key, work dir)
standing in for its machine, and the federation config that names them."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from fedcrm.data.secret import create_secret

# IBM-Telco-style spellings ("Fiber optic", "Bank transfer (automatic)") → canonical values
TELCO_STYLE_VALUES = """
[customers.values.internet_service]
"fiber optic" = "fiber"
"no" = "none"

[customers.values.payment_method]
"bank transfer automatic" = "bank-transfer"
"credit card automatic" = "credit-card"
"""

def with_privacy_policy(partner_toml: str, epsilon_cap: float = 10.0, delta: float = 1e-5, **rules: object) -> str:
    """The partner's `[privacy]` table (cap, δ, and any other policy `rules`), placed before
    its first table."""
    block = tomli_w.dumps({"privacy": {"epsilon_cap": epsilon_cap, "delta": delta, "accountant": "prv", **rules}})
    head, sep, rest = partner_toml.partition("\n[")
    return f"{head}\n{block}\n[{rest}" if sep else f"{partner_toml}\n{block}"


def init_partner_folder(folder: Path, partner_toml: str, key_hex: str | None = None) -> Path:
    """Write a partner's config next to its data and give it a key (kept if present)."""
    (folder / "partner.toml").write_text(partner_toml)
    if not (folder / "secret.key").exists():
        create_secret(folder / "secret.key", key_hex=key_hex)
    return folder / "partner.toml"


def write_federation(out: Path, name: str, members: list[tuple[int, str]]) -> Path:
    """Federation config whose member i reads `<name>/partner.toml` beside it."""
    blocks = [f'[[members]]\npartner_id = {pid}\nname = "{m}"\nconfig = "{m}/partner.toml"\n' for pid, m in members]
    fed = out / "federation.toml"
    fed.write_text(f'name = "{name}"\n\n' + "\n".join(blocks))
    return fed
