"""`fedcrm federation`: provision a deployed federation."""

from __future__ import annotations

from typing import Annotated

import typer

from fedcrm.cli.common import DirOpt, console, typer_app

app = typer_app("Provision a deployed federation: CA, SuperLink certificate, partner keys.")


@app.command("init")
def federation_init(
    dir: DirOpt, name: Annotated[str, typer.Option(help="federation name (also the flwr connection name)")],
    address: Annotated[str, typer.Option(help="host:port partners dial for the SuperLink")] = "127.0.0.1:9200",
    host: Annotated[list[str] | None, typer.Option(help="extra name or IP for the certificate (repeat)")] = None,
    partner: Annotated[list[str] | None, typer.Option(help="a partner to create a key for (repeat)")] = None,
) -> None:
    """Create the CA, the SuperLink certificate, a key pair per partner and a README."""
    from fedcrm.ops.deployment import init_federation

    layout = init_federation(dir, name, address, host or [], partner or [])
    console.print(f"federation {name}: {layout.root} ({len(layout.config().members)} partners); "
                  f"which file goes where: {layout.root / 'README.md'}")


@app.command("add-partner")
def federation_add_partner(name: Annotated[str, typer.Argument()], dir: DirOpt,
                           partner_id: Annotated[int | None, typer.Option()] = None) -> None:
    """A key pair for one more partner; the others keep theirs."""
    from fedcrm.ops.deployment import add_partner

    folder = add_partner(dir, name, partner_id)
    console.print(f"partner {name}: {folder} (register it with `fedcrm coordinator register --dir {dir}`)")
