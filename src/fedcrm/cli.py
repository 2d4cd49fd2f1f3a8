"""`fedcrm`: the command line for partners, the coordinator and the demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedcrm.config import FederationConfig
from fedcrm.errors import FedcrmError
from fedcrm.launcher import simulate
from fedcrm.reporting import format_row, read_rounds, round_table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(width=None if sys.stdout.isatty() else 150)


partner_app = typer.Typer(no_args_is_help=True, help="Partner-side commands (run on the partner's node).")
app.add_typer(partner_app, name="partner")


@partner_app.command("init")
def partner_init(config: Annotated[Path, typer.Option(help="the partner config (partner.toml)")]) -> None:
    """Create the partner's HMAC key (0600) and work dir named in its config."""
    from fedcrm.config import PartnerConfig
    from fedcrm.pseudonymise import create_secret

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
    from fedcrm.quality import check_partner, render

    report = check_partner(PartnerConfig.load(config), task, k_threshold)
    console.print(render(report))
    if json_out:
        json_out.write_text(report.model_dump_json(indent=2))


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="folder to write the consortium into")] = Path(".work/demo/consortium"),
    seed: int = 7,
) -> None:
    """Write a small consortium: three partners' raw exports, configs and keys."""
    from fedcrm.demo_data import generate

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
    console.print(f"run {result.run_id}: {result.status} in {result.seconds:.1f}s; "
                  f"model, metrics.json, epsilon.json and checkpoints in {out}")


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
    from fedcrm.demo_data import generate

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
