"""`fedcrm partner`: commands a partner runs on its own node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import PartnerConfigOpt, Task, console, typer_app
from fedcrm.cli.contract import partner_map

app = typer_app("Partner-side commands (run on the partner's node).")


@app.command("init")
def partner_init(config: PartnerConfigOpt) -> None:
    """Create the partner's HMAC key (0600) and work dir named in its config. Running it
    again is harmless: an existing key is checked and kept (a new key would re-pseudonymise
    every customer and move the hold-out split)."""
    from fedcrm.config import PartnerConfig
    from fedcrm.data.secret import create_secret, load_secret
    from fedcrm.privatefiles import private_dir

    cfg = PartnerConfig.load(config)
    if cfg.secret_file.exists():
        load_secret(cfg.secret_file)  # refuses a key others can read, or a short one
        done = f"key {cfg.secret_file} exists and is sound: kept"
    else:
        create_secret(cfg.secret_file)
        done = f"key written to {cfg.secret_file} (mode 0600, keep it on this node)"
    private_dir(cfg.work_dir)  # raw values, linkage and the ledger live here: owner only
    console.print(f"partner {cfg.name}: {done}; work dir {cfg.work_dir}")


@app.command("check")
def partner_check(
    config: PartnerConfigOpt,
    task: Annotated[Task | None, typer.Option(help="also require the label source of this task")] = None,
    k_threshold: Annotated[int | None, typer.Option(help="k target (default: the contract's, else the config's "
                                                         "generalisation.k_threshold)")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 on any finding (with a contract: always)")] = False,
    quarantine: Annotated[Path | None, typer.Option(help="write the quarantined rows (row, reason, raw values) "
                                                         "here, owner-only; .parquet or .csv")] = None,
    html: Annotated[Path | None, typer.Option(help="also write the report as an HTML page")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON")] = None,
) -> None:
    """Validate the partner's export against its mapping, print a data-quality report and
    the model features the mapping feeds, and gate: a mapping that feeds no feature, a
    one-class label or a low k is a finding (exit 1 under --strict or the contract's
    thresholds); an unreadable key field, or a field mostly unreadable, means the mapping is
    wrong (exit 1 always)."""
    from fedcrm.config import PartnerConfig
    from fedcrm.data.quality import check_partner, render

    cfg = PartnerConfig.load(config)
    report = check_partner(cfg, task, k_threshold, quarantine_out=quarantine)
    console.print(render(report))
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))
    if html:
        from fedcrm.reports.quality import write_html

        console.print(f"data-quality page: {write_html(report, html, quarantine)}")
    if quarantine:
        console.print(f"quarantined rows: {quarantine} ({report.cleaning.rows_quarantined})")
    for finding in report.findings:
        console.print(f"[yellow]finding:[/yellow] {finding}", emoji=False, highlight=False)
    if report.errors or report.findings and (strict or cfg.contract is not None):
        raise typer.Exit(1)


@app.command("keygen")
def partner_keygen(
    out: Annotated[Path, typer.Option(help="this node's folder for the key pair (made or narrowed to 0700)")] = Path("."),
    comment: Annotated[str | None, typer.Option(help="label in the public key (default: fedcrm-supernode@HOST)")] = None,
) -> None:
    """Make this node's SuperNode key pair here; print what to send the coordinator (the .pub only)."""
    import socket

    from fedcrm.ops.pki import create_node_key, key_fingerprint, read_node_public_key

    key, public = create_node_key(out, comment or f"fedcrm-supernode@{socket.gethostname()}")
    line = read_node_public_key(public)
    console.print(f"SuperNode key pair in {out.resolve()} (folder 0700):\n"
                  f"  {key.name}  private (0600): stays on this machine, never send it\n"
                  f"  {public.name}  public: send this file to the coordinator, and read it this fingerprint over "
                  f"another channel: {key_fingerprint(line)}", emoji=False)
    print(line)  # the public key itself, unwrapped, to paste if a file cannot be sent


@app.command("start")
def partner_start(
    config: PartnerConfigOpt,
    superlink: Annotated[str, typer.Option(help="host:port of the coordinator's SuperLink")],
    root_cert: Annotated[Path, typer.Option(help="the federation's ca.crt, as the coordinator sent it")] = Path("ca.crt"),
    key: Annotated[Path, typer.Option(help="this partner's supernode.key (`fedcrm partner keygen`)")] = Path("supernode.key"),
    port: Annotated[int, typer.Option(help="local port of this SuperNode's runtime API")] = 9094,
) -> None:
    """Run this partner's SuperNode in the foreground (TLS, its key, its own config)."""
    import os

    from fedcrm.config import PartnerConfig
    from fedcrm.errors import ConfigError
    from fedcrm.ops.deployment import supernode_command
    from fedcrm.ops.launcher import flower_env
    from fedcrm.privatefiles import private_dir

    cfg = PartnerConfig.load(config)
    for path, what in ((root_cert, "the federation's ca.crt (sent by the coordinator)"),
                       (key, "this node's supernode.key (`fedcrm partner keygen`)")):
        if not path.is_file():
            raise ConfigError(f"no {path}: {what}")
    flwr_home = private_dir(cfg.work_dir / "flwr-home")
    cmd = supernode_command(config.resolve(), superlink, root_cert.resolve(), key.resolve(), port)
    console.print(f"partner {cfg.name}: SuperNode to {superlink} (FLWR_HOME {flwr_home})")
    os.execve(cmd[0], cmd, flower_env(flwr_home))


# `fedcrm partner map`: a partner's export mapped onto the consortium's contract (the body
# lives with the contract commands)
app.command("map")(partner_map)
