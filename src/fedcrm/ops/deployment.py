"""A real federation: the coordinator's SuperLink and the partners' SuperNodes.

`fedcrm federation init` lays out a federation directory:

    <dir>/federation.toml            members (partner_id, name) and the SuperLink address
    <dir>/README.md                  which file goes to which machine
    <dir>/coordinator/               ca.key, ca.crt, superlink.key, superlink.crt (coordinator only)
                                     superlink.db (runs), audit.jsonl (+ head), flwr-home/, superlink.log
    <dir>/partners/<name>/           ca.crt, supernode.key, supernode.pub (give to that partner)

The SuperLink runs with TLS, SuperNode authentication (only registered public keys may
connect), a persistent database and runtime dependency installation disabled. A partner's
SuperNode dials it with the CA certificate and its own key, and its node config names the
partner config — which names its data, its HMAC key and its ledger, all on its machine.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from fedcrm.coordinator.auditlog import AuditLog
from fedcrm.config import FederationConfig
from fedcrm.errors import ConfigError, FedcrmError
from fedcrm.ops.launcher import FlwrCli, executable, flower_env, json_payload, stop_group, wait_healthy
from fedcrm.protocol import NodeConfig
from fedcrm.ops.pki import create_ca, create_node_key, create_server_cert, san_hosts

README = """# Federation {name}: which file goes where

Coordinator machine (runs the SuperLink at {address}):
- `coordinator/ca.key`: the CA's private key. Only needed to issue certificates; keep it offline if you can.
- `coordinator/ca.crt`, `coordinator/superlink.crt`, `coordinator/superlink.key`: the SuperLink's TLS.
- `coordinator/superlink.db` (runs), `coordinator/audit.jsonl` (the audit log): created when used.
- `federation.toml`: the members.

Each partner machine (runs one SuperNode), from `partners/<name>/`:
- `ca.crt`: to check it is talking to this SuperLink.
- `supernode.key`: its private key. It proves the node is that partner. Send it over a trusted channel
  and delete it here once delivered, or let the partner make its own key and send back only the `.pub`.
- `supernode.pub`: the public key the coordinator registers (`fedcrm coordinator register`).

