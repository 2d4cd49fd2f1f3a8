"""`fedcrm`: the command line for partners, the coordinator and the demo."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcrm.config import FederationConfig, PartnerConfig
from fedcrm.errors import ConfigError, FedcrmError
from fedcrm.ops.launcher import simulate
from fedcrm.reports.tables import format_row, read_rounds, round_table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if sys.stdout.isatty() else 150)


partner_app = typer.Typer(no_args_is_help=True, help="Partner-side commands (run on the partner's node).")
app.add_typer(partner_app, name="partner")


@partner_app.command("init")
def partner_init(config: Annotated[Path, typer.Option(help="the partner config (partner.toml)")]) -> None:
    """Create the partner's HMAC key (0600) and work dir named in its config."""
    from fedcrm.config import PartnerConfig
    from fedcrm.data.pseudonymise import create_secret

    cfg = PartnerConfig.load(config)
    create_secret(cfg.secret_file)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"partner {cfg.name}: key written to {cfg.secret_file} (mode 0600, keep it on this node); "
                  f"work dir {cfg.work_dir}")


@partner_app.command("check")
def partner_check(
    config: Annotated[Path, typer.Option(help="the partner config (partner.toml)")],
    task: Annotated[str | None, typer.Option(help="also require the label source of this task")] = None,
    k_threshold: Annotated[int | None, typer.Option(help="k target (default: the config's generalisation.k_threshold)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the report as JSON")] = None,
) -> None:
    """Validate the partner's export against its mapping and print a data-quality report."""
    from fedcrm.config import PartnerConfig
    from fedcrm.data.quality import check_partner, render

    report = check_partner(PartnerConfig.load(config), task, k_threshold)
    console.print(render(report))
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))


privacy_app = typer.Typer(no_args_is_help=True, help="Privacy budget: plan, verify the ledger, audit a model.")
app.add_typer(privacy_app, name="privacy")

ConfigOpt = Annotated[Path | None, typer.Option(help="one partner's config (run on its node)")]
FederationOpt = Annotated[Path | None, typer.Option(help="every member with a partner config (simulation)")]


def _partners(config: Path | None, federation: Path | None) -> list[PartnerConfig]:
    if (config is None) == (federation is None):
        raise ConfigError("give exactly one of --config (one partner) or --federation (every member)")
    if config is not None:
        return [PartnerConfig.load(config)]
    members = FederationConfig.load(federation).members
    missing = [m.name for m in members if m.config is None]
    if missing:
        raise ConfigError(f"federation {federation}: no partner config for {', '.join(missing)}")
    return [PartnerConfig.load(m.config) for m in members]


@privacy_app.command("plan")
def privacy_plan(
    config: ConfigOpt = None, federation: FederationOpt = None,
    rounds: int = 5, epsilon: Annotated[float, typer.Option(help="target ε this run may add")] = 3.0,
    task: str = "churn", local_epochs: int = 1, batch_size: int = 64, max_grad_norm: float = 1.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the plans as JSON")] = None,
) -> None:
    """Before a run: the noise each partner will use and its ε after every round, against its cap."""
    from fedcrm.config import TrainPlan
    from fedcrm.node.partner import PartnerNode
    from fedcrm.reports.tables import plan_table

    plan = TrainPlan(num_server_rounds=rounds, dp_target_epsilon=epsilon, task=task, local_epochs=local_epochs,
                     batch_size=batch_size, dp_max_grad_norm=max_grad_norm)
    plans = [PartnerNode(cfg, plan).plan_run() for cfg in _partners(config, federation)]
    console.print(plan_table(plans))
    for p in plans:
        if p.first_refused_round is not None:
            console.print(f"[yellow]{p.partner}: round {p.first_refused_round} would pass its cap of "
                          f"{p.epsilon_cap:g}; its node will refuse from that round on[/yellow]")
    if json_out:
        json_out.write_text(json.dumps([p.model_dump() for p in plans], indent=2))


