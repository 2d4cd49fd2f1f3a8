"""Exports no one here has seen: random field names, mixed kinds, a planted signal.

For tests and benchmarks of onboarding by configs alone (`contract draft` → `partner map`
→ ... → `fedcrm run`): a customers export with an id, a binary label, and 5 to 60 fields
of random names over every kind a contract knows (numbers, counts, money, low- and
high-cardinality categories, flags, dates, free text, a name and an email). The label
follows a logistic model of a few numeric, category and flag fields (the planted signal),
so a model that reads those columns beats 0.5 by a known margin; the names say nothing.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("number", "count", "money", "category", "wide_category", "flag", "date", "text")


@dataclass
class RandomExport:
    """What was written: the columns by kind and which of them carry the signal."""

    id_column: str
    label_column: str
    kinds: dict[str, str] = field(default_factory=dict)  # column -> kind (see KINDS)
    signal: list[str] = field(default_factory=list)  # columns the label depends on
    label_rate: float = 0.0


def _name(rng: np.random.Generator, taken: set[str]) -> str:
    """A random column name: letters and digits, sometimes with a space or a dash."""
    while True:
        n = int(rng.integers(4, 11))
        chars = rng.choice(list(string.ascii_letters + string.digits), size=n)
        name = "".join(chars)
        if name[0].isdigit():
            name = "c" + name
        if rng.random() < 0.2:
            name = name[:3] + rng.choice([" ", "-", "_"]) + name[3:]
        if name.lower() not in taken:
            taken.add(name.lower())
            return name


def random_export(path: Path, rows: int = 3000, fields: int = 12, seed: int = 0,
                  partners: int = 1, interaction: bool = False) -> tuple[RandomExport, list[Path]]:
    """Write `partners` CSV files (the rows split among them, same columns) of one
    random export; returns its description and the paths. `fields`: 5 to 60 besides id and
    label. `interaction`: the label follows only whether the first two number columns lie
    on the same side of their centre (an XOR: no linear model of the columns can read it)."""
    if not 5 <= fields <= 60:
        raise ValueError("fields: 5 to 60")
    rng = np.random.default_rng(seed)
    taken: set[str] = set()
    spec = RandomExport(id_column=_name(rng, taken), label_column=_name(rng, taken))
    kinds = list(KINDS) + list(rng.choice(KINDS[:6], size=max(fields - len(KINDS), 0)))  # every kind at least once
    kinds = kinds[:fields] if fields >= len(KINDS) else list(rng.choice(KINDS[:6], size=fields - 1)) + ["category"]
    data: dict[str, object] = {spec.id_column: [f"K{seed}-{i:06d}" for i in rng.permutation(rows)]}
    logit = np.full(rows, -1.0)
    for kind in kinds:
        col = _name(rng, taken)
        spec.kinds[col] = kind
        signal = kind in (("number",) if interaction else ("number", "money", "category", "flag")) and (
            len(spec.signal) < (2 if interaction else 4))
        if kind == "number":
            v = rng.normal(50, 12, rows)
            data[col] = np.round(v, 2)
            if signal and interaction:
                logit *= np.where(v > 50, 1.0, -1.0)  # -1 → ±1 → ±(±1): same side, or not
            elif signal:
                logit += 0.08 * (v - 50)
        elif kind == "count":
            data[col] = rng.poisson(3, rows)
        elif kind == "money":
            v = rng.lognormal(4, 0.8, rows)
            data[col] = np.round(v, 2)
            if signal:
                logit += 0.9 * (np.log(v) - 4)
        elif kind == "category":
            levels = [_name(rng, set()).lower() for _ in range(int(rng.integers(3, 6)))]
            v = rng.choice(levels, rows)
            data[col] = v
            if signal:
                logit += np.where(v == levels[0], 1.5, 0.0)
        elif kind == "wide_category":  # many values, a few frequent: a learned vocabulary's case
            levels = [f"{_name(rng, set()).lower()}" for _ in range(40)]
            p = np.r_[np.full(4, 0.2), np.full(36, 0.2 / 36)]
            data[col] = rng.choice(levels, rows, p=p)
        elif kind == "flag":
            v = rng.random(rows) < 0.4
            data[col] = np.where(v, "yes", "no")
            if signal:
                logit += np.where(v, 1.0, 0.0)
        elif kind == "date":
            start = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 3000, rows), unit="D")
            data[col] = start.strftime("%Y-%m-%d")
        else:  # free text
            data[col] = [f"note {w}" for w in rng.integers(0, 10_000, rows)]
        if signal:
            spec.signal.append(col)
    if interaction:
        if len(spec.signal) < 2:
            raise ValueError("an interaction needs two number columns: ask for more fields")
        logit = 2.5 * logit  # ±2.5: 92 % against 8 %
    y = rng.random(rows) < 1 / (1 + np.exp(-logit))
    data[spec.label_column] = np.where(y, "yes", "no")
    spec.label_rate = float(y.mean())
    frame = pd.DataFrame(data)
    path.mkdir(parents=True, exist_ok=True)
    paths = []
    for p, part in enumerate(np.array_split(np.arange(rows), partners)):
        out = path / f"export-{p + 1}.csv"
        frame.iloc[part].to_csv(out, index=False)
        paths.append(out)
    return spec, paths
