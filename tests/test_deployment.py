"""The Deployment Engine for real, on 127.0.0.1: a SuperLink with TLS, SuperNode
authentication and a persistent database, and three partners' SuperNodes, each with its
own key and its own partner config. Rounds cost ~20 s here (Flower polls every 3 s and
starts a ClientApp process per message), so each test does only what it must show."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcrm.config import PartnerConfig
from fedcrm.sandbox.demo_data import generate
from fedcrm.ops.deployment import SuperLinkProcess, SuperNodeProcess, registered_keys
from fedcrm.privacy.ledger import Ledger
from fedcrm.rundir import RunDir
from fedcrm.sandbox.loopback import LoopbackFederation
from fedcrm.ops.pki import create_node_key
from fedcrm.ops.runs import collect, launch, resume, watch

pytestmark = pytest.mark.flower


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackFederation]:
    root = tmp_path_factory.mktemp("deployment")
    federation = LoopbackFederation(root, generate(root / "consortium"), name="loopback-test")
    try:
        yield federation.start()
    finally:
        federation.stop()


def wait_for(path: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout:.0f}s")
        time.sleep(0.2)


def kill(process: SuperNodeProcess | SuperLinkProcess) -> None:
    """SIGKILL the whole process group: no chance to clean up, as in a crash."""
    os.killpg(os.getpgid(process.process.pid), signal.SIGKILL)
    process.process.wait(timeout=30)


def test_provisioning_writes_private_files_and_a_readme(deployment: LoopbackFederation) -> None:
    layout = deployment.layout
    files = [p for p in layout.root.rglob("*") if p.suffix in (".key", ".crt", ".pub")]
    assert len(files) == 4 + 3 * 3
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files), [(p, oct(p.stat().st_mode)) for p in files]
    assert "supernode.key" in (layout.root / "README.md").read_text()
    assert sorted(layout.config().names().values()) == sorted(deployment.partners)


def test_a_two_round_run_over_tls_completes_and_is_collected(deployment: LoopbackFederation, tmp_path: Path) -> None:
    layout = deployment.layout
    run_id = launch(layout, tmp_path / "run", {"num-server-rounds": 2, "dp-target-epsilon": 2.0, "min-partners": 3,
                                                "round-timeout": 120})
    rounds = []
    assert watch(layout, run_id, on_round=rounds.append, timeout=600) == "finished:completed"
    out = collect(layout, run_id, tmp_path / "collected")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert [r.round for r in rounds] == [0, 1, 2] and rounds[-1].auc > 0.75
    eps = json.loads((out / "epsilon.json").read_text())["partners"]
    assert set(eps) == set(deployment.partners) and all(len(s) == 2 for s in eps.values())
    assert (out / "model.pt").is_file() and (out / "logs" / f"flower-run-{run_id}.log").stat().st_size > 0
    actions = [e.action for e in layout.audit.entries() if e.run_id == str(run_id)]
    assert actions == ["run-launched", "run-started", "round-completed", "round-completed", "run-finished",
                       "run-collected"]


def test_an_unregistered_key_is_refused(deployment: LoopbackFederation, tmp_path: Path) -> None:
    key, _ = create_node_key(tmp_path / "intruder", "intruder")
    node = deployment.supernode("north-telecom", key=key, label="intruder")
    try:
        assert node.process.wait(timeout=60) != 0
    finally:
        node.stop()
    assert "Failed to activate SuperNode" in node.log_file.read_text()
    assert len(registered_keys(deployment.layout.cli())) == 3


def test_a_dropped_partner_and_a_killed_superlink(deployment: LoopbackFederation, tmp_path: Path) -> None:
    """3 rounds. After round 1, south-broadband's SuperNode is killed: round 2 goes on with the
    other two once the round timeout passes. After round 2, the SuperLink and its ServerApp are
    killed; a new SuperLink on the same database resumes the run for round 3."""
    layout, run_dir = deployment.layout, tmp_path / "run"
    run_id = launch(layout, run_dir, {"num-server-rounds": 3, "dp-target-epsilon": 2.0, "min-partners": 2,
                                      "round-timeout": 25})
    wait_for(run_dir / "checkpoints" / "round-001.pt")
    kill(deployment.nodes["south-broadband"])
    wait_for(run_dir / "checkpoints" / "round-002.pt")
    kill(deployment.link)
    assert RunDir(run_dir).state().completed_rounds == 2

    deployment.link = SuperLinkProcess(layout).start()  # same database, certificates and keys
    resumed = resume(layout, run_dir)
    assert watch(layout, resumed, timeout=600) == "finished:completed"

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert summary["flower_runs"] == [str(run_id), str(resumed)]  # 64-bit ids as text
    rounds = {r["round"]: r for r in json.loads((run_dir / "metrics.json").read_text())["rounds"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    assert set(rounds[1]["partners"]) == set(deployment.partners)
    for r in (2, 3):
        assert "south-broadband" in rounds[r]["absent"] and "south-broadband" not in rounds[r]["partners"]
    assert any(f["partner"] == "south-broadband" and f["code"] == 0 for f in rounds[2]["failures"]), rounds[2]["failures"]
    # ledgers: one charge per round the partner trained, under the job's id, none twice
    for name, config in deployment.partners.items():
        charged = [e.server_round for e in Ledger(PartnerConfig.load(config).work_dir).entries() if e.run_id == str(run_id)]
        assert charged == ([1] if name == "south-broadband" else [1, 2, 3]), (name, charged)
    actions = [e.action for e in layout.audit.entries() if e.run_id == str(run_id)]
    assert "run-resumed" in actions and actions[-1] == "run-finished"
    assert layout.audit.verify().ok
