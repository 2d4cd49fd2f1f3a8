"""A real federation: the coordinator's SuperLink and the partners' SuperNodes.

`fedcrm federation init` lays out a federation directory on the coordinator's machine:

    <dir>/federation.toml            members (partner_id, name) and the SuperLink address
    <dir>/README.md                  which file goes to which machine, and the signing step
    <dir>/coordinator/               ca.crt, superlink.key, superlink.csr (the signing request),
                                     superlink.crt (once signed); ca.key only if the CA was made
                                     here (move it offline);
                                     superlink.db (runs), audit.jsonl (+ head), flwr-home/, superlink.log
    <dir>/partners/<name>/           supernode.pub (the partner's, registered), ca.crt (to send it)

Keys are made where they are used: each partner makes its SuperNode key pair on its own
node (`fedcrm partner keygen`) and sends only the public key, which `add_partner` checks
and records; the CA key can be kept on another machine, which signs the SuperLink's
request (`fedcrm federation ca` / `sign`). Nothing here needs the CA key once the SuperLink
certificate exists.

The SuperLink runs with TLS, SuperNode authentication (only registered public keys may
connect), a persistent database and runtime dependency installation disabled. A partner's
SuperNode dials it from the partner's own folder with the CA certificate and its own key,
and its node config names the partner config — which names its data, its HMAC key and its
ledger, all on its machine.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from fedcrm.coordinator.auditlog import AUDIT_FILE, AuditLog
from fedcrm.config import FederationConfig
from fedcrm.errors import ConfigError, FedcrmError
from fedcrm.ops.launcher import FLWR_ENV, FlwrCli, executable, flower_env, json_payload, stop_group, wait_healthy
from fedcrm.ops.pki import (cert_fingerprint, check_server_cert, create_ca, create_node_key, create_server_cert,
                            create_server_csr, key_fingerprint, load_ca_cert, read_node_public_key)
from fedcrm.privatefiles import private_dir, private_open, private_write_text
from fedcrm.protocol import NodeConfig

PARTNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# What a partner keeps in its own folder, by these names; the commands we print use them.
PARTNER_CONFIG, PARTNER_CA, PARTNER_KEY, PARTNER_PUB = "partner.toml", "ca.crt", "supernode.key", "supernode.pub"

CA_HERE = """\
- `coordinator/ca.key`: the CA's private key, made here by `federation init`. Nothing on this machine
  needs it any more: move it, with a copy of `ca.crt`, to a machine or medium kept offline
  (`mv coordinator/ca.key /media/offline-ca/`). It is needed only to sign a new SuperLink certificate
  (below)."""

CA_ELSEWHERE = """\
- The CA's private key is not on this machine: it stays where `fedcrm federation ca` made it."""