@privacy_app.command("verify")
def privacy_verify(config: ConfigOpt = None, federation: FederationOpt = None) -> None:
    """Check each partner's ledger chain and anchor; exit 1 if any does not verify."""
    from fedcrm.privacy.ledger import Ledger

    bad = 0
    for cfg in _partners(config, federation):
        status = Ledger(cfg.work_dir).verify()
        if status.ok:
            console.print(f"{cfg.name}: ledger OK, {status.entries} entries, head {status.head_hash[:16]}…")
        else:
            bad += 1
            console.print(f"[red]{cfg.name}: ledger {status.path} does NOT verify: {status.problem}[/red]")
    raise typer.Exit(1 if bad else 0)


@privacy_app.command("audit")
def privacy_audit(
    run_dir: Annotated[Path, typer.Argument(help="the run directory holding the published model")],
    config: ConfigOpt = None, federation: FederationOpt = None,
    out: Annotated[Path | None, typer.Option(help="folder for <partner>.json (default: the partner's work/audits)")] = None,
    seed: int = 0,
) -> None:
    """Membership-inference audit of a run's global model on each partner's own rows."""
    from fedcrm.node.partner import PartnerNode
    from fedcrm.reports.tables import audit_table
    from fedcrm.rundir import RunDir

    run = RunDir(run_dir)
    results = []
    for cfg in _partners(config, federation):
        result = PartnerNode(cfg, run.plan).audit(run, seed=seed)
        folder = out or cfg.work_dir / "audits"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{cfg.name}-run-{run.run_id}.json").write_text(result.model_dump_json(indent=2))
        results.append(result)
    console.print(audit_table(results))


report_app = typer.Typer(no_args_is_help=True, help="Reports on finished runs.")
app.add_typer(report_app, name="report")


@report_app.command("compliance")
def report_compliance(
    run_dir: Annotated[Path, typer.Argument(help="the run directory")],
    federation: FederationOpt = None,
) -> None:
    """Per partner: ε this run and in total against its cap, what left its node, audits,
    ledger integrity. Writes compliance.json and compliance.html into the run directory."""
    from fedcrm.reports.compliance import write_report

    json_path, html_path = write_report(run_dir, federation)
    console.print(f"compliance report: {html_path} (data: {json_path})")


federation_app = typer.Typer(no_args_is_help=True, help="Provision a deployed federation: CA, SuperLink certificate, partner keys.")
app.add_typer(federation_app, name="federation")
coordinator_app = typer.Typer(no_args_is_help=True, help="The coordinator's SuperLink and its runs (deployment).")
app.add_typer(coordinator_app, name="coordinator")
DirOpt = Annotated[Path, typer.Option("--dir", help="the federation directory (from `federation init`)")]


@federation_app.command("init")
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


@federation_app.command("add-partner")
def federation_add_partner(name: Annotated[str, typer.Argument()], dir: DirOpt,
                           partner_id: Annotated[int | None, typer.Option()] = None) -> None:
    """A key pair for one more partner; the others keep theirs."""
    from fedcrm.ops.deployment import add_partner

    folder = add_partner(dir, name, partner_id)
    console.print(f"partner {name}: {folder} (register it with `fedcrm coordinator register --dir {dir}`)")


@coordinator_app.command("commands")
def coordinator_commands(dir: DirOpt) -> None:
    """Print the start commands for the coordinator and for each partner."""
    import shlex

    from fedcrm.ops.deployment import FederationLayout, superlink_command, supernode_command

    layout = FederationLayout(dir)
    env = "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1"
    print(f"# coordinator ({layout.address}); or: fedcrm coordinator start --dir {dir}")
    print(f"{env} FLWR_HOME={layout.flwr_home} {shlex.join(superlink_command(layout))}")
    for m in layout.config().members:
        folder = layout.partner_dir(m.name)
        cmd = supernode_command(Path(f"/path/to/{m.name}/partner.toml"), layout.address, folder / "ca.crt",
                                folder / "supernode.key")
        print(f"\n# partner {m.name}: copy {folder}/ca.crt and supernode.key to its machine; or: fedcrm partner start ...")
        print(f"{env} FLWR_HOME=/path/to/{m.name}/flwr-home {shlex.join(cmd)}")


