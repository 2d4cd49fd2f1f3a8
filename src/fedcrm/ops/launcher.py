"""Launch and watch Flower runs from Python: a SuperLink we own, `flwr run`, `flwr ls`.

We start the simulation SuperLink ourselves (instead of Flower's auto-started, detached
`local` one) so that it lives in the project's work dir, uses a port we chose, has runtime
dependency installation disabled, and is stopped by its PID when we are done. A run's
outcome is read from `flwr ls --format json`, never from `flwr run`'s exit code.

Every simulated run owns its Flower home: a fresh folder `<work>/<date>-<time>-<pid>-<tag>`
with its own FLWR_HOME (connection config), port, database, log and PID file, so two runs
sharing a `--work` folder never see each other's SuperLink. SIGINT and SIGTERM during a run
stop that run's SuperLink by its PID, then every other process of that run (SuperExec,
ServerApp and Ray live in a session of their own; they are found by the run's FLWR_HOME in
their environment), before the process exits non-zero. A SuperLink that dies under a run
fails the run at the next poll.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from pydantic import BaseModel

from fedcrm.errors import FedcrmError
from fedcrm.ops.app import default_app_dir
from fedcrm.privatefiles import private_dir

FLWR_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}
CONNECTION = "fedcrm"
TERMINAL = ("finished:completed", "finished:failed", "finished:stopped")


class RunFailed(FedcrmError):
    """The run ended in a state other than finished:completed."""


class SuperLinkDied(RunFailed):
    """The SuperLink a run was submitted to exited before the run ended."""


class Interrupted(FedcrmError):
    """SIGINT or SIGTERM arrived during a run we own; its SuperLink was stopped first."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}: the run's SuperLink was stopped")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


def executable(name: str) -> str:
    """Flower's console scripts from this interpreter's environment, activated or not."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FedcrmError(f"{name} not found: install fedcrm (flwr[simulation]) in this environment")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def config_args(values: dict[str, Any]) -> str:
    """`k=v` pairs in the TOML syntax `flwr run --run-config` expects."""
    return " ".join(f"{k}={_toml_value(v)}" for k, v in values.items())


def flower_env(flwr_home: Path) -> dict[str, str]:
    """Our environment for every Flower process: no runtime installs, no telemetry, a
    project-local FLWR_HOME, and this interpreter's scripts first on PATH (Flower starts
    flower-superexec, flwr-serverapp and flwr-clientapp by name)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, **FLWR_ENV, "FLWR_HOME": str(flwr_home), "PATH": path}


def json_payload(text: str) -> dict[str, Any]:
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        return {}


