"""The compliance report and the run report of a real run, opened in headless Chromium
(Debian's package): key figures are read back from the rendered DOM, plots are checked to
be real pictures, and screenshots are kept as test artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.ops.launcher import simulate
from fedcrm.privacy.ledger import Ledger
from fedcrm.node.partner import PartnerNode
from tests.conftest import set_privacy

pytestmark = pytest.mark.flower
ARTIFACTS = Path(os.environ.get("FEDCRM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / ".work" / "test-artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def fedcrm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two rounds on the demo; south-broadband's cap admits one round; then audit and report."""
    from fedcrm.sandbox.demo_data import generate

    tmp = tmp_path_factory.mktemp("compliance")
    fed = generate(tmp / "consortium")
    south = FederationConfig.load(fed).members[2].config
    run_config = {"num-server-rounds": 2, "dp-target-epsilon": 2.0, "min-partners": 2}
    plan = PartnerNode(PartnerConfig.load(south), TrainPlan.from_run_config(run_config)).plan_run()
    set_privacy(south, epsilon_cap=round((plan.projections[0].epsilon + plan.projections[1].epsilon) / 2, 3))
    run_dir = tmp / "run"
    simulate(fed, run_dir, tmp / "flower", run_config)
    audit = fedcrm("privacy", "audit", str(run_dir), "--federation", str(fed), "--out", str(run_dir / "audits"))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    for kind in ("compliance", "run"):
        report = fedcrm("report", kind, str(run_dir))
        assert report.returncode == 0, report.stdout + report.stderr
    return fed, run_dir


