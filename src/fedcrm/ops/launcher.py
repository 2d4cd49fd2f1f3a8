"""Launch and watch Flower runs from Python: a SuperLink we own, `flwr run`, `flwr ls`.

We start the simulation SuperLink ourselves (instead of Flower's auto-started, detached
`local` one) so that it lives in the project's work dir, uses a port we chose, has runtime
dependency installation disabled, and is stopped by its PID when we are done. A run's
outcome is read from `flwr ls --format json`, never from `flwr run`'s exit code.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from fedcrm.errors import FedcrmError
from fedcrm.ops.app import default_app_dir

FLWR_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
}
CONNECTION = "fedcrm"
TERMINAL = ("finished:completed", "finished:failed", "finished:stopped")


class RunFailed(FedcrmError):
    """The run ended in a state other than finished:completed."""


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
             on_poll: Callable[[str], None] | None = None) -> str:
        deadline = time.monotonic() + timeout
        status = "unknown"
        while time.monotonic() < deadline:
            status = self.status(run_id)
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
    """Stop a process we started in its own session, and everything it started."""
    if process is None or process.poll() is not None:
        return
    pgid = os.getpgid(process.pid)
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
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


class SimulationLink:
    """A `flower-superlink --simulation` owned by this process; use as a context manager."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = work_dir.resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.cli = FlwrCli(self.work_dir / "flwr-home", CONNECTION, self.work_dir)

    @property
    def log_file(self) -> Path:
        return self.work_dir / "superlink.log"

    def start(self, timeout: float = 60) -> SimulationLink:
        self.cli.write_connection(f"127.0.0.1:{self.port}")
        cmd = [executable("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
               "--host", "127.0.0.1", "--port", str(self.port),
               "--database", str(self.work_dir / "superlink.db"),
               "--disable-runtime-dependency-installation"]
        log = self.log_file.open("ab")
        # Its own session, started from the work dir, so its children (ServerApp, Ray) die with it.
        self.process = subprocess.Popen(cmd, env=flower_env(self.cli.flwr_home), cwd=self.work_dir, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_healthy(self.process, f"http://127.0.0.1:{self.port}/health", self.log_file, timeout)
        except FedcrmError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        stop_group(self.process)

    def __enter__(self) -> SimulationLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, app_dir: Path, run_config: dict[str, Any], num_supernodes: int,
               num_cpus_per_node: int = 1) -> int:
        return self.cli.submit(app_dir, run_config, {"num-supernodes": num_supernodes,
                                                     "client-resources-num-cpus": num_cpus_per_node})


class SimulationResult(BaseModel):
    run_id: int
    status: str
    run_dir: Path
    seconds: float


def simulate(federation_config: Path, run_dir: Path, work_dir: Path, run_config: dict[str, Any],
             app_dir: Path | None = None, num_cpus_per_node: int = 1, timeout: float = 1800,
             on_poll: Callable[[str], None] | None = None) -> SimulationResult:
    """One simulated federated run (Ray), a partition per federation member; raises
    `RunFailed` unless Flower reports it finished:completed. `run_config` is Flower's run
    config (dash keys), checked against `TrainPlan` before any SuperLink starts."""
    from fedcrm.config import FederationConfig, TrainPlan  # local: keeps the launcher importable alone

    members = FederationConfig.load(federation_config).members
    plan = TrainPlan.from_run_config(run_config).model_copy(
        update={"federation_config": str(federation_config.resolve()), "run_dir": str(run_dir.resolve())})
    started = time.monotonic()
    with SimulationLink(work_dir) as link:
        run_id = link.submit(app_dir or default_app_dir(), plan.to_run_config(exclude_unset=True), len(members),
                             num_cpus_per_node)
        status = link.cli.wait(run_id, timeout=timeout, on_poll=on_poll)
        if status != "finished:completed":
            raise RunFailed(f"run {run_id} ended {status}; last log lines:\n{link.cli.logs(run_id)[-4000:]}")
    return SimulationResult(run_id=run_id, status=status, run_dir=run_dir, seconds=time.monotonic() - started)
