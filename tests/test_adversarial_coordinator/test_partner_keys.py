"""Attack 12 of issue 12: keys are made where they are used.

Before the fix, `fedcrm federation add-partner` made every partner's SuperNode private key
on the coordinator's machine, no command took a partner's public key, the CA key had to
sit in the coordinator's folder, and the partner commands printed by `coordinator
commands` named the coordinator's absolute paths. Now a partner runs `fedcrm partner
keygen` on its node and sends the `.pub`; `add-partner --public-key` checks and registers
it (`--generate-key` is the explicit trial convenience); the CA can be made and kept
elsewhere and sign the SuperLink's request; partner commands name the partner's own files.

Commands run as users run them (`python -m fedcrm`), with no Flower process started; the
deployed federation in `tests/test_deployment.py` runs each partner from its own folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fedcrm.ops import deployment
from fedcrm.ops.deployment import FederationLayout


def fedcrm(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "fedcrm", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "400"}, timeout=120)
    proc.text = " ".join((proc.stdout + proc.stderr).split())  # type: ignore[attr-defined]
    return proc


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture()
def federation(tmp_path: Path) -> Path:
    """A coordinator's federation folder with the CA made there (the trial default)."""
    proc = fedcrm("federation", "init", "--dir", tmp_path / "fed", "--name", "keys-test", "--address", "127.0.0.1:9299")
    assert proc.returncode == 0, proc.text
    return tmp_path / "fed"


def test_keygen_makes_a_private_key_on_the_node_and_prints_only_the_public_one(tmp_path: Path) -> None:
    node = tmp_path / "north"
    node.mkdir(mode=0o755)
    (node / "partner.toml").write_text("# the partner's own folder\n")
    proc = fedcrm("partner", "keygen", "--out", ".", cwd=node)
    assert proc.returncode == 0, proc.text
    key, pub = node / "supernode.key", node / "supernode.pub"
    assert (mode(node), mode(key)) == (0o700, 0o600)  # the folder was narrowed, the key born 0600
    public_line = pub.read_text().strip()
    assert public_line.startswith("ecdsa-sha2-nistp384 ") and public_line in proc.stdout
    assert "SHA256:" in proc.text and "never send it" in proc.text
    assert "PRIVATE" not in proc.stdout and key.read_text().split("\n")[1] not in proc.stdout

    again = fedcrm("partner", "keygen", "--out", node)
    assert again.returncode == 2 and "exists" in again.text
    assert pub.read_text().strip() == public_line  # never silently re-keyed


def test_add_partner_registers_the_partners_own_public_key(federation: Path, tmp_path: Path) -> None:
    node = tmp_path / "north"
    keygen = fedcrm("partner", "keygen", "--out", node)
    assert keygen.returncode == 0, keygen.text
    proc = fedcrm("federation", "add-partner", "north", "--dir", federation, "--public-key", node / "supernode.pub")
    assert proc.returncode == 0, proc.text
    kept = federation / "partners" / "north"
    assert sorted(p.name for p in kept.iterdir()) == ["ca.crt", "supernode.pub"]
    assert kept.joinpath("supernode.pub").read_text().split()[:2] == node.joinpath("supernode.pub").read_text().split()[:2]
    assert not list(federation.rglob("supernode.key"))
    entry = [e for e in FederationLayout(federation).audit.entries() if e.action == "partner-added"][-1]
    assert entry.details["key_made_by"] == "partner"
    fingerprint = entry.details["public_key"]  # what partner and coordinator read to each other
    assert fingerprint.startswith("SHA256:") and fingerprint in proc.text and fingerprint in keygen.text


def _bad_keys(folder: Path) -> dict[str, tuple[Path, str]]:
    """File → what the error must say about it."""
    folder.mkdir()
    ec_key = ec.generate_private_key(ec.SECP384R1())
    private = folder / "sent-the-private.key"
    private.write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()))
    rsa_pub = folder / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    junk = folder / "junk.pub"
    junk.write_text("not a key\n")
    return {"private": (private, "PRIVATE key"), "rsa": (rsa_pub, "ECDSA"), "junk": (junk, "not an OpenSSH public key"),
            "missing": (folder / "none.pub", "no public key file")}


def test_add_partner_refuses_what_is_not_a_partners_public_key(federation: Path, tmp_path: Path) -> None:
    manifest = (federation / "federation.toml").read_text()
    for kind, (path, says) in _bad_keys(tmp_path / "keys").items():
        proc = fedcrm("federation", "add-partner", kind, "--dir", federation, "--public-key", path)
        assert proc.returncode == 2 and str(path) in proc.text and says in proc.text, (kind, proc.text)
        assert "Traceback" not in proc.text
    neither = fedcrm("federation", "add-partner", "east", "--dir", federation)
    assert neither.returncode == 2 and "--public-key" in neither.text and "--generate-key" in neither.text
    outside = fedcrm("federation", "add-partner", "../../elsewhere", "--dir", federation, "--generate-key")
    assert outside.returncode == 2 and "names a folder" in outside.text
    assert (federation / "federation.toml").read_text() == manifest and not (federation / "partners").exists()

    node = tmp_path / "node"
    assert fedcrm("partner", "keygen", "--out", node).returncode == 0
    assert fedcrm("federation", "add-partner", "east", "--dir", federation, "--public-key", node / "supernode.pub").returncode == 0
    twice = fedcrm("federation", "add-partner", "west", "--dir", federation, "--public-key", node / "supernode.pub")
    assert twice.returncode == 2 and "already registered for east" in twice.text


