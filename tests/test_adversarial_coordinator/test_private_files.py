"""Attack 9: raw PII, linkage and privacy state on a node are readable by its owner only.

Everything the node writes into its work dir (quarantine, pseudonym lookup, tags, the
prepared cache, scores, the privacy ledger with its head and lock, kept replies, the
egress log) must be a 0600 file in a 0700 folder, under the default umask 022 of a shell.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.config.tiers import TierRule
from fedcrm.data.layout import standard_layout
from fedcrm.data.prepare import prepare
from fedcrm.ml.models import build_model
from fedcrm.node.egress import log_egress
from fedcrm.node.partner import PartnerNode
from fedcrm.node.scoring import score_partner
from fedcrm.rundir import ModelMeta, RunDir, RunSummary


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _published_run(path: Path) -> RunDir:
    run = RunDir.create(path, 91, TrainPlan())
    model = build_model("logistic", len(standard_layout().names()), seed=3)
    run.publish(model.state_dict(), ModelMeta(kind="logistic", features=standard_layout().names(), task="churn"),
                RunSummary(run_id=91, status="completed", rounds_completed=0, flower_runs=[91], final_global={},
                           epsilon={}))
    return run


def _modes(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Every folder not 0700 and every file not 0600 under (and including) `root`."""
    wide_dirs, wide_files = {}, {}
    for folder, dirs, files in os.walk(root):
        mode = stat.S_IMODE(os.stat(folder).st_mode)
        if mode != 0o700:
            wide_dirs[os.path.relpath(folder, root)] = oct(mode)
        for name in files:
            path = os.path.join(folder, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode != 0o600:
                wide_files[os.path.relpath(path, root)] = oct(mode)
    return wide_dirs, wide_files


def test_node_state_is_owner_only(fresh_demo: Path, tmp_path: Path, umask_022: None) -> None:
    cfg = PartnerConfig.load(FederationConfig.load(fresh_demo).members[0].config)
    prepare(cfg, "churn")
    state = build_model("logistic", len(standard_layout().names())).state_dict()
    node = PartnerNode(cfg, TrainPlan())
    node.feature_sums(1)  # noised statistics: charged, and kept for later runs
    node.train(state, 1, run_id=1)  # DP train: ledger, head, lock, kept reply
    score_partner(cfg, _published_run(tmp_path / "run"), TierRule())  # real ids beside scores
    log_egress(cfg.work_dir / "egress.jsonl", {"run_id": "1", "kind": "train", "sent": {}})

    work, privacy = cfg.work_dir, cfg.privacy_dir  # the cache, and the privacy state kept apart from it
    expected = [work / "quarantine.parquet", work / "pseudonym_lookup.parquet", work / "egress.jsonl",
                privacy / "ledger.jsonl", privacy / "ledger.head.json", privacy / "ledger.lock"]
    missing = [str(path) for path in expected if not path.is_file()]
    assert not missing, f"the scenario did not write {missing}"
    assert list((work / "prepared").rglob("*.npz")) and list((work / "scores").glob("*.parquet"))
    assert list((privacy / "replies").glob("*.pt")) and list((privacy / "statistics").glob("*.json"))

    for root in (work, privacy):
        wide_dirs, wide_files = _modes(root)
        assert not wide_files, f"files readable beyond the node's owner: {wide_files}"
        assert not wide_dirs, f"folders open beyond the node's owner: {wide_dirs}"


def test_private_helpers_never_widen(tmp_path: Path, umask_022: None) -> None:
    """Created 0600 / 0700 from the start; an older, wider file is narrowed when rewritten."""
    from fedcrm.privatefiles import private_dir, private_open, private_write_bytes

    old = tmp_path / "old.parquet"
    old.write_bytes(b"x")
    os.chmod(old, 0o644)
    private_write_bytes(old, b"y")
    assert stat.S_IMODE(old.stat().st_mode) == 0o600 and old.read_bytes() == b"y"

    folder = private_dir(tmp_path / "a" / "b")
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in (tmp_path / "a", folder))
    with private_open(folder / "log.jsonl", "a") as fh:
        assert stat.S_IMODE(os.fstat(fh.fileno()).st_mode) == 0o600  # before a byte is written
        fh.write("line\n")


def test_a_replaced_file_is_whole_or_untouched(tmp_path: Path, umask_022: None) -> None:
    """The prepared cache, quarantine and kept releases are replaced in one step: a writer
    that fails leaves the old file as it was, and no temporary file behind."""
    from fedcrm.privatefiles import private_replace

    target = tmp_path / "node" / "arrays.npz"
    with private_replace(target, "wb") as fh:
        fh.write(b"first")
    try:
        with private_replace(target, "wb") as fh:
            fh.write(b"half of the sec")
            raise OSError("disk full")
    except OSError:
        pass
    assert target.read_bytes() == b"first" and [p.name for p in target.parent.iterdir()] == ["arrays.npz"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