class FlwrCli:
    """The `flwr` CLI against one SuperLink connection named in `flwr_home/config.toml`."""

    def __init__(self, flwr_home: Path, connection: str, cwd: Path) -> None:
        self.flwr_home, self.connection, self.cwd = flwr_home, connection, cwd

    def write_connection(self, address: str, root_certificates: Path | None = None) -> None:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        tls = f'root-certificates = "{root_certificates}"\n' if root_certificates else "insecure = true\n"
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{self.connection}"\n\n'
            f'[superlink.{self.connection}]\naddress = "{address}"\n{tls}')

    def flwr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([executable("flwr"), *args], env=flower_env(self.flwr_home), capture_output=True,
                              text=True, timeout=timeout, cwd=self.cwd)

    def submit(self, app_dir: Path, run_config: dict[str, Any], federation_config: dict[str, Any] | None = None) -> int:
        """`flwr run` without streaming; returns the run id."""
        extra = ["--federation-config", config_args(federation_config)] if federation_config else []
        proc = self.flwr("run", str(app_dir.resolve()), self.connection, "--run-config", config_args(run_config),
                         *extra, "--format", "json")
        payload = json_payload(proc.stdout)
        if not payload.get("success") or "run-id" not in payload:
            raise FedcrmError(f"flwr run was refused: {proc.stdout.strip()} {proc.stderr.strip()}"
                              f"\ncommand: flwr run {shlex.quote(str(app_dir))} ...")
        return int(payload["run-id"])

    def status(self, run_id: int) -> str:
        proc = self.flwr("ls", self.connection, "--run-id", str(run_id), "--format", "json", timeout=60)
        try:
            return str(json_payload(proc.stdout)["runs"][0]["status"])
        except (KeyError, IndexError):
            return f"unknown ({proc.stdout.strip() or proc.stderr.strip()})"

    def wait(self, run_id: int, timeout: float = 1800, poll: float = 1.0,
             on_poll: Callable[[str], None] | None = None, superlink: subprocess.Popen[bytes] | None = None,
             log_file: Path | None = None, ended: Callable[[], bool] | None = None, ask_every: float = 10.0) -> str:
        """Until the run reaches a terminal status. With `superlink` (a process we started),
        a SuperLink that exits fails the wait at the next poll instead of leaving it to ask a
        dead address until `timeout`.

        `ended`: a cheap sign that the run has ended (its summary written). With it, Flower
        is asked (`flwr ls`, 1.1-1.5 s of CPU a call on this 2-core machine) only when the sign
        shows, or every `ask_every` seconds for a run that fails without one; without it,
        every `poll`. `on_poll` is told the last status every `poll` seconds either way."""
        deadline = time.monotonic() + timeout
        status, asked = "unknown", -math.inf
        while time.monotonic() < deadline:
            if superlink is not None and superlink.poll() is not None:
                was = "had not ended" if status.startswith("unknown") else f"was {status}"
                raise SuperLinkDied(f"the SuperLink (PID {superlink.pid}) exited with code {superlink.returncode} "
                                    f"while run {run_id} {was}" + (f"; see {log_file}" if log_file else ""))
            if ended is None or ended() or time.monotonic() - asked >= ask_every:
                status, asked = self.status(run_id), time.monotonic()
            if on_poll:
                on_poll(status)
            if status in TERMINAL:
                return status
            time.sleep(poll)
        self.stop(run_id)
        raise RunFailed(f"run {run_id} did not finish in {timeout:.0f}s (last status {status})")

    def stop(self, run_id: int) -> str:
        proc = self.flwr("stop", str(run_id), self.connection, timeout=60)
        return (proc.stdout + proc.stderr).strip()

    def logs(self, run_id: int) -> str:
        proc = self.flwr("log", str(run_id), self.connection, "--show", timeout=60)
        return proc.stdout + proc.stderr


def wait_healthy(process: subprocess.Popen[bytes], url: str, log_file: Path, timeout: float,
                 ca_cert: Path | None = None) -> None:
    """Until `url` answers 200, the process dies, or `timeout` passes."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_cert)) if ca_cert else True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FedcrmError(f"{Path(str(process.args[0])).name} exited ({process.returncode}); see {log_file}")
        try:
            if httpx.get(url, timeout=1, verify=verify).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise FedcrmError(f"{url} did not become healthy in {timeout:.0f}s; see {log_file}")


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process we started in its own session, and everything it started. The group
    is signalled even when its leader has exited already: a SuperLink that died can leave
    its ServerApp and Ray behind in the group (its id is the leader's PID, which the kernel
    does not hand out again while any member lives)."""
    if process is None:
        return
    pgid = process.pid  # start_new_session: the leader's PID is the group's id
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:  # nobody left in the group
            process.poll()
            return
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # children (Ray workers, ClientApps) may outlive the leader briefly
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_pid(pid: int, timeout: float = 20) -> bool:
    """Stop a process group we started earlier (its leader's PID); True if it was running."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.2)
    return True


def processes_of(flwr_home: Path) -> list[int]:
    """PIDs (not this process) whose environment names `flwr_home` as FLWR_HOME: every
    process of one run — SuperLink, SuperExec, ServerApp, Ray — whatever session or parent
    it has by now (Flower starts SuperExec in a session of its own, and a process whose
    parent died is re-parented). Each run has a home of its own, so this names one run's
    processes and nobody else's. Linux (`/proc`); elsewhere, none are found."""
    marker = b"\0FLWR_HOME=" + os.fsencode(str(flwr_home)) + b"\0"
    found = []
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        if int(name) == os.getpid():
            continue
        try:
            environ = Path("/proc", name, "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if marker in b"\0" + environ:
            found.append(int(name))
    return found


def stop_processes_of(flwr_home: Path, grace: float = 3) -> None:
    """SIGTERM every process of the run with this Flower home, SIGKILL what is left after
    `grace` seconds; scanned again in case one was starting meanwhile. The grace is short:
    a run's results are written as it goes (checkpoints, run dir), and the simulation's
    ServerApp and Ray's raylet take 15 s or more to honour SIGTERM, if ever."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5), (signal.SIGKILL, 5)):
        pids = processes_of(flwr_home)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path("/proc", str(pid), "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run_home(work_dir: Path) -> Path:
    """A fresh folder of its own for one run's Flower home, under `work_dir`: its name
    (date, time, PID, a random tag) sorts by start time and never repeats, so runs that
    share `work_dir`, in one process or several, cannot overwrite each other's files."""
    parent = private_dir(work_dir, tighten=False)  # the user named it; other contents are theirs
    prefix = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))  # 0700, created atomically