class Cells(HTMLParser):
    """Text of every element carrying data-field, keyed by (table id, partner, field)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = self.partner = self.field = None
        self.cells: dict[tuple[str, str, str], str] = {}
        self.by_id: dict[str, str] = {}
        self._id: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            self.table = a.get("id")
        if "data-partner" in a:
            self.partner = a["data-partner"]
        if "data-field" in a:
            self.field = a["data-field"]
            self.cells[(self.table, self.partner, self.field)] = ""
        if "id" in a and tag == "span":
            self._id = a["id"]
            self.by_id[self._id] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.field = None
        if tag == "span":
            self._id = None

    def handle_data(self, data: str) -> None:
        if self.field:
            self.cells[(self.table, self.partner, self.field)] += data.strip()
        if self._id:
            self.by_id[self._id] += data.strip()


def test_compliance_json_accounts_for_every_partner(reported_run: tuple[Path, Path]) -> None:
    fed, run_dir = reported_run
    report = json.loads((run_dir / "compliance.json").read_text())
    assert report["status"] == "completed" and report["rounds_completed"] == 2
    by_name = {p["partner"]: p for p in report["partners"]}
    assert set(by_name) == {m.name for m in FederationConfig.load(fed).members}
    for m in FederationConfig.load(fed).members:
        p, cfg = by_name[m.name], PartnerConfig.load(m.config)
        last = Ledger.of(cfg).entries()[-1]
        assert p["epsilon_cumulative"] == pytest.approx(last.epsilon_after)
        assert p["epsilon_cap"] == cfg.privacy.epsilon_cap
        assert p["epsilon_remaining"] == pytest.approx(cfg.privacy.epsilon_cap - last.epsilon_after)
        assert p["ledger"]["verified_here"] and p["ledger"]["ok"] and p["ledger"]["head_matches"]
        # spend per release kind, and the partner's ε as the larger side of its hold-out split
        kinds = p["ledger"]["run_releases"]
        assert kinds["statistics"] == 1 and kinds["train"] == len(p["rounds_participated"]) and kinds["evaluate"] >= 2
        assert p["evaluations"] == kinds["evaluate"] and p["evaluation_noise"] >= cfg.privacy.min_eval_noise_multiplier
        sides = p["ledger"]["epsilon_by_side"]
        assert set(sides) == {"training", "hold-out"} and max(sides.values()) == pytest.approx(last.epsilon_after)
        assert p["audit"]["attack"]["advantage"] <= p["audit"]["advantage_bound"]
        sent = " ".join(" ".join(v) for v in p["fields_sent"].values())
        assert "train arrays" in p["fields_sent"] and "linear.weight" in sent
        for pii in ("customer_id", "phone", "email", "full_name", "pseudonym", "signup_date"):
            assert pii not in sent
    south = by_name["south-broadband"]
    assert south["rounds_participated"] == [1] and south["refusals"][0]["round"] == 2
    assert "above the cap" in south["refusals"][0]["reason"]
    assert by_name["north-telecom"]["rounds_participated"] == [1, 2]


def render(html: Path, shot_name: str, height: int) -> str:
    """Screenshot `html` into the artifacts folder and return its DOM, both from Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium not installed: `apt-get install chromium` (scripts/test.sh does it when run as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / shot_name
    shot.unlink(missing_ok=True)
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={html.parent / 'chromium-profile'}"]
    subprocess.run([*base, f"--window-size=1280,{height}", f"--screenshot={shot}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 20_000
    return subprocess.run([*base, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120,
                          check=True).stdout


def test_compliance_html_renders_in_chromium(reported_run: tuple[Path, Path]) -> None:
    _, run_dir = reported_run
    dom = render((run_dir / "compliance.html").resolve(), "compliance-report.png", 1800)
    cells = Cells()
    cells.feed(dom)
    report = json.loads((run_dir / "compliance.json").read_text())
    assert cells.by_id["run-id"] == str(report["run_id"]) and cells.by_id["run-status"] == "completed"
    for p in report["partners"]:
        name = p["partner"]
        assert cells.cells[("budget", name, "epsilon_cumulative")] == f"{p['epsilon_cumulative']:.3f}"
        assert cells.cells[("budget", name, "epsilon_run")] == f"{p['epsilon_run']:.3f}"
        assert cells.cells[("budget", name, "epsilon_cap")] == f"{p['epsilon_cap']:g}"
        assert cells.cells[("budget", name, "epsilon_remaining")] == f"{p['epsilon_remaining']:.3f}"
        assert cells.cells[("budget", name, "rounds")] == str(len(p["rounds_participated"]))
        assert cells.cells[("budget", name, "ledger")] == "verified"
        assert cells.cells[("audit", name, "advantage")] == f"{p['audit']['attack']['advantage']:.3f}"
    assert "south-broadband" in dom.split('id="refusals"')[1]


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, str] = {}
        self.kpis: dict[str, str] = {}
        self._kpi: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img" and "data-plot" in a:
            self.plots[a["data-plot"]] = a["src"]
        if "data-metric" in a:
            self._kpi = a["data-metric"]
        elif tag == "b" and self._kpi:
            self.kpis[self._kpi] = ""

    def handle_data(self, data: str) -> None:
        if self._kpi in self.kpis and not self.kpis[self._kpi]:
            self.kpis[self._kpi] = data.strip()
            self._kpi = None


def test_run_report_renders_with_real_plots(reported_run: tuple[Path, Path]) -> None:
    import base64
    import io

    import matplotlib.image

    _, run_dir = reported_run
    dom = render((run_dir / "report.html").resolve(), "run-report.png", 2600)
    found = Images()
    found.feed(dom)
    assert set(found.plots) == {"auc", "epsilon", "roc_lift", "calibration", "partners"}
    for name, src in found.plots.items():
        assert src.startswith("data:image/png;base64,"), name
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300, (name, pixels.shape)
        assert pixels[..., :3].std() > 0.05, f"plot {name} is blank"
    final = json.loads((run_dir / "summary.json").read_text())["final_global"]
    for key in ("auc", "pr-auc", "log-loss", "brier", "lift-top-decile", "capture-top-decile", "ece"):
        assert found.kpis[key] == f"{final[key]:.3f}", key
    assert 'id="run-status">completed<' in dom.replace(" ", "")
