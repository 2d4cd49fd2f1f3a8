"""A whole deployed federation on one machine: provisioning, a TLS SuperLink with node
authentication, and one SuperNode per partner — all real processes on 127.0.0.1. For
trying a deployment before the partners' machines exist, and for the tests and the
latency benchmark. Stop it with `stop()`; every process is stopped by its PID.

It keeps the machines apart as a real deployment would, with folders standing in for them:

- `<root>/offline-ca/`: the CA's machine. Its key signs the SuperLink's request and stays there.
- `<root>/federation/`: the coordinator's. It gets the CA certificate, partners' `.pub` files
  and nothing else of theirs.
- each partner's own folder (the one holding its `partner.toml`, data and HMAC key): the
  partner makes its key pair there, receives `ca.crt` there, and its SuperNode runs with
  that folder as working directory and relative paths to its own files only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.ops.deployment import (PARTNER_CA, PARTNER_KEY, FederationLayout, SuperLinkProcess, SuperNodeProcess,
                                   add_partner, init_federation, install_server_cert, register_partners)
from fedcrm.ops.launcher import free_port
from fedcrm.ops.pki import create_ca, create_node_key, sign_server_csr


class LoopbackFederation:
    def __init__(self, root: Path, consortium: Path, name: str = "loopback") -> None:
        """`consortium`: a federation config whose members name their partner configs, each
        in a folder of its own (the partner's machine)."""
        self.root = Path(root)
        members = FederationConfig.load(consortium).members
        self.partners = {m.name: m.config for m in members}
        self.folders = {m.name: m.config.parent for m in members}
        self.ca_dir = self.root / "offline-ca"
        self.layout: FederationLayout = self._provision(name)
        for m in members:
            self._join(m.name, m.partner_id, f"{m.name}@{name}")
        self.link: SuperLinkProcess | None = None
        self.nodes: dict[str, SuperNodeProcess] = {}

    def _provision(self, name: str) -> FederationLayout:
        """The coordinator's folder with a SuperLink certificate signed by the CA kept apart."""
        ca_key, ca_cert = create_ca(self.ca_dir, name)
        layout = init_federation(self.root / "federation", name, f"127.0.0.1:{free_port()}", [], ca_cert=ca_cert)
        signed = sign_server_csr(layout.server_csr, ca_key, ca_cert, self.ca_dir / "superlink.crt")
        install_server_cert(layout.root, signed)
        return layout

    def _join(self, name: str, partner_id: int, comment: str) -> None:
        """The partner makes its key pair in its folder; only the public key goes to the
        coordinator, and only the CA certificate comes back."""
        folder = self.folders[name]
        _, public = create_node_key(folder, comment)
        add_partner(self.layout.root, name, partner_id, public_key=public)
        shutil.copyfile(self.layout.partner_dir(name) / PARTNER_CA, folder / PARTNER_CA)

    def start(self) -> LoopbackFederation:
        self.link = SuperLinkProcess(self.layout).start()
        register_partners(self.layout)
        self.nodes = {name: self.supernode(name) for name in self.partners}
        return self

    def supernode(self, name: str, key: Path | None = None, label: str = "") -> SuperNodeProcess:
        """Start `name`'s SuperNode from its own folder (with another `key`, under another
        `label`, to play an intruder)."""
        folder = self.folders[name]
        work = PartnerConfig.load(self.partners[name]).work_dir if not label else self.root / "nodes" / label
        return SuperNodeProcess(self.partners[name].name, self.layout.address, PARTNER_CA, key or PARTNER_KEY,
                                work / "flwr-home", free_port(), work / "supernode.log", cwd=folder).start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.link is not None:
            self.link.stop()