@coordinator_app.command("start")
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


@coordinator_app.command("stop")
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


@coordinator_app.command("register")
def coordinator_register(dir: DirOpt) -> None:
    """Register every member's public key with the running SuperLink (idempotent)."""
    from fedcrm.ops.deployment import FederationLayout, register_partners

    for partner, state in register_partners(FederationLayout(dir)).items():
        console.print(f"{partner}: {state}")


@coordinator_app.command("run")
def coordinator_run(
    dir: DirOpt, out: Annotated[Path, typer.Option(help="run directory on this machine")],
    rounds: int = 5, task: str = "churn", model: str = "logistic",
    epsilon: Annotated[float, typer.Option(help="target ε this run may add per partner")] = 3.0,
    min_partners: int = 2, round_timeout: float = 600.0, local_epochs: int = 1, batch_size: int = 64,
    learning_rate: float = 0.5, detach: Annotated[bool, typer.Option(help="submit and return")] = False,
) -> None:
    """Launch a run on the deployed federation and watch it round by round."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import launch

    layout = FederationLayout(dir)
    run_id = launch(layout, out, {"num-server-rounds": rounds, "task": task, "model": model,
                                  "dp-target-epsilon": epsilon, "min-partners": min_partners,
                                  "round-timeout": round_timeout, "local-epochs": local_epochs,
                                  "batch-size": batch_size, "learning-rate": learning_rate})
    console.print(f"run {run_id} submitted; results in {out}")
    if not detach:
        _watch(layout, run_id)


def _watch(layout: object, run_id: int) -> None:
    from fedcrm.ops.runs import collect, watch

    names = list(layout.config().names().values())
    status = watch(layout, run_id, on_round=lambda row: console.print(format_row(row, names)))
    out = collect(layout, run_id)
    summary = out / "summary.json"
    console.print(f"run {run_id}: {status}; "
                  f"{json.loads(summary.read_text())['status'] if summary.exists() else 'no summary'}; collected in {out}")
    if status != "finished:completed":
        raise typer.Exit(1)


@coordinator_app.command("watch")
def coordinator_watch(run_id: int, dir: DirOpt) -> None:
    """Follow a run round by round until it ends, then collect it."""
    from fedcrm.ops.deployment import FederationLayout

    _watch(FederationLayout(dir), run_id)


@coordinator_app.command("stop-run")
def coordinator_stop_run(run_id: int, dir: DirOpt) -> None:
    """Ask the SuperLink to stop a run (`flwr stop`)."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import stop

    console.print(stop(FederationLayout(dir), run_id))


@coordinator_app.command("collect")
def coordinator_collect(run_id: int, dir: DirOpt,
                        out: Annotated[Path | None, typer.Option(help="default: the run's own directory")] = None) -> None:
    """Model, metrics, per-partner ε and Flower's logs of a run in one local directory."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import collect

    console.print(f"collected in {collect(FederationLayout(dir), run_id, out)}")


@coordinator_app.command("resume")
def coordinator_resume(run_dir: Annotated[Path, typer.Argument(help="the interrupted run's directory")], dir: DirOpt,
                       detach: bool = False) -> None:
    """Continue an interrupted run after its last completed round."""
    from fedcrm.ops.deployment import FederationLayout
    from fedcrm.ops.runs import resume

    layout = FederationLayout(dir)
    run_id = resume(layout, run_dir)
    console.print(f"run {run_id} resumes {run_dir}")
    if not detach:
        _watch(layout, run_id)


@coordinator_app.command("verify")
def coordinator_verify(dir: DirOpt) -> None:
    """Check the audit log's chain and anchor; exit 1 if it does not verify."""
    from fedcrm.ops.deployment import FederationLayout

    status = FederationLayout(dir).audit.verify()
    console.print(f"audit log {status.path}: " + (f"OK, {status.entries} entries" if status.ok else f"NOT OK: {status.problem}"))
    raise typer.Exit(0 if status.ok else 1)


