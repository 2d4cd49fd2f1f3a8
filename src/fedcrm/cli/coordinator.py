"""`fedcrm coordinator`: the coordinator's SuperLink and its runs (deployment)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedcrm.cli.common import DirOpt, MlflowOpt, MlflowUriOpt, Task, console, typer_app, watch_deployed
from fedcrm.cli.plan_options import Model, plan_from, plan_option, warn_short_run
from fedcrm.errors import ConfigError

app = typer_app("The coordinator's SuperLink and its runs (deployment).")
DetachOpt = Annotated[bool, typer.Option(help="submit and return")]


@app.command("commands")
def coordinator_commands(dir: DirOpt) -> None:
    """Print the start commands for the coordinator and for each partner (the partners'
    name only their own files, relative to their own folder)."""
    import shlex

    from fedcrm.ops.deployment import FederationLayout, partner_commands, superlink_command
    from fedcrm.ops.launcher import FLWR_ENV
    from fedcrm.ops.pki import cert_fingerprint

    layout = FederationLayout(dir)
    env = " ".join(f"{k}={v}" for k, v in FLWR_ENV.items())
    print(f"# coordinator ({layout.address}); or: fedcrm coordinator start --dir {dir}")
    print(f"{env} FLWR_HOME={layout.flwr_home} {shlex.join(superlink_command(layout))}")
    print(f"\n# every partner: ca.crt from partners/<name>/ in this federation folder; its SHA-256 fingerprint,\n"
          f"# to read to the partner over another channel: {cert_fingerprint(layout.ca_cert)}")
    for m in layout.config().members:
        print()
        print(partner_commands(layout.address, m.name))


@app.command("start")
def coordinator_start(dir: DirOpt) -> None:
    """Start the SuperLink (TLS, node auth, persistent database) in the background and
    register every partner's key."""
    from fedcrm.ops.deployment import FederationLayout, SuperLinkProcess, register_partners

    layout = FederationLayout(dir)
    if layout.pid_file.exists():
        raise ConfigError(f"{layout.pid_file} exists: the SuperLink may be running (`fedcrm coordinator stop`)")
    link = SuperLinkProcess(layout).start()
    console.print(f"SuperLink on {layout.address}, PID {link.process.pid}, log {layout.log_file}")
    for partner, state in register_partners(layout).items():
        console.print(f"  {partner}: {state}")


@app.command("stop")
def coordinator_stop(dir: DirOpt) -> None:
    """Stop the SuperLink started by `coordinator start`, by its PID."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.launcher import stop_pid

    layout = FederationLayout(dir)
    if not layout.pid_file.exists():
        raise ConfigError(f"no {layout.pid_file}: the SuperLink was not started from here")
    pid = int(layout.pid_file.read_text())
    running = stop_pid(pid)
    layout.pid_file.unlink()
    layout.audit.record("superlink-stopped", pid=pid, was_running=running)
    console.print(f"SuperLink PID {pid} {'stopped' if running else 'was not running'}")


@app.command("register")
def coordinator_register(dir: DirOpt) -> None:
    """Register every member's public key with the running SuperLink (idempotent)."""
    from fedcrm.ops.deployment import FederationLayout, register_partners

    for partner, state in register_partners(FederationLayout(dir)).items():
        console.print(f"{partner}: {state}")


@app.command("run")
def coordinator_run(
    ctx: typer.Context, dir: DirOpt, out: Annotated[Path, typer.Option(help="run directory on this machine")],
    rounds: int = plan_option("rounds"), task: Task = plan_option("task"), model: Model = plan_option("model"),
    epsilon: float = plan_option("epsilon"), min_partners: int = plan_option("min_partners"),
    round_timeout: float = plan_option("round_timeout"), local_epochs: int = plan_option("local_epochs"),
    batch_size: int = plan_option("batch_size"), learning_rate: float = plan_option("learning_rate"),
    evaluate_every: int = plan_option("evaluate_every"), trees_per_round: int = plan_option("trees_per_round"),
    depth: int = plan_option("depth"), local_baseline: bool = plan_option("local_baseline"),
    pull_interval: float = plan_option("pull_interval"),
    detach: DetachOpt = False, mlflow: MlflowOpt = False, mlflow_uri: MlflowUriOpt = None,
) -> None:
    """Launch a run on the deployed federation and watch it round by round."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import launch

    plan = plan_from(ctx)  # before anything is submitted
    warn_short_run(plan)
    layout = FederationLayout(dir)
    run_id = launch(layout, out, plan.to_run_config(exclude_unset=True))
    console.print(f"run {run_id} submitted; results in {out}")
    if not detach:
        watch_deployed(layout, run_id, mlflow, mlflow_uri)


@app.command("watch")
def coordinator_watch(run_id: int, dir: DirOpt) -> None:
    """Follow a run round by round until it ends, then collect it."""
    from fedcrm.ops.deployment import FederationLayout

    watch_deployed(FederationLayout(dir), run_id)


@app.command("stop-run")
def coordinator_stop_run(run_id: int, dir: DirOpt) -> None:
    """Ask the SuperLink to stop a run (`flwr stop`)."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import stop

    console.print(stop(FederationLayout(dir), run_id))


@app.command("collect")
def coordinator_collect(run_id: int, dir: DirOpt,
                        out: Annotated[Path | None, typer.Option(help="default: the run's own directory")] = None) -> None:
    """Model, metrics, per-partner ε and Flower's logs of a run in one local directory."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import collect

    console.print(f"collected in {collect(FederationLayout(dir), run_id, out)}")


@app.command("resume")
def coordinator_resume(run_dir: Annotated[Path, typer.Argument(help="the interrupted run's directory")], dir: DirOpt,
                       detach: DetachOpt = False) -> None:
    """Continue an interrupted run after its last completed round."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import resume

    layout = FederationLayout(dir)
    run_id = resume(layout, run_dir)
    console.print(f"run {run_id} resumes {run_dir}")
    if not detach:
        watch_deployed(layout, run_id)


@app.command("verify")
def coordinator_verify(dir: DirOpt) -> None:
    """Check the audit log's chain and anchor; exit 1 if it does not verify."""
    from fedcrm.ops.deployment import FederationLayout

    status = FederationLayout(dir).audit.verify()
    console.print(f"audit log {status.path}: " + (f"OK, {status.entries} entries" if status.ok else f"NOT OK: {status.problem}"))
    raise typer.Exit(0 if status.ok else 1)
