"""The partner-side pipeline, end to end: raw export → training tensors, cached on the node.

load → map → standardise → clean → pseudonymise → generalise → features + labels → split.
Everything written here stays in the partner's work dir: the quarantine (with raw values,
so the partner can fix them), the pseudonym lookup, and the prepared arrays that later
rounds and runs reuse instead of redoing the work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from fedcrm.clean import REASON, Cleaned, Cleaner, CleaningReport
from fedcrm.config import PartnerConfig
from fedcrm.errors import MappingError
from fedcrm.features import build_matrix, derive_generalised, feature_names
from fedcrm.ingest import ROW, apply_mapping, file_fingerprint, read_table
from fedcrm.pseudonymise import PID, load_secret, pseudonymise
from fedcrm.schema import LABEL_SOURCES
from fedcrm.standardise import standardise

PIPELINE_VERSION = "1"


class PreparedSummary(BaseModel):
    """What a partner (and only it) sees about its prepared data."""

    partner: str
    task: str
    dataset_fingerprint: str
    as_of: str
    n_train: int
    n_test: int
    label_rate_train: float
    n_features: int
    cleaning: CleaningReport


@dataclass(frozen=True)
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    summary: PreparedSummary

    @property
    def dataset_fingerprint(self) -> str:
        return self.summary.dataset_fingerprint


def as_of_date(cfg: PartnerConfig) -> date:
    return date.fromisoformat(cfg.as_of) if cfg.as_of else date.today()


def label_field(cfg: PartnerConfig, task: str) -> str:
    name = LABEL_SOURCES[task]
    if name not in cfg.customers.columns:
        raise MappingError(cfg.name, cfg.customers.path, name,
                           f"task {task!r} needs a label source: map canonical {name!r} to a raw column")
    return name


def test_mask(pids: pd.Series, fraction: float) -> np.ndarray:
    """Hold-out by pseudonym: stable across runs, independent of file order."""
    bucket = pids.str.slice(0, 8).map(lambda h: int(h, 16)).to_numpy() / float(16**8)
    return bucket < fraction


def _cache_key(cfg: PartnerConfig, task: str, test_fraction: float, fingerprint: str, key: bytes) -> str:
    parts = {
        "v": PIPELINE_VERSION,
        "data": fingerprint,
        "mapping": cfg.customers.model_dump(mode="json"),
        "cleaning": cfg.cleaning.model_dump(mode="json"),
        "as_of": as_of_date(cfg).isoformat(),
        "task": task,
        "test_fraction": test_fraction,
        "key": hashlib.sha256(key).hexdigest(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def load_and_clean(cfg: PartnerConfig, key_fields: list[str]) -> tuple[pd.DataFrame, Cleaned]:
    """Read, map, standardise and clean the customers export; returns the mapped raw text too."""
    raw = apply_mapping(read_table(cfg.customers), cfg.customers, cfg.name)
    typed = standardise(raw, cfg.customers)
    return raw, Cleaner(cfg.cleaning, as_of_date(cfg), key_fields=key_fields)(typed.frame, typed.unreadable)


def prepare(cfg: PartnerConfig, task: str, test_fraction: float = 0.2, use_cache: bool = True) -> PreparedData:
    """Run (or reuse) the whole pipeline for one partner and task."""
    key = load_secret(cfg.secret_file)
    target = label_field(cfg, task)
    fingerprint = file_fingerprint(cfg.customers.path)
    cache_dir = cfg.work_dir / "prepared" / _cache_key(cfg, task, test_fraction, fingerprint, key)
    if use_cache and (cache_dir / "summary.json").is_file():
        return _load(cache_dir)

    as_of = as_of_date(cfg)
    raw, cleaned = load_and_clean(cfg, key_fields=["customer_id", target])
    pseudo, lookup = pseudonymise(cleaned.clean, key)
    general = derive_generalised(pseudo, as_of)
    x = build_matrix(general)
    y = general[target].to_numpy(dtype=np.float32)
    test = test_mask(general[PID], test_fraction)

    summary = PreparedSummary(
        partner=cfg.name, task=task, dataset_fingerprint=fingerprint, as_of=as_of.isoformat(),
        n_train=int((~test).sum()), n_test=int(test.sum()),
        label_rate_train=float(y[~test].mean()) if (~test).any() else 0.0,
        n_features=x.shape[1], cleaning=cleaned.report,
    )
    data = PreparedData(x[~test], y[~test], x[test], y[test], summary)
    _write_local_outputs(cfg, raw, cleaned.quarantine, lookup)
    _save(cache_dir, data)
    return data


def _write_local_outputs(cfg: PartnerConfig, raw: pd.DataFrame, quarantine: pd.DataFrame, lookup: pd.DataFrame) -> None:
    """Quarantine (raw values + reason) and pseudonym lookup: for the partner's eyes only."""
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    q = quarantine.merge(raw.astype({c: "string" for c in raw.columns if c != ROW}), on=ROW, how="left")
    q = q[[ROW, REASON, *[c for c in q.columns if c not in (ROW, REASON)]]]
    q.to_parquet(cfg.work_dir / "quarantine.parquet", index=False)
    lookup.to_parquet(cfg.work_dir / "pseudonym_lookup.parquet", index=False)


def _save(cache_dir: Path, data: PreparedData) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache_dir / "arrays.npz", x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    tmp = cache_dir / "summary.json.tmp"
    tmp.write_text(data.summary.model_dump_json(indent=2))
    tmp.replace(cache_dir / "summary.json")  # written last: its presence marks a complete cache


def _load(cache_dir: Path) -> PreparedData:
    arrays = np.load(cache_dir / "arrays.npz")
    summary = PreparedSummary.model_validate_json((cache_dir / "summary.json").read_text())
    if summary.n_features != len(feature_names()):
        raise AssertionError(f"stale cache {cache_dir}: feature layout changed")
    return PreparedData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], summary)