class SimulationLink:
    """A `flower-superlink --simulation` owned by this process, in a run home of its own
    under `work_dir` (see `run_home`); use as a context manager."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = work_dir.resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._home: Path | None = None

    @property
    def home(self) -> Path:
        """This run's own folder: FLWR_HOME (`flwr-home/`), `superlink.db`, `superlink.log`."""
        if self._home is None:
            raise FedcrmError("the SuperLink has not been started: it has no run home yet")
        return self._home

    @property
    def cli(self) -> FlwrCli:
        return FlwrCli(self.home / "flwr-home", CONNECTION, self.home)

    @property
    def log_file(self) -> Path:
        return self.home / "superlink.log"

    @property
    def pid_file(self) -> Path:
        """The SuperLink's PID while it runs: what to stop if this process is killed outright."""
        return self.home / "superlink.pid"

    def start(self, timeout: float = 60, home: Path | None = None) -> SimulationLink:
        """A fresh run home, or `home`: a finished run's, whose database (its runs, their
        status and logs) the new SuperLink serves again to `flwr ls` / `flwr log`."""
        self._home = home.resolve() if home is not None else run_home(self.work_dir)
        self.cli.write_connection(f"127.0.0.1:{self.port}")
        cmd = [executable("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
               "--host", "127.0.0.1", "--port", str(self.port),
               "--database", str(self.home / "superlink.db"),
               "--disable-runtime-dependency-installation"]
        # Its own session, so a Ctrl-C at the terminal reaches us and not it: we stop it, and
        # everything of this run, ourselves (`stop`).
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(cmd, env=flower_env(self.cli.flwr_home), cwd=self.home, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{self.process.pid}\n")
        try:
            wait_healthy(self.process, f"http://127.0.0.1:{self.port}/health", self.log_file, timeout)
        except FedcrmError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Every process of this run at once — the SuperLink, and SuperExec, ServerApp and
        Ray, which live in a session of their own — then the SuperLink's group by PID."""
        if self._home is not None:
            stop_processes_of(self.cli.flwr_home)
        stop_group(self.process)
        if self._home is not None:
            self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> SimulationLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, app_dir: Path, run_config: dict[str, Any], num_supernodes: int,
               num_cpus_per_node: int = 1) -> int:
        return self.cli.submit(app_dir, run_config, {"num-supernodes": num_supernodes,
                                                     "client-resources-num-cpus": num_cpus_per_node})

    def wait(self, run_id: int, timeout: float = 1800, on_poll: Callable[[str], None] | None = None,
             ended: Callable[[], bool] | None = None) -> str:
        """`FlwrCli.wait` that fails as soon as this SuperLink is gone."""
        return self.cli.wait(run_id, timeout=timeout, on_poll=on_poll, superlink=self.process,
                             log_file=self.log_file, ended=ended)


def record_flower_home(run_dir: Path, home: Path, run_id: int) -> None:
    """Where the run's Flower state is kept, in its run directory: `fedcrm flower` reopens it."""
    from fedcrm.rundir import FlowerHome, RunDir  # local: keeps the launcher importable alone

    if not run_dir.is_dir():  # the run ended before its ServerApp wrote anything
        return
    RunDir(run_dir).write_flower_home(FlowerHome(home=str(home), connection=CONNECTION, runs=[str(run_id)]))


@contextmanager
def reopened(run_dir: Path) -> Iterator[SimulationLink]:
    """A SuperLink on a finished simulated run's own database, stopped (by PID) on leaving."""
    from fedcrm.rundir import RunDir

    ref = RunDir(run_dir).flower_home()
    home = Path(ref.home)
    if not (home / "superlink.db").is_file():
        raise FedcrmError(f"{run_dir}: its Flower state ({home / 'superlink.db'}) is gone; was the work dir removed?")
    link = SimulationLink(home.parent)
    link.start(home=home)
    try:
        yield link
    finally:
        link.stop()


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM call `stop` (our SuperLink, by its PID)
    and then raise `Interrupted`, so the caller unwinds and exits non-zero instead of
    dying with its SuperLink left running. The previous handlers are back afterwards.
    Signal handlers can only be set from the main thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        nonlocal stopping
        if stopping:  # a second Ctrl-C while we stop: the first one is being honoured
            return
        stopping = True
        stop()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class SimulationResult(BaseModel):
    run_id: int
    status: str
    run_dir: Path
    seconds: float
    home: Path  # the run's Flower home: FLWR_HOME, database, superlink.log


def simulate(federation_config: Path, run_dir: Path, work_dir: Path, run_config: dict[str, Any],
             app_dir: Path | None = None, num_cpus_per_node: int = 1, timeout: float = 1800,
             on_poll: Callable[[str], None] | None = None,
             on_start: Callable[[SimulationLink], None] | None = None) -> SimulationResult:
    """One simulated federated run (Ray), a partition per federation member, on a
    SuperLink of its own in a fresh run home under `work_dir`; raises `RunFailed` unless
    Flower reports it finished:completed, and `Interrupted` (SuperLink stopped) on SIGINT
    or SIGTERM. `run_config` is Flower's run config (dash keys), checked against
    `TrainPlan` before any SuperLink starts. `on_start` is told where the run home is as
    soon as the SuperLink is up."""
    from fedcrm.config import FederationConfig, TrainPlan  # local: keeps the launcher importable alone
    from fedcrm.coordinator.auditlog import AuditLog, simulated_audit_log
    from fedcrm.rundir import SUMMARY

    federation = FederationConfig.load(federation_config)
    members = federation.members
    audit = AuditLog(simulated_audit_log(federation_config.resolve()))
    plan = TrainPlan.from_run_config(run_config).model_copy(
        update={"federation_config": str(federation_config.resolve()), "run_dir": str(run_dir.resolve()),
                "contract_digest": federation.contract_digest(), "audit_log": str(audit.path)})
    started = time.monotonic()
    link = SimulationLink(work_dir)
    with stop_on_signals(link.stop), link:
        if on_start:
            on_start(link)
        run_id = link.submit(app_dir or default_app_dir(), plan.to_run_config(exclude_unset=True), len(members),
                             num_cpus_per_node)
        audit.record("run-launched", run_id=run_id, run_dir=plan.run_dir, config=run_config, simulation=True)
        summary = run_dir / SUMMARY  # written as the ServerApp finishes
        status = link.wait(run_id, timeout=timeout, on_poll=on_poll, ended=summary.is_file)
        record_flower_home(run_dir, link.home, run_id)
        if status != "finished:completed":
            raise RunFailed(f"run {run_id} ended {status}; last log lines:\n{link.cli.logs(run_id)[-4000:]}")
    return SimulationResult(run_id=run_id, status=status, run_dir=run_dir, seconds=time.monotonic() - started,
                            home=link.home)