@partner_app.command("start")
def partner_start(
    config: Annotated[Path, typer.Option(help="the partner config (partner.toml)")],
    superlink: Annotated[str, typer.Option(help="host:port of the coordinator's SuperLink")],
    root_cert: Annotated[Path, typer.Option(help="the federation's ca.crt")],
    key: Annotated[Path, typer.Option(help="this partner's supernode.key")],
    port: Annotated[int, typer.Option(help="local port of this SuperNode's runtime API")] = 9094,
) -> None:
    """Run this partner's SuperNode in the foreground (TLS, its key, its own config)."""
    import os

    from fedcrm.ops.deployment import supernode_command
    from fedcrm.ops.launcher import flower_env

    cfg = PartnerConfig.load(config)
    flwr_home = cfg.work_dir / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    cmd = supernode_command(config, superlink, root_cert, key, port)
    console.print(f"partner {cfg.name}: SuperNode to {superlink} (FLWR_HOME {flwr_home})")
    os.execve(cmd[0], cmd, flower_env(flwr_home))


@app.command("score")
def score(
    model: Annotated[Path, typer.Option(help="the run directory holding the global model")],
    partner_config: Annotated[Path, typer.Option(help="this partner's config (run on its node)")],
    out: Annotated[Path | None, typer.Option(help=".parquet or .csv; default work/scores/<task>-run-<id>.parquet")] = None,
    tiers: Annotated[str, typer.Option(help="churn tiers by 'thresholds' or 'deciles'")] = "thresholds",
    high: float = 0.5, medium: float = 0.25, high_deciles: int = 1, medium_deciles: int = 3,
) -> None:
    """Score this partner's current customers locally: churn-risk tiers or propensity
    deciles, joined back to its own customer ids (the file stays on the node)."""
    from fedcrm.rundir import RunDir
    from fedcrm.node.scoring import TierRule, score_partner

    rule = TierRule(by=tiers, high=high, medium=medium, high_deciles=high_deciles, medium_deciles=medium_deciles)
    summary = score_partner(PartnerConfig.load(partner_config), RunDir(model), rule, out)
    console.print(f"{summary.partner}: {summary.scored} customers scored, {summary.not_scored} not scored "
                  f"(every row quarantined), {summary.rows_without_id} rows without an id; "
                  f"{summary.task} {summary.by_tier}; written to {summary.path}")


@report_app.command("run")
def report_run(
    run_dir: Annotated[Path, typer.Argument(help="the run directory")],
    baselines: Annotated[Path | None, typer.Option(help="a baseline table (JSON: title, columns, rows)")] = None,
) -> None:
    """One HTML page: AUC and ε by round, ROC, lift, calibration, partner sizes, baselines."""
    from fedcrm.reports.run_report import write

    console.print(f"run report: {write(run_dir, baselines)}")


