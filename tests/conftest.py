"""Shared fixtures: a generated demo consortium, the Telco split, Flower's environment."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

# One intra-op thread per torch process (this one, and every SuperNode, ClientApp and CLI
# process the tests start, which inherit it), unless the caller set it: the suite runs
# several torch processes at once on a small machine (three partners' nodes, Flower's
# ServerApp, pytest itself), and OpenMP threads that spin for a core another process holds
# turn a 10 s training into minutes (test_audit: 10 s alone, 120 s beside a busy neighbour).
# Ray's simulation workers already run with one. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from fedcrm.sandbox.demo_data import generate  # noqa: E402
from fedcrm.ops.launcher import FLWR_ENV  # noqa: E402
from fedcrm.sandbox.public_data import TELCO_CSV, split_telco  # noqa: E402

os.environ.update(FLWR_ENV)


# The longest files, longest first, by their tests' summed durations in a full run
# (`bash scripts/test.sh --durations=30`, 2026-12-01: 400, 360, 310, 240, 225, 195, 160,
# 160 s). Started first, they leave the short files to fill the gaps at the end.
LONGEST_FIRST = ("test_deployment.py", "test_consortium_by_configs.py", "test_value_task.py",
                 "test_budget_federation.py", "test_federation.py", "test_time_to_churn_task.py",
                 "test_utility.py", "test_reports.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that start Flower (simulations, deployments) first, the measured longest of
    them first of all (`LONGEST_FIRST`), the rest after, each file's tests in their own
    order. `scripts/test.sh` runs two workers (pytest-xdist, a file per worker at a time):
    the long files then start at once and the short ones fill the gaps, instead of a long
    file starting last and running alone."""
    flower = {item.path for item in items if item.get_closest_marker("flower")}

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.path not in flower, LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: files and tests keep their order


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


def set_privacy(config: Path, **values: object) -> Path:
    """Rewrite the partner's `[privacy]` table, as the partner would edit its own config."""

    text = config.read_text()
    if "[privacy]" in text:
        before, _, after = text.partition("[privacy]\n")
        _, sep, rest = after.partition("\n[")
        text = before + (f"[{rest}" if sep else "")
    block = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    head, sep, rest = text.partition("\n[")
    config.write_text(f"{head}\n[privacy]\n{block}\n[{rest}")
    return config
