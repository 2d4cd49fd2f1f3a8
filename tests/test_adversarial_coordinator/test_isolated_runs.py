"""Attack 11 of issue 12: two `fedcrm run` on one machine must not collide, and a stopped
`fedcrm run` must not leave its SuperLink behind.

Before the fix, every run under one `--work` shared `flwr-home/config.toml`, the SuperLink
database and its log: the second run rewrote the connection, the first then polled a dead
SuperLink for 30 minutes; SIGTERM killed `fedcrm run` and left its SuperLink (and the
ServerApp and Ray under it) running. Now each run gets a Flower home of its own
(`<work>/<date>-<time>-<pid>-<tag>/`), SIGINT/SIGTERM stop that run's processes before
exiting 128 + the signal, and a SuperLink that dies under a run fails it at the next poll.

Two runs at once under one work folder, each in a home of its own with nothing left
running after, are checked where two simulations run at once anyway
(`test_concurrent_federations.py`, which also shares a partner between them). The SIGTERM
run here is a real `fedcrm run` process on the demo consortium.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from fedcrm.ops import launcher

pytestmark = pytest.mark.flower


def fedcrm_run(federation: Path, out: Path, work: Path, *extra: str) -> subprocess.Popen[str]:
    """`fedcrm run` as a user starts it, output to a file next to its run dir."""
    log = (out.parent / f"{out.name}.out").open("w")
    return subprocess.Popen([sys.executable, "-m", "fedcrm", "run", "--federation", str(federation),
                             "--out", str(out), "--work", str(work), "--rounds", "1", *extra],
                            stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})


def processes_under(work: Path) -> list[psutil.Process]:
    """Every live process whose FLWR_HOME lies under `work` (what any run there started)."""
    found = []
    for proc in psutil.process_iter():
        try:
            home = proc.environ().get("FLWR_HOME", "")
            if home.startswith(str(work)) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    """The shared `--work` folder; whatever a failing run left there is killed afterwards."""
    folder = tmp_path / "flower"
    try:
        yield folder
    finally:
        for proc in processes_under(folder):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def test_signal_handlers_stop_then_raise_and_are_restored() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopped: list[bool] = []
    with pytest.raises(launcher.Interrupted) as caught:
        with launcher.stop_on_signals(lambda: stopped.append(True)):
            assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
    assert stopped == [True] and caught.value.exit_code == 143
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_dead_superlink_fails_the_wait_at_once(tmp_path: Path) -> None:
    """No 30-minute poll of a dead address: the next poll sees the process is gone."""
    link = launcher.SimulationLink(tmp_path / "flower").start()
    try:
        os.kill(link.process.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(launcher.SuperLinkDied, match=rf"PID {link.process.pid}.*superlink.log"):
            link.wait(run_id=1, timeout=120)
        assert time.monotonic() - t0 < 10
    finally:
        link.stop()
    assert not processes_under(tmp_path / "flower")


def test_sigterm_stops_the_runs_own_superlink_and_everything_under_it(fresh_demo: Path, tmp_path: Path,
                                                                        work: Path) -> None:
    out = tmp_path / "run"
    proc = fedcrm_run(fresh_demo, out, work, "--rounds", "5")  # long enough not to end first
    try:
        deadline = time.monotonic() + 180
        # until the whole tree is up: SuperLink, SuperExec, ServerApp and Ray's raylet
        while not any("raylet" in " ".join(p.cmdline()) for p in processes_under(work)):
            assert proc.poll() is None, (tmp_path / "run.out").read_text()
            assert time.monotonic() < deadline, "Ray never started"
            time.sleep(0.5)
        before = processes_under(work)
        link_pid = next(p.pid for p in before if "flower-superlink" in " ".join(p.cmdline()))
        pid_files = [int(f.read_text()) for f in work.glob("*/superlink.pid")]

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = [p for p in before if alive(p)]
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
    assert not processes_under(work)
    assert code == 128 + signal.SIGTERM
    text = " ".join((tmp_path / "run.out").read_text().split())
    assert "interrupted by SIGTERM" in text and "Traceback" not in text, text
    assert pid_files == [link_pid]  # the file that names what to stop if `fedcrm run` is killed outright
    assert not list(work.glob("*/superlink.pid"))  # removed once it was stopped
