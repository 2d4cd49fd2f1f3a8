"""A partner's prepared data: the arrays the pipeline hands the node, and their cache.

`fedcrm.data.prepare` builds them from the raw export (pandas, pyarrow, DuckDB); this
module names, writes and reads them, and knows what they depend on, with numpy and the
configs alone. A node answering a message reads its arrays from the cache (`prepared`),
so a deployed SuperNode's fresh ClientApp process, one per message, never imports the
pipeline's libraries (importing our ClientApp: 3.63 s against 4.65 s with them, the
start-up section of `benchmarks/overhead.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from fedcrm.config import PartnerConfig
from fedcrm.contract.model import Contract, Task
from fedcrm.data.cleaning_report import CleaningReport
from fedcrm.data.layout import FeatureLayout
from fedcrm.data.secret import load_secret
from fedcrm.errors import MappingError
from fedcrm.privatefiles import private_dir, private_replace

PIPELINE_VERSION = "6"  # 4: fields, features and labels from the contract; 5: time-to-churn labels; 6: populations
DERIVED_LABEL = "_label"  # the column of a label derived from purchases


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
    features: list[str] = []
    cleaning: CleaningReport
    outside_population: int = Field(0, description="clean customers the task leaves out: not yet customers at the "
                                    "cutoff, under a label with population = 'bought-by-cutoff' (`task_rows`)")


@dataclass(frozen=True)
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    summary: PreparedSummary
    # learned blocks still waiting for their levels: value -> training rows holding it
    # (raw counts: node-local, never released as they are; see `fedcrm.ml.vocabulary`)
    learned_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def dataset_fingerprint(self) -> str:
        return self.summary.dataset_fingerprint


def as_of_date(cfg: PartnerConfig) -> date:
    return date.fromisoformat(cfg.as_of) if cfg.as_of else date.today()


def task_of(cfg: PartnerConfig, task: str) -> Task:
    """The contract's task; a task the contract does not define is a config error."""
    return cfg.contract_model.task(task)


def label_field(cfg: PartnerConfig, task: str) -> str:
    """The label column: the task's label field when the partner maps it, else the label
    derived from purchases (which needs a purchases export)."""
    label = task_of(cfg, task).label
    if label.field is not None and label.field in cfg.customers.columns:
        return label.field
    if label.derived is not None and cfg.transactions is not None:
        if label.derived == "bought-category" and not (label.category or cfg.activity.target_category):
            raise MappingError(cfg.name, cfg.customers.path, label.field or task,
                               f"task {task!r} derives its label from purchases of a category: set "
                               "activity.target_category in the partner config")
        return DERIVED_LABEL
    ways = ([f"map the contract's label field {label.field!r} to a raw column"] if label.field else []) + (
        ["name a purchases export ([transactions])"] if label.derived else [])
    raise MappingError(cfg.name, cfg.customers.path, label.field or task, f"task {task!r} needs a label: "
                       + " or ".join(ways))


def holdout_split(cfg: PartnerConfig) -> str:
    """An id of the partner's hold-out split: which side a customer is on depends only on
    its pseudonym, so on the key. A keyed digest: names the split, reveals nothing of the key."""
    return hmac.new(load_secret(cfg.secret_file), b"fedcrm hold-out split v1", hashlib.sha256).hexdigest()[:16]