benchmark_app = typer.Typer(no_args_is_help=True, help="Benchmarks that need the public datasets.")
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("utility")
def benchmark_utility(
    data: Annotated[str, typer.Option(help="public dataset (../shared/datasets): telco (churn) or bank (propensity)")] = "telco",
    partners: int = 5,
    split_by: Annotated[list[str] | None, typer.Option(help="iid, label-skew or a column (repeat)")] = None,
    seeds: Annotated[int, typer.Option(help="number of seeds")] = 3,
    rounds: int = 10,
    keep_fraction: Annotated[float, typer.Option(help="share of each partner's rows kept (data-scarce regime)")] = 1.0,
    model: Annotated[str, typer.Option(help="logistic or mlp (local-only and federated; the reference is pooled LR)")] = "logistic",
    learning_rate: float = 0.5,
    out: Annotated[Path | None, typer.Option(help="writes OUT.json and OUT.md [default: benchmarks/results/utility_DATA[_keepN][_mlp][_rN]]")] = None,
    work: Annotated[Path, typer.Option(help="scratch folder for partner exports and runs")] = Path(".work/utility"),
) -> None:
    """Local-only vs federated (no DP, ε = 1, 3, 8) vs pooled, on the same splits and seeds."""
    from fedcrm.sandbox.utility import Settings, run, write

    settings = Settings(data=data, partners=partners, splits=split_by or ["iid", "label-skew"],
                        seeds=list(range(seeds)), rounds=rounds, keep_fraction=keep_fraction,
                        model=model, learning_rate=learning_rate)
    report = run(settings, work.resolve(), log=console.print)
    json_path, md_path = write(report, out or Path("benchmarks/results") / settings.name)
    console.print(md_path.read_text(), markup=False)
    console.print(f"written: {json_path}, {md_path}")


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="folder to write the consortium into")] = Path(".work/demo/consortium"),
    seed: int = 7,
) -> None:
    """Write a small consortium: three partners' raw exports, configs and keys."""
    from fedcrm.sandbox.demo_data import generate

    fed = generate(out, seed=seed)
    console.print(f"wrote {len(FederationConfig.load(fed).members)} partners; federation config: {fed}")


def _run(federation: Path, out: Path, work: Path, overrides: dict[str, object], cpus: int) -> None:
    names = [m.name for m in FederationConfig.load(federation).members]
    shown: set[int] = set()
    t0 = time.monotonic()

    def progress(status: str) -> None:
        for row in read_rounds(out):
            if row.round not in shown:
                shown.add(row.round)
                console.print(f"[{time.monotonic() - t0:5.1f}s] {format_row(row, names)}")

    console.print(f"federated run: {len(names)} partners ({', '.join(names)}), results in {out}")
    result = simulate(federation, out, work, overrides, num_cpus_per_node=cpus, on_poll=progress)
    progress(result.status)
    console.print(round_table(read_rounds(out), names))
    status = json.loads((out / "summary.json").read_text())["status"]
    console.print(f"run {result.run_id}: {status} in {result.seconds:.1f}s; "
                  f"model, metrics.json, epsilon.json and checkpoints in {out}")
    if status != "completed":  # the partners' caps stopped it; their reasons are in summary.json
        raise typer.Exit(1)


@app.command("run")
def run(
    federation: Annotated[Path, typer.Option(help="federation config (members and their partner configs)")],
    out: Annotated[Path, typer.Option(help="run directory for model, metrics and ε")],
    work: Annotated[Path, typer.Option(help="work dir for the SuperLink and FLWR_HOME")] = Path(".work/flower"),
    rounds: int = 5,
    task: str = "churn",
    model: str = "logistic",
    epsilon: Annotated[float, typer.Option(help="target ε per partner for this run")] = 3.0,
    delta: float = 1e-5,
    dp: Annotated[bool, typer.Option(help="DP-SGD on every partner")] = True,
    local_epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 0.5,
    cpus_per_node: int = 1,
) -> None:
    """Run a simulated federation (Flower simulation engine, one node per member)."""
    overrides = {"num-server-rounds": rounds, "task": task, "model": model, "dp-target-epsilon": epsilon,
                 "dp-delta": delta, "dp-enabled": dp, "local-epochs": local_epochs,
                 "batch-size": batch_size, "learning-rate": learning_rate}
    _run(federation, out, work, overrides, cpus_per_node)


@app.command("demo")
def demo(
    dir: Annotated[Path, typer.Option(help="where the demo consortium and runs go")] = Path(".work/demo"),
    rounds: int = 5,
    epsilon: float = 3.0,
) -> None:
    """Generate the demo consortium and train a DP churn model across it."""
    from fedcrm.sandbox.demo_data import generate

    fed = generate(dir / "consortium")
    console.print(f"demo consortium: {fed}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    _run(fed, dir / "runs" / stamp, dir / "flower", {"num-server-rounds": rounds, "dp-target-epsilon": epsilon}, 1)


def main() -> None:
    try:
        app()
    except FedcrmError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise SystemExit(2) from None
