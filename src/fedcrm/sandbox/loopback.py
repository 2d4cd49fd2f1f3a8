"""A whole deployed federation on one machine: provisioning, a TLS SuperLink with node
authentication, and one SuperNode per partner — all real processes on 127.0.0.1. For
trying a deployment before the partners' machines exist, and for the tests and the
latency benchmark. Stop it with `stop()`; every process is stopped by its PID."""

from __future__ import annotations

from pathlib import Path

from fedcrm.config import FederationConfig
from fedcrm.ops.deployment import (FederationLayout, SuperLinkProcess, SuperNodeProcess, add_partner, init_federation,
                               register_partners)
from fedcrm.ops.launcher import free_port


class LoopbackFederation:
    def __init__(self, root: Path, consortium: Path, name: str = "loopback") -> None:
        """`consortium`: a federation config whose members name their partner configs."""
        self.root = Path(root)
        members = FederationConfig.load(consortium).members
        self.partners = {m.name: m.config for m in members}
        self.layout: FederationLayout = init_federation(self.root / "federation", name, f"127.0.0.1:{free_port()}", [], [])
        for m in members:
            add_partner(self.layout.root, m.name, m.partner_id)
        self.link: SuperLinkProcess | None = None
        self.nodes: dict[str, SuperNodeProcess] = {}

    def start(self) -> LoopbackFederation:
        self.link = SuperLinkProcess(self.layout).start()
        register_partners(self.layout)
        self.nodes = {name: self.supernode(name) for name in self.partners}
        return self

    def supernode(self, name: str, key: Path | None = None, label: str = "") -> SuperNodeProcess:
        """Start `name`'s SuperNode (with another `key`, under another `label`, to play an intruder)."""
        folder = self.layout.partner_dir(name)
        work = self.root / "nodes" / (label or name)
        return SuperNodeProcess(self.partners[name], self.layout.address, folder / "ca.crt",
                                key or folder / "supernode.key", work / "flwr-home", free_port(),
                                work / "supernode.log").start()

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.link is not None:
            self.link.stop()
