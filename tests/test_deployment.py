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
from typing import Any

import pytest

from fedcrm.config import PartnerConfig
from fedcrm.sandbox.demo_data import generate
from fedcrm.ops.deployment import FederationLayout, SuperLinkProcess, SuperNodeProcess, registered_keys
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


def wait_for(path: Path, run_dir: Path, timeout: float = 300) -> None:
    """Until `path` appears; fails at once, with the run's own account, if the run ended."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        summary = run_dir / "summary.json"
        if summary.exists():
            metrics = run_dir / "metrics.json"
            raise AssertionError(f"the run ended before {path.name}: {summary.read_text()}\n"
                                 f"{metrics.read_text() if metrics.exists() else ''}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear in {timeout:.0f}s")
        time.sleep(0.2)


def finished(layout: FederationLayout, run_id: int, run_dir: Path, **kwargs: Any) -> None:
    """Watch the run to its end; if it did not complete, fail with the run's own account
    (its summary's status names the reason) and the end of its Flower log."""
    status = watch(layout, run_id, **kwargs)
    if status != "finished:completed":
        summary = run_dir / "summary.json"
        raise AssertionError(f"run {run_id} ended {status}: "
                             f"{summary.read_text() if summary.exists() else '(no summary)'}\n"
                             f"{layout.cli().logs(run_id)[-4000:]}")


def kill(process: SuperNodeProcess | SuperLinkProcess) -> None:
    """SIGKILL the whole process group: no chance to clean up, as in a crash."""
    os.killpg(os.getpgid(process.process.pid), signal.SIGKILL)
    process.process.wait(timeout=30)


def test_provisioning_writes_private_files_and_a_readme(deployment: LoopbackFederation) -> None:
    layout = deployment.layout
    files = [p for p in layout.root.rglob("*") if p.suffix in (".key", ".crt", ".pub", ".csr")]
    # coordinator: ca.crt, superlink.key/.csr/.crt; each partner: its .pub and the ca.crt to send it
    assert len(files) == 4 + 3 * 2, sorted(map(str, files))
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files), [(p, oct(p.stat().st_mode)) for p in files]
    assert not layout.ca_key.exists() and (deployment.ca_dir / "ca.key").is_file()  # the CA key is kept apart
    assert not list(layout.root.rglob("supernode.key"))  # no partner's private key ever was here
    readme = (layout.root / "README.md").read_text()
    assert "fedcrm partner keygen" in readme and "fedcrm federation sign" in readme and "--public-key" in readme
    assert sorted(layout.config().names().values()) == sorted(deployment.partners)


def test_each_partner_runs_from_its_own_folder_with_its_own_files(deployment: LoopbackFederation) -> None:
    """The SuperNode's working directory is the partner's folder, where it made its key
    pair; its command names files there by relative paths, and nothing of the coordinator's
    or another partner's."""
    folders = {name: folder.resolve() for name, folder in deployment.folders.items()}
    for name, node in deployment.nodes.items():
        folder = folders[name]
        assert (folder / "supernode.key").stat().st_mode & 0o777 == 0o600
        assert folder.stat().st_mode & 0o777 == 0o700
        assert Path(os.readlink(f"/proc/{node.process.pid}/cwd")) == folder
        args = Path(f"/proc/{node.process.pid}/cmdline").read_bytes().decode().split("\0")
        named = {flag: args[args.index(flag) + 1] for flag in ("--root-certificates", "--auth-supernode-private-key")}
        assert named == {"--root-certificates": "ca.crt", "--auth-supernode-private-key": "supernode.key"}
        assert args[args.index("--node-config") + 1] == 'partner-config="partner.toml"'
        assert all((folder / f).is_file() for f in ("ca.crt", "supernode.key", "partner.toml"))
        text = " ".join(args)
        assert str(deployment.layout.root) not in text and str(deployment.ca_dir) not in text
        assert not any(str(other) in text for other in folders.values())


def test_an_unregistered_key_is_refused(deployment: LoopbackFederation, tmp_path: Path) -> None:
    key, _ = create_node_key(tmp_path / "intruder", "intruder")
    node = deployment.supernode("north-telecom", key=key, label="intruder")
    try:
        assert node.process.wait(timeout=60) != 0
    finally:
        node.stop()
    assert "Failed to activate SuperNode" in node.log_file.read_text()
    assert len(registered_keys(deployment.layout.cli())) == 3