def test_generating_a_partners_key_here_is_explicit_and_flagged(federation: Path) -> None:
    proc = fedcrm("federation", "add-partner", "trial", "--dir", federation, "--generate-key")
    assert proc.returncode == 0 and "trial key" in proc.text and "delete it here" in proc.text, proc.text
    assert mode(federation / "partners" / "trial" / "supernode.key") == 0o600
    entry = [e for e in FederationLayout(federation).audit.entries() if e.action == "partner-added"][-1]
    assert entry.details["key_made_by"] == "coordinator (trial)"


def test_partner_commands_name_only_the_partners_own_files(federation: Path, tmp_path: Path) -> None:
    node = tmp_path / "north"
    assert fedcrm("partner", "keygen", "--out", node).returncode == 0
    assert fedcrm("federation", "add-partner", "north", "--dir", federation, "--public-key", node / "supernode.pub").returncode == 0
    proc = fedcrm("coordinator", "commands", "--dir", federation)
    assert proc.returncode == 0, proc.text
    partner = proc.stdout[proc.stdout.index("# partner north"):]
    assert str(federation.resolve()) not in partner and str(tmp_path) not in partner
    assert not [token for token in partner.split() if token.startswith("/")], partner  # no absolute path at all
    assert "--root-certificates ca.crt --auth-supernode-private-key supernode.key" in partner
    assert "fedcrm partner start --config partner.toml" in partner


def test_the_ca_key_can_live_offline(tmp_path: Path) -> None:
    """CA made on its own machine; the coordinator sends a request and installs what comes
    back; nothing on the coordinator needs ca.key, before or after."""
    ca, fed = tmp_path / "offline-ca", tmp_path / "fed"
    assert fedcrm("federation", "ca", "--out", ca, "--name", "keys-test").returncode == 0
    assert (mode(ca), mode(ca / "ca.key")) == (0o700, 0o600)
    init = fedcrm("federation", "init", "--dir", fed, "--name", "keys-test", "--address", "127.0.0.1:9299",
                  "--ca-cert", ca / "ca.crt")
    assert init.returncode == 0, init.text
    layout = FederationLayout(fed)
    assert not layout.ca_key.exists() and layout.server_csr.is_file() and not layout.server_cert.exists()
    early = fedcrm("coordinator", "start", "--dir", fed)  # refused before any process starts
    assert early.returncode == 2 and "not signed yet" in early.text and "federation sign" in early.text

    other = tmp_path / "other-ca"
    assert fedcrm("federation", "ca", "--out", other, "--name", "someone-else").returncode == 0
    assert fedcrm("federation", "sign", "--ca-dir", other, "--csr", layout.server_csr, "--out", tmp_path / "bad.crt").returncode == 0
    wrong = fedcrm("federation", "install-cert", tmp_path / "bad.crt", "--dir", fed)
    assert wrong.returncode == 2 and "not signed by the federation's CA" in wrong.text

    signed = fedcrm("federation", "sign", "--ca-dir", ca, "--csr", layout.server_csr, "--out", tmp_path / "superlink.crt")
    assert signed.returncode == 0 and "127.0.0.1" in signed.text, signed.text
    assert fedcrm("federation", "install-cert", tmp_path / "superlink.crt", "--dir", fed).returncode == 0
    deployment.check_ready(layout)  # what `coordinator start` checks before starting the SuperLink
    assert "fedcrm federation sign" in (fed / "README.md").read_text()
    assert not layout.ca_key.exists()


def test_every_command_works_once_a_local_ca_key_is_moved_offline(federation: Path, tmp_path: Path) -> None:
    layout = FederationLayout(federation)
    shutil.move(layout.ca_key, tmp_path / "ca.key")  # as the generated README says
    node = tmp_path / "north"
    assert fedcrm("partner", "keygen", "--out", node).returncode == 0
    assert fedcrm("federation", "add-partner", "north", "--dir", federation, "--public-key", node / "supernode.pub").returncode == 0
    assert fedcrm("coordinator", "commands", "--dir", federation).returncode == 0
    deployment.check_ready(layout)
    assert fedcrm("coordinator", "verify", "--dir", federation).returncode == 0
    assert json.loads(layout.audit.path.read_text().splitlines()[0])["action"] == "federation-initialised"