README = """# Federation {name}: which file goes where

Coordinator machine (runs the SuperLink at {address}):
- `coordinator/ca.crt`: the federation's CA certificate (public). SHA-256 fingerprint:
  `{ca_fingerprint}` — read it to each partner over another channel (phone, signed mail)
  so it can check the copy it receives.
{ca_key}
- `coordinator/superlink.key`: the SuperLink's TLS key (never leaves this machine);
  `coordinator/superlink.crt`: its certificate, signed by the CA, valid for {hosts};
  `coordinator/superlink.csr`: the signing request (public), signed again to renew the certificate.
- `coordinator/superlink.db` (runs), `coordinator/audit.jsonl` (the audit log), `coordinator/flwr-home/`,
  `coordinator/superlink.log`: created when used.
- `federation.toml`: the members.

## Signing the SuperLink certificate with a CA kept offline

1. On the CA's machine, once: `fedcrm federation ca --out CA_DIR --name {name}` (writes ca.key, ca.crt).
2. Here: `fedcrm federation init --dir DIR --name {name} --address {address} --ca-cert ca.crt`
   writes `coordinator/superlink.key` (stays here) and `coordinator/superlink.csr` (the request).
3. On the CA's machine: `fedcrm federation sign --ca-dir CA_DIR --csr superlink.csr --out superlink.crt`.
4. Here: `fedcrm federation install-cert superlink.crt --dir DIR` (checks it is the CA's, for this
   key and address) — then `fedcrm coordinator start`. Steps 3–4 again renew the certificate
   (restart the SuperLink afterwards).

## Each partner machine (runs one SuperNode): keys are made where they are used

1. The partner makes its key pair on its node, in its own folder (the one holding `partner.toml`):
   `fedcrm partner keygen --out .` — `supernode.key` (0600) never leaves that machine; it sends the
   coordinator `supernode.pub` and reads it the fingerprint printed beside it.
2. The coordinator registers that public key:
   `fedcrm federation add-partner NAME --dir DIR --public-key supernode.pub`, then
   `fedcrm coordinator register --dir DIR` (or `start`). `partners/NAME/` keeps the `.pub` and a copy of `ca.crt`.
3. The coordinator sends the partner `partners/NAME/ca.crt` and the address {address}.
4. The partner, from its folder (`partner.toml`, `ca.crt`, `supernode.key`):
   `fedcrm partner start --config partner.toml --superlink {address}`
   (`fedcrm coordinator commands --dir DIR` prints each partner's commands, with the partner's own paths only.)

For a trial on machines you control, `add-partner NAME --generate-key` makes the key pair here instead:
then `partners/NAME/supernode.key` exists on the coordinator's machine, which has seen the partner's
private key. Hand it over on a trusted channel and delete it here, and have the partner replace it
with its own key before real data is used.

Key files are mode 0600 in 0700 folders.
"""


class FederationLayout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.coordinator = self.root / "coordinator"
        self.partners = self.root / "partners"
        self.manifest = self.root / "federation.toml"
        self.ca_key, self.ca_cert = self.coordinator / "ca.key", self.coordinator / "ca.crt"
        self.server_key, self.server_cert = self.coordinator / "superlink.key", self.coordinator / "superlink.crt"
        self.server_csr = self.coordinator / "superlink.csr"
        self.database = self.coordinator / "superlink.db"
        self.log_file = self.coordinator / "superlink.log"
        self.pid_file = self.coordinator / "superlink.pid"
        self.flwr_home = self.coordinator / "flwr-home"
        self.audit = AuditLog(self.coordinator / AUDIT_FILE)

    def partner_dir(self, name: str) -> Path:
        """What the coordinator keeps for a partner: its public key and the ca.crt to send it."""
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


def _write_readme(layout: FederationLayout, name: str, address: str, hosts: list[str], ca_here: bool) -> None:
    (layout.root / "README.md").write_text(README.format(
        name=name, address=address, hosts=", ".join(hosts), ca_fingerprint=cert_fingerprint(layout.ca_cert),
        ca_key=CA_HERE if ca_here else CA_ELSEWHERE))


def init_federation(root: Path, name: str, address: str, hosts: list[str],
                    ca_cert: Path | None = None) -> FederationLayout:
    """The manifest, the README and the SuperLink's key. Without `ca_cert` a CA is made
    here and signs the SuperLink certificate at once (move ca.key offline afterwards); with
    the certificate of a CA kept elsewhere, a signing request is written instead, and
    `install_server_cert` takes the signed certificate back. Partners are added one by one,
    with their own public keys (`add_partner`)."""
    layout = FederationLayout(root)
    if layout.manifest.exists():
        raise ConfigError(f"{layout.manifest} exists: this federation is already set up "
                          "(add partners with `fedcrm federation add-partner`)")
    host = address.rsplit(":", 1)[0]
    hosts = list(dict.fromkeys([*hosts, host]))
    private_dir(layout.coordinator)
    if ca_cert is None:
        create_ca(layout.coordinator, name)
        create_server_cert(layout.coordinator, layout.ca_key, layout.ca_cert, hosts)
    else:
        load_ca_cert(ca_cert)  # a CA certificate, or a clear error before anything is written
        private_write_text(layout.ca_cert, Path(ca_cert).read_text())
        create_server_csr(layout.coordinator, hosts)
    _write_manifest(layout, name, address, [])
    _write_readme(layout, name, address, hosts, ca_here=ca_cert is None)
    layout.audit.record("federation-initialised", name=name, superlink=address, hosts=hosts,
                        ca="made here" if ca_cert is None else "kept elsewhere",
                        ca_fingerprint=cert_fingerprint(layout.ca_cert))
    return layout