def test_a_deployed_gbdt_run_grows_trees_and_charges_the_round(deployment: LoopbackFederation,
                                                                tmp_path: Path) -> None:
    """Boosted trees through the Deployment Engine: a round of 16 random-split trees, the
    partners' leaf sums noised and charged once, the trees published as plain data and as a
    LightGBM model, the run collected like any other."""
    layout, run_dir = deployment.layout, tmp_path / "run"
    # reference scales, no statistics query: the next test's run must make (and charge) its own
    run_id = launch(layout, run_dir, {"model": "gbdt", "gbdt-trees-per-round": 16, "gbdt-depth": 3,
                                      "num-server-rounds": 1, "dp-target-epsilon": 2.0, "round-timeout": 90,
                                      "evaluate-every": 1, "federated-stats": False})
    rounds_seen = []
    finished(layout, run_id, run_dir, on_round=rounds_seen.append, timeout=600)
    # one round of 16 random trees, its AUC read from the partners' noised histograms: above 0.6
    # in earlier suite runs, 0.597 in one; the starting model (no tree) scores 0.5
    assert [r.round for r in rounds_seen] == [0, 1] and rounds_seen[-1].auc > 0.55
    out = collect(layout, run_id, tmp_path / "collected")
    trees = json.loads((out / "trees.json").read_text())
    assert len(trees["trees"]) == 16 and (out / "trees.lightgbm.txt").read_text().startswith("tree")
    for name, config in deployment.partners.items():
        charged = [(e.server_round, e.kind) for e in Ledger(PartnerConfig.load(config).work_dir).entries()
                   if e.run_id == str(run_id)]
        assert charged == [(0, "evaluate"), (1, "train"), (1, "evaluate")], (name, charged)
        eps = json.loads((out / "epsilon.json").read_text())["partners"][name]
        assert 0 < eps[-1]["epsilon"] <= 2.0 + 1e-6


def test_a_run_over_tls_survives_a_dropped_partner_and_a_killed_superlink(deployment: LoopbackFederation,
                                                                         tmp_path: Path) -> None:
    """3 rounds over TLS with authenticated SuperNodes. After round 1, south-broadband's
    SuperNode is killed: round 2 goes on with the other two once the SuperLink finds it gone
    (or the round timeout passes). After round 2, the SuperLink and its ServerApp are
    killed; a new SuperLink on the same database resumes the run for round 3, which is
    watched and collected like any run. The partners evaluate the starting model and the
    last round's only (evaluate-every 3): every message costs a ClientApp process on each
    node here, and what is shown is about training rounds, charges and the resume."""
    layout, run_dir = deployment.layout, tmp_path / "run"
    # The timeout is the slowest round a healthy partner may take, not how fast a dead one
    # is noticed (its heartbeat lapses first); 25 s failed round 1 on a loaded CI machine.
    run_id = launch(layout, run_dir, {"num-server-rounds": 3, "dp-target-epsilon": 2.0, "min-partners": 2,
                                      "round-timeout": 90, "evaluate-every": 3})
    wait_for(run_dir / "checkpoints" / "round-001.pt", run_dir)
    kill(deployment.nodes["south-broadband"])
    wait_for(run_dir / "checkpoints" / "round-002.pt", run_dir)
    kill(deployment.link)
    assert RunDir(run_dir).state().completed_rounds == 2

    deployment.link = SuperLinkProcess(layout).start()  # same database, certificates and keys
    resumed = resume(layout, run_dir)
    rounds_seen = []
    finished(layout, resumed, run_dir, on_round=rounds_seen.append, timeout=600)
    assert [r.round for r in rounds_seen] == [0, 1, 2, 3] and rounds_seen[-1].auc > 0.75

    out = collect(layout, resumed, tmp_path / "collected")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert summary["flower_runs"] == [str(run_id), str(resumed)]  # 64-bit ids as text
    assert (out / "model.pt").is_file() and (out / "logs" / f"flower-run-{resumed}.log").stat().st_size > 0
    eps = json.loads((out / "epsilon.json").read_text())["partners"]
    assert {name: len(points) for name, points in eps.items()} == {
        name: 1 if name == "south-broadband" else 3 for name in deployment.partners}

    rounds = {r["round"]: r for r in json.loads((run_dir / "metrics.json").read_text())["rounds"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    assert set(rounds[1]["partners"]) == set(deployment.partners)
    for r in (2, 3):
        assert "south-broadband" in rounds[r]["absent"] and "south-broadband" not in rounds[r]["partners"]
    failures = rounds[2]["failures"]
    assert failures and all(f["partner"] == "south-broadband" for f in failures), failures
    # ledgers: one charge per round the partner trained and per evaluation it answered, under
    # the job's id, none twice; round 0 is the job's federated statistics and the starting
    # model's evaluation, charged once across the resume; round 3's evaluation is the resumed run's
    for name, config in deployment.partners.items():
        charged = [(e.server_round, e.kind) for e in Ledger(PartnerConfig.load(config).work_dir).entries()
                   if e.run_id == str(run_id)]
        trained = [1] if name == "south-broadband" else [1, 2, 3]
        evaluated = [] if name == "south-broadband" else [(3, "evaluate")]
        assert charged == [(0, "statistics"), (0, "evaluate")] + [(r, "train") for r in trained] + evaluated, (
            name, charged)
    actions = [e.action for e in layout.audit.entries() if e.run_id == str(run_id)]
    assert actions == ["run-launched", "run-started", "round-completed", "round-completed", "run-resumed",
                       "round-completed", "run-finished", "run-collected"], actions
    assert layout.audit.verify().ok
