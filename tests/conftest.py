"""Shared fixtures: a generated demo consortium, the Telco split, Flower's environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fedcrm.demo_data import generate
from fedcrm.launcher import FLWR_ENV
from fedcrm.public_data import TELCO_CSV, split_telco

os.environ.update(FLWR_ENV)


@pytest.fixture(scope="session")
def demo_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the three-partner demo consortium for the whole session."""
    return generate(tmp_path_factory.mktemp("demo") / "consortium")


@pytest.fixture()
def fresh_demo(tmp_path: Path) -> Path:
    """A consortium of one's own, for tests that spend privacy budget or write caches."""
    return generate(tmp_path / "consortium")


@pytest.fixture(scope="session")
def telco_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TELCO_CSV.is_file():
        pytest.skip(f"IBM Telco file not found at {TELCO_CSV} (../shared/datasets/telco-churn)")
    return split_telco(tmp_path_factory.mktemp("telco"))


def copy_partner(src_config: Path, dst: Path) -> Path:
    """Copy one partner's folder (data, config, key) to a scratch place, keeping modes."""
    shutil.copytree(src_config.parent, dst, dirs_exist_ok=True)
    return dst / src_config.name