Every file here is mode 0600. Start commands: `fedcrm coordinator commands --dir <this folder>`.
"""


class FederationLayout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.coordinator = self.root / "coordinator"
        self.partners = self.root / "partners"
        self.manifest = self.root / "federation.toml"
        self.ca_key, self.ca_cert = self.coordinator / "ca.key", self.coordinator / "ca.crt"
        self.server_key, self.server_cert = self.coordinator / "superlink.key", self.coordinator / "superlink.crt"
        self.database = self.coordinator / "superlink.db"
        self.log_file = self.coordinator / "superlink.log"
        self.pid_file = self.coordinator / "superlink.pid"
        self.flwr_home = self.coordinator / "flwr-home"
        self.audit = AuditLog(self.coordinator / "audit.jsonl")

    def partner_dir(self, name: str) -> Path:
        return self.partners / name

    def config(self) -> FederationConfig:
        if not self.manifest.is_file():
            raise ConfigError(f"{self.root} is not a federation directory (no federation.toml); "
                              "create one with `fedcrm federation init`")
        return FederationConfig.load(self.manifest)

    @property
    def address(self) -> str:
        cfg = self.config()
        if not cfg.superlink:
            raise ConfigError(f"{self.manifest}: no superlink address")
        return cfg.superlink

    @property
    def connection(self) -> str:
        return self.config().name

    def cli(self) -> FlwrCli:
        cli = FlwrCli(self.flwr_home, self.connection, self.coordinator)
        cli.write_connection(self.address, self.ca_cert)
        return cli


def _write_manifest(layout: FederationLayout, name: str, address: str, members: list[tuple[int, str]]) -> None:
    blocks = "".join(f'\n[[members]]\npartner_id = {pid}\nname = "{n}"\n' for pid, n in members)
    layout.manifest.write_text(f'name = "{name}"\nsuperlink = "{address}"\n{blocks}')


def init_federation(root: Path, name: str, address: str, hosts: list[str], partners: list[str]) -> FederationLayout:
    """CA, SuperLink certificate for `hosts`, a key pair per partner, the manifest and README."""
    layout = FederationLayout(root)
    if layout.manifest.exists():
        raise ConfigError(f"{layout.manifest} exists: this federation is already set up "
                          "(add partners with `fedcrm federation add-partner`)")
    host = address.rsplit(":", 1)[0]
    hosts = list(dict.fromkeys([*hosts, host]))
    create_ca(layout.coordinator, name)
    create_server_cert(layout.coordinator, layout.ca_key, layout.ca_cert, hosts)
    _write_manifest(layout, name, address, [])
    (layout.root / "README.md").write_text(README.format(name=name, address=address))
    layout.audit.record("federation-initialised", name=name, superlink=address, hosts=hosts)
    for partner in partners:
        add_partner(layout.root, partner)
    return layout


def add_partner(root: Path, name: str, partner_id: int | None = None) -> Path:
    """A key pair for one more partner; nobody else is re-keyed."""
    layout = FederationLayout(root)
    cfg = layout.config()
    if any(m.name == name for m in cfg.members):
        raise ConfigError(f"partner {name!r} is already a member of {cfg.name}")
    ids = [m.partner_id for m in cfg.members]
    partner_id = partner_id if partner_id is not None else max(ids, default=0) + 1
    if partner_id in ids:
        raise ConfigError(f"partner_id {partner_id} is taken in {cfg.name}")
    folder = layout.partner_dir(name)
    create_node_key(folder, f"{name}@{cfg.name}")
    (folder / "ca.crt").write_bytes(layout.ca_cert.read_bytes())
    (folder / "ca.crt").chmod(0o600)
    _write_manifest(layout, cfg.name, cfg.superlink or "", [*((m.partner_id, m.name) for m in cfg.members), (partner_id, name)])
    layout.audit.record("partner-added", partner=name, partner_id=partner_id,
                        public_key=(folder / "supernode.pub").read_text().split()[1][:24] + "…")
    return folder


# ---------------------------------------------------------------- commands
def superlink_command(layout: FederationLayout) -> list[str]:
    host, port = layout.address.rsplit(":", 1)
    bind = "0.0.0.0" if host not in ("127.0.0.1", "localhost") else "127.0.0.1"
    return [executable("flower-superlink"), "--ssl-ca-certfile", str(layout.ca_cert),
            "--ssl-certfile", str(layout.server_cert), "--ssl-keyfile", str(layout.server_key),
            "--enable-supernode-auth", "--isolation", "subprocess", "--host", bind, "--port", port,
            "--database", str(layout.database), "--disable-runtime-dependency-installation"]


def supernode_command(partner_config: Path, superlink: str, ca_cert: Path, key: Path, port: int = 9094) -> list[str]:
    return [executable("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca_cert),
            "--auth-supernode-private-key", str(key), "--isolation", "subprocess", "--port", str(port),
            "--node-config", NodeConfig(partner_config=str(Path(partner_config).resolve())).flag()]


# ---------------------------------------------------------------- processes
class SuperLinkProcess:
    """The coordinator's SuperLink, started in its own session and stopped by its PID."""

    def __init__(self, layout: FederationLayout) -> None:
        self.layout = layout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> SuperLinkProcess:
        layout = self.layout
        for f in (layout.ca_cert, layout.server_cert, layout.server_key):
            if not f.is_file():
                raise ConfigError(f"missing {f}: run `fedcrm federation init` first")
        host, port = layout.address.rsplit(":", 1)
        if host not in san_hosts(layout.server_cert):
            raise ConfigError(f"the SuperLink certificate is not valid for {host} (SANs: {san_hosts(layout.server_cert)})")
        cli = layout.cli()
        log = layout.log_file.open("ab")
        self.process = subprocess.Popen(superlink_command(layout), env=flower_env(cli.flwr_home),
                                        cwd=layout.coordinator, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        layout.pid_file.write_text(str(self.process.pid))
        try:
            wait_healthy(self.process, f"https://{layout.address}/health", layout.log_file, timeout,
                         ca_cert=layout.ca_cert)
        except FedcrmError:
            self.stop()
            raise
        layout.audit.record("superlink-started", pid=self.process.pid, address=layout.address)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process)
            self.layout.audit.record("superlink-stopped", pid=self.process.pid)
        self.layout.pid_file.unlink(missing_ok=True)


def registered_keys(cli: FlwrCli) -> dict[str, dict[str, Any]]:
    """Node id → Flower's record, from `flwr supernode list --format json`."""
    proc = cli.flwr("supernode", "list", cli.connection, "--format", "json", timeout=60)
    payload = json_payload(proc.stdout)
    if "nodes" not in payload:
        raise FedcrmError(f"flwr supernode list failed: {proc.stdout} {proc.stderr}")
    return {str(n["node-id"]): n for n in payload["nodes"]}


def register_partners(layout: FederationLayout) -> dict[str, str]:
    """Register every member's public key with the running SuperLink (idempotent).
    Returns partner → 'registered' | 'already registered'."""
    cli = layout.cli()
    out = {}
    for m in layout.config().members:
        pub = layout.partner_dir(m.name) / "supernode.pub"
        if not pub.is_file():
            raise ConfigError(f"no public key for {m.name} at {pub}")
        proc = cli.flwr("supernode", "register", str(pub), cli.connection, "--format", "json", timeout=60)
        text = proc.stdout + proc.stderr
        if '"success": true' in text:
            out[m.name] = "registered"
            layout.audit.record("supernode-registered", partner=m.name)
        elif "already in use" in text:
            out[m.name] = "already registered"
        else:
            raise FedcrmError(f"registering {m.name}'s key failed: {text.strip()}")
    return out


class SuperNodeProcess:
    """One partner's SuperNode (tests and single-machine trials; partners run the command)."""

    def __init__(self, partner_config: Path, superlink: str, ca_cert: Path, key: Path, flwr_home: Path,
                 port: int, log_file: Path) -> None:
        self.command = supernode_command(partner_config, superlink, ca_cert, key, port)
        self.flwr_home, self.log_file = flwr_home, log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SuperNodeProcess:
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(self.command, env=flower_env(self.flwr_home), cwd=self.flwr_home,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        stop_group(self.process)
