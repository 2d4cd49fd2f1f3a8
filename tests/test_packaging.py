"""The wheel is the product: built from this tree, installed into a fresh venv, it runs the
demo federation from a folder outside the repo, with fedcrm, `clients` and `server` (the
Flower app's components) all imported from the wheel."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest

from fedcrm.ops.launcher import FLWR_ENV

pytestmark = pytest.mark.flower

ROOT = Path(__file__).resolve().parents[1]
# A copy of the project without what is not source: setuptools builds in-tree (build/,
# egg-info), and a stale build/lib from an earlier build would leak into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", ".work", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "results")


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_wheel(tmp: Path) -> Path:
    shutil.copytree(ROOT, tmp / "project", ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", ".", "-w", str(tmp / "dist")],
        cwd=tmp / "project")
    (wheel,) = (tmp / "dist").glob("fedcrm-*.whl")
    return wheel


def fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; the dependencies (torch, flwr, ...) are this test
    interpreter's site-packages, appended by a .pth path line. A path line does not run
    the dev venv's editable-install finder, so fedcrm, clients and server come from the
    wheel or not at all."""
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         "--no-compile", str(wheel)])  # no .pyc yet: the run's imports write them (see the test)
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Flower starts flower-superlink, flwr-serverapp, flwr-simulation, ... by name: give the
    # fresh venv flwr's console scripts, as installing flwr there would, on its interpreter.
    for ep in distribution("flwr").entry_points.select(group="console_scripts"):
        script = venv / "bin" / ep.name
        script.write_text(f"#!{python}\nimport sys\nfrom {ep.module} import {ep.attr}\nsys.exit({ep.attr}())\n")
        script.chmod(0o755)
    return venv


def test_the_wheel_runs_the_demo_from_a_fresh_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("fedcrm/__init__.py", "fedcrm/cli/main.py", "fedcrm/ops/app.py", "clients/client_app.py",
                   "server/server_app.py", "fedcrm/reports/templates/run_report.html",
                   "fedcrm/reports/templates/compliance.html"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "scripts/"))]

    venv = fresh_venv(tmp_path, wheel)
    site = run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    where = run([str(venv / "bin" / "python"), "-c", "import fedcrm, clients, server; "
                 "print(fedcrm.__file__, clients.__file__, server.__file__, fedcrm.__version__)"], cwd=tmp_path).stdout.split()
    assert all(path.startswith(site) for path in where[:3]), where
    assert where[3] == distribution("fedcrm").version

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    dev_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != dev_bin)
    # PYTHONDONTWRITEBYTECODE off: the .pyc files the run's imports leave are the evidence below
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env.update(FLWR_ENV, PATH=f"{venv / 'bin'}{os.pathsep}{path}", COLUMNS="200")
    proc = subprocess.run([str(venv / "bin" / "fedcrm"), "demo", "--dir", str(tmp_path / "demo"), "--rounds", "1"],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert re.search(r"round\s+1\s+AUC 0\.\d{3}", proc.stdout), proc.stdout
    assert "completed in" in proc.stdout
    assert not list(outside.iterdir())
    # the ServerApp and the ClientApps imported the wheel's modules (Python cached them there)
    for module in ("server/server_app", "clients/client_app"):
        assert list((Path(site) / module).parent.glob(f"__pycache__/{Path(module).name}.*.pyc")), module
