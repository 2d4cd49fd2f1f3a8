"""A deployed SuperNode answers every message in a fresh `flwr-clientapp` process, so what
a message imports is paid on every message (`benchmarks/overhead.py`, section `fresh`).
A message whose partner's arrays are prepared imports neither the data pipeline's
libraries (pandas, pyarrow, DuckDB: `fedcrm.data.prepared` reads the cache), and an
evaluation after a DP training round does not import Opacus (the round before computed
its ε: `PrivacyAccount.anticipate`). Each message runs here in a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from fedcrm.sandbox.demo_data import generate
from tests.test_privacy import initial_state, node_for

WATCHED = ("pandas", "pyarrow", "duckdb", "opacus", "sklearn", "scipy")


def in_a_fresh_process(fed: Path, kind: str, server_round: int, state_file: Path) -> list[str]:
    """One message to partner 0, answered by a new Python process: the modules it loaded."""
    code = f"""
import json, sys, torch
from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.node.partner import PartnerNode
cfg = PartnerConfig.load(FederationConfig.load({str(fed)!r}).members[0].config)
node = PartnerNode(cfg, TrainPlan.from_run_config({{"num-server-rounds": 3, "dp-target-epsilon": 2.0}}))
state = torch.load({str(state_file)!r})
if {kind!r} == "train":
    state, _ = node.train(state, {server_round}, run_id=5)
    torch.save(state, {str(state_file)!r})
else:
    node.evaluate(state, run_id=5, server_round={server_round})
print(json.dumps(sorted(m for m in {WATCHED!r} if m in sys.modules)))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_message_process_imports_only_what_its_release_needs(fresh_demo: Path, tmp_path: Path) -> None:
    # this process first serves another consortium's partner with the same data and plan, as a
    # simulation's actor serves many: what it computed for that node must reach this node's memo too
    node_for(generate(tmp_path / "another")).feature_sums(5)
    node_for(fresh_demo).feature_sums(5)  # prepares the arrays and charges the run's statistics
    state_file = tmp_path / "state.pt"
    torch.save(initial_state(), state_file)
    # the run's first evaluation calibrates its noise: SciPy's root finder, every ε from the memo
    assert in_a_fresh_process(fresh_demo, "evaluate", 0, state_file) == ["scipy"]
    # DP-SGD is Opacus' (and its accountants import scipy): the check sees what a message loads
    assert in_a_fresh_process(fresh_demo, "train", 1, state_file) == ["opacus", "scipy"]
    assert in_a_fresh_process(fresh_demo, "evaluate", 1, state_file) == []
