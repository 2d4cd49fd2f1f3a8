"""The `fedcrm` command line as a user runs it, and the one source of run defaults behind
it: `TrainPlan`, its run config, and the Flower app definition generated from it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from fedcrm.cli.main import COMMANDS, load
from fedcrm.cli.plan_options import PLAN_PARAMS
from fedcrm.config import TrainPlan
from fedcrm.errors import ConfigError
from fedcrm.ops.app import default_app_dir, write_app
from fedcrm.ops.launcher import simulate


def fedcrm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250"}, timeout=120)


def test_version_is_the_installed_one() -> None:
    proc = fedcrm("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fedcrm {version('fedcrm')}"


def test_help_imports_nothing_heavy() -> None:
    """`fedcrm --help` imports no command's module (nor the config models their run options
    read); every command module loads without torch, Opacus, pandas' reports or Flower."""
    code = ("import sys, fedcrm.cli.main as main; main.app(['--help'], standalone_mode=False); "
            "print(sorted(m for m in sys.modules if m.startswith(('fedcrm.cli.', 'fedcrm.config')))); "
            "[main.load(name) for name in main.COMMANDS]; "
            "print(sorted(m for m in ('torch', 'opacus', 'flwr', 'sklearn', 'fedcrm.reports', 'fedcrm.node', "
            "'fedcrm.sandbox') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    *_, at_help, after_loading = proc.stdout.strip().splitlines()
    assert at_help == "['fedcrm.cli.common', 'fedcrm.cli.main']"
    assert after_loading == "[]"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_root_listing_is_each_commands_own_help(name: str) -> None:
    """`fedcrm --help` lists the commands without loading them: each line there is the
    loaded command's own first paragraph of help, and the command is the one invoked."""
    command = load(name)
    assert command.name == name
    assert " ".join(COMMANDS[name].help.split()) == " ".join((command.help or "").split("\n\n")[0].split())


@pytest.mark.parametrize(("args", "option"), [(["--model", "xgboost"], "--model"), (["--rounds", "0"], "--rounds"),
                                              (["--task", "upsell"], "--task")])
def test_a_bad_run_option_fails_at_once_before_any_superlink(demo_federation: Path, tmp_path: Path,
                                                             args: list[str], option: str) -> None:
    work = tmp_path / "flower"
    t0 = time.monotonic()
    proc = fedcrm("run", "--federation", str(demo_federation), "--out", str(tmp_path / "run"), "--work", str(work),
                  *args, cwd=tmp_path)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and option in lines[0] and args[1] in lines[0], lines
    assert "Traceback" not in proc.stderr
    assert not work.exists() and not (tmp_path / "run").exists()  # no SuperLink, no FLWR_HOME, no run


def test_run_help_shows_the_train_plans_defaults() -> None:
    proc = fedcrm("run", "--help")
    assert proc.returncode == 0, proc.stderr
    plan, shown = TrainPlan(), 0
    for param, field in PLAN_PARAMS.items():
        flag = "--" + param.replace("_", "-")
        line = next((line for line in proc.stdout.splitlines() if re.search(rf"{flag}\b(?!-)", line)), None)
        if line is None:  # not an option of `fedcrm run` (e.g. --min-partners)
            continue
        default = getattr(plan, field)
        name = param.replace("_", "-")
        expected = (name if default else f"no-{name}") if isinstance(default, bool) else str(default)
        assert f"[default: {expected}]" in line, line
        assert TrainPlan.model_fields[field].description in line, line
        shown += 1
    assert shown == 13
    assert "[logistic|mlp|gbdt]" in proc.stdout and "a task of the consortium's contract" in proc.stdout


def test_train_plan_round_trips_through_the_run_config() -> None:
    plan = TrainPlan(task="propensity", model="mlp", num_server_rounds=7, dp_enabled=False, dp_delta=1e-6,
                     round_timeout=30.0, run_dir="/runs/a")
    config = plan.to_run_config()
    assert config["num-server-rounds"] == 7 and config["dp-enabled"] is False and config["run-dir"] == "/runs/a"
    assert all("_" not in key for key in config)
    assert set(config) == {key.replace("_", "-") for key in TrainPlan.model_fields}
    assert TrainPlan.from_run_config(config) == plan
    assert TrainPlan.from_run_config({"num-server-rounds": 7}).to_run_config(exclude_unset=True) == {"num-server-rounds": 7}
    assert TrainPlan.model_validate(plan.model_dump()) == plan  # plan.json keeps the field names


@pytest.mark.parametrize(("config", "named"), [({"num-server-round": 3}, "num-server-round"),
                                               ({"model": "xgboost"}, "model"),
                                               ({"dp-delta": 2.0}, "dp-delta")])
def test_a_bad_run_config_names_its_key(config: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=rf"run config: {named}: "):
        TrainPlan.from_run_config(config)


def test_the_generated_flower_app_is_the_train_plan(tmp_path: Path) -> None:
    from flwr.common.config import validate_config

    folder = write_app(tmp_path / "app")
    assert [p.name for p in folder.iterdir()] == ["pyproject.toml"]
    definition = tomllib.loads((folder / "pyproject.toml").read_text())
    app = definition["tool"]["flwr"]["app"]
    assert app["config"] == TrainPlan().to_run_config()
    assert app["components"] == {"serverapp": "server.server_app:app", "clientapp": "clients.client_app:app"}
    assert definition["project"]["version"] == version("fedcrm")
    # Flower's own check, components included: they resolve from the installed packages
    ok, errors, _ = validate_config(definition, check_module=True, project_dir=folder)
    assert ok, errors
    assert (default_app_dir() / "pyproject.toml").read_text() == (folder / "pyproject.toml").read_text()


def test_simulate_refuses_a_bad_run_config_before_starting_flower(demo_federation: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="modle"):
        simulate(demo_federation, tmp_path / "run", tmp_path / "flower", {"modle": "mlp"})
    assert not (tmp_path / "flower").exists()


def test_flower_lines_print_once_and_opacus_hook_warnings_not_at_all() -> None:
    """Opacus' basicConfig would double every Flower log line, and its per-sample hooks make
    torch warn on every backward: a DP training round in a fresh process logs one line and
    raises no such warning."""
    code = ("import logging, warnings\n"
            "warnings.simplefilter('always')  # every warning, every time, unless fedcrm filters it\n"
            "from flwr.common.logger import log\n"
            "import numpy as np\n"
            "from fedcrm.ml.models import build_model\n"
            "from fedcrm.ml.training import DPSettings, train_local\n"
            "x = np.random.default_rng(0).normal(size=(64, 3)).astype('float32'); y = (x[:, 0] > 0).astype('float32')\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    train_local(build_model('mlp', 3, seed=0), x, y, dp=DPSettings(1.0, 1.0, 1e-5, []), epochs=1,\n"
            "                batch_size=16, lr=0.1, optimizer='sgd', seed=0)\n"
            "log(logging.INFO, 'fedcrm-once')\n"
            "print('hook warnings:', sum('backward hook' in str(w.message) for w in seen))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("fedcrm-once") == 1, out
    assert "hook warnings: 0" in out, out


def test_a_short_dp_run_is_warned_that_it_spends_the_whole_target(tmp_path: Path) -> None:
    proc = fedcrm("run", "--federation", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "run"),
                  "--rounds", "2", "--epsilon", "3", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "warning: 2 rounds will still spend the whole target ε = 3 of every partner (1.5 a round" in out, out
    assert proc.returncode == 2 and "missing.toml" in out  # and then the bad federation path, in one line
    assert TrainPlan(num_server_rounds=20).short_run_warning() is None
    assert TrainPlan(num_server_rounds=2, dp_enabled=False).short_run_warning() is None
