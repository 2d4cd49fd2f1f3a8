"""`fedcrm federation`: provision a deployed federation, each key made where it is used."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import DirOpt, console, typer_app

app = typer_app("Provision a deployed federation: the CA, the SuperLink certificate, partners' public keys.")


@app.command("ca")
def federation_ca(
    out: Annotated[Path, typer.Option(help="folder for ca.key and ca.crt, on the machine that keeps the CA")],
    name: Annotated[str, typer.Option(help="federation name (in the CA's name)")],
) -> None:
    """Make the federation's CA where it will be kept (offline): ca.key stays there."""
    from fedcrm.ops.pki import cert_fingerprint, create_ca

    key, cert = create_ca(out, name)
    console.print(f"CA for {name}: {key} (private, keep it here) and {cert} (give a copy to the coordinator); "
                  f"SHA-256 fingerprint {cert_fingerprint(cert)}", emoji=False)  # ':CD:' is not a CD


@app.command("init")
def federation_init(
    dir: DirOpt, name: Annotated[str, typer.Option(help="federation name (also the flwr connection name)")],
    address: Annotated[str, typer.Option(help="host:port partners dial for the SuperLink")] = "127.0.0.1:9200",
    host: Annotated[list[str] | None, typer.Option(help="extra name or IP for the certificate (repeat)")] = None,
    ca_cert: Annotated[Path | None, typer.Option(
        help="the ca.crt of a CA kept elsewhere (`federation ca`): write a signing request for it instead of "
             "making a CA here")] = None,
) -> None:
    """Set up the coordinator's folder: the SuperLink key and certificate (or its signing
    request), the members file and a README. Partners join with `add-partner`."""
    from fedcrm.ops.deployment import init_federation

    layout = init_federation(dir, name, address, host or [], ca_cert=ca_cert)
    console.print(f"federation {name}: {layout.root}; which file goes where: {layout.root / 'README.md'}")
    if ca_cert is None:
        console.print(f"the CA was made here: move {layout.ca_key} offline; nothing here needs it any more")
    else:
        console.print(f"signing request: {layout.server_csr}. Sign it where the CA key is "
                      "(`fedcrm federation sign --ca-dir CA_DIR --csr superlink.csr --out superlink.crt`), then "
                      f"`fedcrm federation install-cert superlink.crt --dir {dir}`")


@app.command("sign")
def federation_sign(
    ca_dir: Annotated[Path, typer.Option(help="the CA's folder (ca.key and ca.crt, from `federation ca`)")],
    csr: Annotated[Path, typer.Option(help="the SuperLink's superlink.csr")],
    out: Annotated[Path, typer.Option(help="where to write the certificate")] = Path("superlink.crt"),
) -> None:
    """On the CA's machine: sign the SuperLink's request (its hosts, for TLS serving only)."""
    from fedcrm.ops.pki import san_hosts, sign_server_csr

    cert = sign_server_csr(csr, ca_dir / "ca.key", ca_dir / "ca.crt", out)
    console.print(f"signed: {cert}, valid for {', '.join(san_hosts(cert))}; take it back to the coordinator "
                  "(`fedcrm federation install-cert`)")


@app.command("install-cert")
def federation_install_cert(cert: Annotated[Path, typer.Argument(help="superlink.crt signed by the CA")],
                            dir: DirOpt) -> None:
    """Check the signed SuperLink certificate (the CA's, for this key and address) and put it in place."""
    from fedcrm.ops.deployment import install_server_cert

    console.print(f"installed {install_server_cert(dir, cert)}; start the SuperLink with "
                  f"`fedcrm coordinator start --dir {dir}`")


@app.command("add-partner")
def federation_add_partner(
    name: Annotated[str, typer.Argument()], dir: DirOpt,
    public_key: Annotated[Path | None, typer.Option(
        help="the supernode.pub the partner made on its node (`fedcrm partner keygen`) and sent")] = None,
    generate_key: Annotated[bool, typer.Option(
        help="trials only: make the partner's key pair here, so this machine holds its private key")] = False,
    partner_id: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Register one more partner with the public key it made itself; the others keep theirs."""
    from fedcrm.ops.deployment import PARTNER_CA, PARTNER_PUB, add_partner
    from fedcrm.ops.pki import key_fingerprint

    folder = add_partner(dir, name, partner_id, public_key=public_key, generate_key=generate_key)
    console.print(f"partner {name}: key {key_fingerprint((folder / PARTNER_PUB).read_text())} (check it with the "
                  f"partner); send it {folder / PARTNER_CA}; register it with `fedcrm coordinator register --dir {dir}`",
                  emoji=False)
    if generate_key:
        console.print(f"[yellow]trial key:[/yellow] {folder / 'supernode.key'} is the partner's private key, made "
                      "here. Hand it over on a trusted channel and delete it here; for real data, have the partner "
                      "make its own (`fedcrm partner keygen`) and add it with --public-key")