def install_server_cert(root: Path, cert: Path) -> Path:
    """The SuperLink certificate signed by the CA kept elsewhere, checked (the CA's, for
    this SuperLink's key and address) and put in place."""
    layout = FederationLayout(root)
    host = layout.address.rsplit(":", 1)[0]
    if not layout.server_key.is_file():
        raise ConfigError(f"no {layout.server_key}: this is not the machine that made the signing request")
    check_server_cert(Path(cert), layout.server_key, layout.ca_cert, host)
    private_write_text(layout.server_cert, Path(cert).read_text())  # the request stays: signed again, it renews
    layout.audit.record("superlink-certificate-installed", certificate=cert_fingerprint(layout.server_cert))
    return layout.server_cert


def add_partner(root: Path, name: str, partner_id: int | None = None, public_key: Path | None = None,
                generate_key: bool = False) -> Path:
    """One more member, with the public key it made on its own node (`public_key`), or —
    for trials only, and only when asked (`generate_key`) — a key pair made here. Nobody
    else is re-keyed; a key already registered for another member is refused."""
    if public_key is not None and generate_key:
        raise ConfigError("--public-key and --generate-key exclude each other")
    if public_key is None and not generate_key:
        raise ConfigError("give the partner's public key (--public-key FILE.pub, made on its node with "
                          "`fedcrm partner keygen`), or --generate-key to make its key pair here for a trial")
    if not PARTNER_NAME.fullmatch(name):
        raise ConfigError(f"partner name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    layout = FederationLayout(root)
    cfg = layout.config()
    if any(m.name == name for m in cfg.members):
        raise ConfigError(f"partner {name!r} is already a member of {cfg.name}")
    ids = [m.partner_id for m in cfg.members]
    partner_id = partner_id if partner_id is not None else max(ids, default=0) + 1
    if partner_id in ids:
        raise ConfigError(f"partner_id {partner_id} is taken in {cfg.name}")
    line = read_node_public_key(public_key) if public_key is not None else None
    if line is not None:
        _refuse_shared_key(layout, line, public_key)
    folder = private_dir(layout.partner_dir(name))
    if line is None:
        create_node_key(folder, f"{name}@{cfg.name}")
        line = read_node_public_key(folder / PARTNER_PUB)
    else:
        private_write_text(folder / PARTNER_PUB, line + "\n")
    private_write_text(folder / PARTNER_CA, layout.ca_cert.read_text())
    _write_manifest(layout, cfg.name, cfg.superlink or "", [*((m.partner_id, m.name) for m in cfg.members), (partner_id, name)])
    layout.audit.record("partner-added", partner=name, partner_id=partner_id, public_key=key_fingerprint(line),
                        key_made_by="coordinator (trial)" if generate_key else "partner")
    return folder


def _refuse_shared_key(layout: FederationLayout, line: str, source: Path) -> None:
    """Two members with one key would be one node to Flower (it answers 'already in use')."""
    blob = line.split()[1]
    for pub in layout.partners.glob(f"*/{PARTNER_PUB}"):
        if pub.read_text().split()[1:2] == [blob]:
            raise ConfigError(f"{source} is the key already registered for {pub.parent.name}: "
                              "each partner makes a key pair of its own")


# ---------------------------------------------------------------- commands
def superlink_command(layout: FederationLayout) -> list[str]:
    host, port = layout.address.rsplit(":", 1)
    bind = "0.0.0.0" if host not in ("127.0.0.1", "localhost") else "127.0.0.1"
    return [executable("flower-superlink"), "--ssl-ca-certfile", str(layout.ca_cert),
            "--ssl-certfile", str(layout.server_cert), "--ssl-keyfile", str(layout.server_key),
            "--enable-supernode-auth", "--isolation", "subprocess", "--host", bind, "--port", port,
            "--database", str(layout.database), "--disable-runtime-dependency-installation"]


def supernode_command(partner_config: Path | str, superlink: str, ca_cert: Path | str, key: Path | str,
                      port: int = 9094, program: str | None = None) -> list[str]:
    """A SuperNode's command line, with the paths exactly as given: relative ones are the
    partner's own files, read from the folder the command is run in."""
    return [program or executable("flower-supernode"), "--superlink", superlink, "--root-certificates", str(ca_cert),
            "--auth-supernode-private-key", str(key), "--isolation", "subprocess", "--port", str(port),
            "--node-config", NodeConfig(partner_config=str(partner_config)).flag()]


def partner_commands(address: str, name: str) -> str:
    """What one partner runs, from its own folder, with its own file names only: nothing
    here names a path on the coordinator's machine."""
    env = " ".join(f"{k}={v}" for k, v in FLWR_ENV.items())
    raw = supernode_command(PARTNER_CONFIG, address, PARTNER_CA, PARTNER_KEY, program="flower-supernode")
    return (f"# partner {name}, on its machine, in its folder (holding {PARTNER_CONFIG}, the {PARTNER_CA} sent to it,\n"
            f"# and the {PARTNER_KEY} it made there with `fedcrm partner keygen --out .`):\n"
            f"fedcrm partner start --config {PARTNER_CONFIG} --superlink {address} "
            f"--root-cert {PARTNER_CA} --key {PARTNER_KEY}\n"
            f"# or, for a service manager (same folder as working directory):\n"
            f'{env} FLWR_HOME="$PWD/flwr-home" {shlex.join(raw)}')


# ---------------------------------------------------------------- processes
def check_ready(layout: FederationLayout) -> None:
    """Everything the SuperLink needs, and only that: ca.crt, its key and a certificate the
    CA signed for its address (ca.key is not needed and may be offline)."""
    for f in (layout.ca_cert, layout.server_key):
        if not f.is_file():
            raise ConfigError(f"missing {f}: run `fedcrm federation init` first")
    if not layout.server_cert.is_file():
        if layout.server_csr.is_file():
            raise ConfigError(f"the SuperLink certificate is not signed yet: take {layout.server_csr} to the CA's "
                              "machine (`fedcrm federation sign --ca-dir CA_DIR --csr superlink.csr --out "
                              f"superlink.crt`), then `fedcrm federation install-cert superlink.crt --dir {layout.root}`")
        raise ConfigError(f"missing {layout.server_cert}: run `fedcrm federation init` first")
    check_server_cert(layout.server_cert, layout.server_key, layout.ca_cert, layout.address.rsplit(":", 1)[0])


class SuperLinkProcess:
    """The coordinator's SuperLink, started in its own session and stopped by its PID."""

    def __init__(self, layout: FederationLayout) -> None:
        self.layout = layout
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> SuperLinkProcess:
        layout = self.layout
        check_ready(layout)
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
    """One partner's SuperNode (tests and single-machine trials; partners run the command),
    started in `cwd`, the partner's own folder: relative paths in its command are that
    partner's files, as on its own machine."""

    def __init__(self, partner_config: Path | str, superlink: str, ca_cert: Path | str, key: Path | str,
                 flwr_home: Path, port: int, log_file: Path, cwd: Path | None = None) -> None:
        self.command = supernode_command(partner_config, superlink, ca_cert, key, port)
        self.cwd = Path(cwd) if cwd is not None else flwr_home
        self.flwr_home, self.log_file = flwr_home, log_file
        self.process: subprocess.Popen[bytes] | None = None
        missing = [f for f in (partner_config, ca_cert, key) if not (self.cwd / f).is_file()]
        if missing:
            raise ConfigError(f"the SuperNode in {self.cwd} would not find {', '.join(map(str, missing))}")

    def start(self) -> SuperNodeProcess:
        private_dir(self.flwr_home)
        with private_open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(self.command, env=flower_env(self.flwr_home), cwd=self.cwd,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        stop_group(self.process)