def cache_dir(cfg: PartnerConfig, task: str, test_fraction: float, layout: FeatureLayout, fingerprint: str,
              key: bytes) -> Path:
    """The folder of one prepared dataset, named by everything its arrays depend on: a
    changed export, mapping, rule, contract, layout, key or pipeline is a new folder."""
    parts = {
        "v": PIPELINE_VERSION,
        "contract": cfg.contract_model.digest(),
        "layout": layout.model_dump(mode="json"),
        "data": fingerprint,
        "mapping": cfg.customers.model_dump(mode="json"),
        "cleaning": cfg.cleaning.model_dump(mode="json"),
        "transactions": cfg.transactions.model_dump(mode="json") if cfg.transactions else None,
        "interactions": cfg.interactions.model_dump(mode="json") if cfg.interactions else None,
        "activity": cfg.activity.model_dump(mode="json"),
        "generalisation": cfg.generalisation.model_dump(mode="json"),
        "as_of": as_of_date(cfg).isoformat(),
        "task": task,
        "test_fraction": test_fraction,
        "key": hashlib.sha256(key).hexdigest(),
    }
    return cfg.work_dir / "prepared" / hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def dataset_fingerprint(cfg: PartnerConfig) -> str:
    """sha256 over every raw file the node trains on: the privacy account's dataset."""
    parts = [file_fingerprint(cfg.customers.path)]
    for events in (cfg.transactions, cfg.interactions):
        if events is not None:
            parts.append(file_fingerprint(events.path))
    return parts[0] if len(parts) == 1 else hashlib.sha256("".join(parts).encode()).hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of the raw bytes: identifies the dataset a privacy history belongs to."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_LAYOUTS: dict[str, FeatureLayout] = {}


def contract_layout(contract: Contract) -> FeatureLayout:
    """The contract's feature layout, built once per contract in a process: a simulation
    process serves a thousand partners on one contract, and each node's first message
    built it anew (2 ms; `benchmarks/overhead.py`). Layouts are frozen, so one is shared."""
    digest = contract.digest()
    if digest not in _LAYOUTS:
        _LAYOUTS[digest] = FeatureLayout.from_contract(contract)
    return _LAYOUTS[digest]


def partner_layout(cfg: PartnerConfig) -> FeatureLayout:
    """The layout of the partner's contract, with the contract's generalisation widths
    unless the partner's own are coarser (a partner may generalise more, never less)."""
    layout = contract_layout(cfg.contract_model)
    return layout.model_copy(update={"age_band_years": max(layout.age_band_years, cfg.generalisation.age_band_years)})


def save_cached(cache_dir: Path, data: PreparedData) -> None:
    private_dir(cache_dir.parent)  # work/prepared: every partner's cached features
    private_dir(cache_dir)
    # each file replaced whole, so two processes preparing one partner at once cannot mix them
    with private_replace(cache_dir / "arrays.npz", "wb") as fh:
        np.savez(fh, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    if data.learned_counts:
        with private_replace(cache_dir / "learned_counts.json", "w") as fh:
            json.dump(data.learned_counts, fh)
    with private_replace(cache_dir / "summary.json", "w") as fh:  # written last: it marks a complete cache
        fh.write(data.summary.model_dump_json(indent=2))


def load_cached(cache_dir: Path, layout: FeatureLayout) -> PreparedData:
    arrays = np.load(cache_dir / "arrays.npz")
    summary = PreparedSummary.model_validate_json((cache_dir / "summary.json").read_text())
    if summary.features != layout.fixed_part().names():
        raise AssertionError(f"stale cache {cache_dir}: feature layout changed")
    counts_file = cache_dir / "learned_counts.json"
    counts = json.loads(counts_file.read_text()) if counts_file.is_file() else {}
    return PreparedData(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], summary, counts)


def prepared(cfg: PartnerConfig, task: str, test_fraction: float = 0.2, layout: FeatureLayout | None = None
             ) -> PreparedData:
    """The partner's prepared arrays for `task`: the cached ones, else the pipeline's
    (`fedcrm.data.prepare.prepare`, imported only then)."""
    layout = layout or partner_layout(cfg)
    folder = cache_dir(cfg, task, test_fraction, layout, dataset_fingerprint(cfg), load_secret(cfg.secret_file))
    if (folder / "summary.json").is_file():
        return load_cached(folder, layout)
    from fedcrm.data.prepare import prepare

    return prepare(cfg, task, test_fraction, layout=layout)
