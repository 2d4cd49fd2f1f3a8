"""The compliance report and the run report of real runs, opened in headless Chromium
(Debian's package, driven by Playwright): key figures are read back from the rendered DOM,
every table is checked for clipped columns at 1280 and 800 px, plots are checked to be real
pictures, the PDF is checked against its fingerprint, and screenshots are kept as test
artifacts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fedcrm.config import FederationConfig, PartnerConfig, TrainPlan
from fedcrm.ops.launcher import simulate
from fedcrm.privacy.ledger import Ledger
from fedcrm.reports.document import CHROMIUM_FLAGS
from fedcrm.node.partner import PartnerNode
from tests.conftest import set_privacy

pytestmark = pytest.mark.flower
ARTIFACTS = Path(os.environ.get("FEDCRM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / ".work" / "test-artifacts"))


def fedcrm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedcrm", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two rounds on the demo with local-only baselines; south-broadband's cap admits one
    round (and no baseline); then audit and reports (the compliance report printed to PDF). The history across several runs is
    checked where runs follow each other anyway (tests/test_budget_federation.py)."""
    from fedcrm.sandbox.demo_data import generate

    tmp = tmp_path_factory.mktemp("compliance")
    fed = generate(tmp / "consortium")
    south = FederationConfig.load(fed).members[2].config
    run_config = {"num-server-rounds": 2, "dp-target-epsilon": 2.0, "min-partners": 2, "local-baseline": True}
    plan = PartnerNode(PartnerConfig.load(south), TrainPlan.from_run_config(run_config)).plan_run()
    set_privacy(south, epsilon_cap=round((plan.projections[0].epsilon + plan.projections[1].epsilon) / 2, 3))
    run_dir = tmp / "run"
    simulate(fed, run_dir, tmp / "flower", run_config)
    audit = fedcrm("privacy", "audit", str(run_dir), "--federation", str(fed), "--out", str(run_dir / "audits"))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    for args in (("compliance", "--pdf"), ("run",)):
        report = fedcrm("report", args[0], str(run_dir), *args[1:])
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
        if tag in ("td", "dd"):
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

    def kinds_of(name: str) -> dict[str, int]:
        return by_name[name]["ledger"]["run_releases"]

    assert set(by_name) == {m.name for m in FederationConfig.load(fed).members}
    for m in FederationConfig.load(fed).members:
        p, cfg = by_name[m.name], PartnerConfig.load(m.config)
        last = [e for e in Ledger.of(cfg).entries() if e.run_id == str(report["run_id"])][-1]  # run 2 charged after
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
        # what only the node can tell: its data's quality and k, its key's custody, the statistics release
        assert p["data"]["rows_in"] == p["data"]["rows_clean"] + p["data"]["rows_quarantined"] > 0
        assert p["data"]["k"] is not None and p["data"]["quasi_identifiers"]
        assert p["custody"]["key_present"] and p["custody"]["key_file_private"]
        assert p["statistics_dp"] is True and "charged" in p["statistics"]
        assert p["audit"]["verdict"] in ("pass", "review", "fail") and p["audit"]["verdict_reason"]
    south = by_name["south-broadband"]
    assert south["rounds_participated"] == [1] and south["refusals"][0]["round"] == 2
    assert report["refused"] == ["south-broadband"] and report["badge"] == "completed, 1 partner refused"
    # who launched it and when, from the simulated federation's own audit log
    prov = report["provenance"]
    assert prov["verified"] and prov["launched_by"].startswith("admin:") and prov["started_at"] and prov["ended_at"]
    assert [e["action"] for e in prov["events"]] == ["run-launched", "run-started", "round-completed",
                                                     "round-completed", "local-baselines", "run-finished"]
    assert "south-broadband" in prov["events"][3]["summary"]  # round 2's refusal, in the audit log too
    assert "refused or failed: south-broadband" in prov["events"][4]["summary"]
    assert kinds_of("north-telecom") == {"statistics": 1, "train": 2, "evaluate": 4, "baseline": 1}
    html = (run_dir / "compliance.html").read_text()
    assert 'id="baseline-releases"' in html and "north-telecom, ε rise" in html.split('id="baseline-releases"')[1]
    # every contract field with its grade; core-sensitive fields never reach the model
    fields = {f["field"]: f for f in report["fields"] if f["table"] == "customers"}
    core = [f for f in fields.values() if f["grade"] == "core-sensitive"]
    assert core and all(not f["features"] and ("dropped" in f["use"] or "pseudonymised" in f["use"]) for f in core)
    assert any(f["features"] for f in fields.values() if f["grade"] == "sensitive")  # generalised, then used
    # the records received: one list for partners that sent the same ones
    assert sum(len(i["partners"]) for i in report["inventories"]) == 3
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
    assert cells.by_id["run-id"] == str(report["run_id"])
    assert cells.by_id["run-status"] == "completed, 1 partner refused"
    for p in report["partners"]:
        name = p["partner"]
        assert cells.cells[("budget", name, "epsilon_cumulative")] == f"{p['epsilon_cumulative']:.3f}"
        assert cells.cells[("budget", name, "epsilon_run")] == f"{p['epsilon_run']:.3f}"
        assert cells.cells[("budget", name, "epsilon_cap")] == f"{p['epsilon_cap']:g}"
        assert cells.cells[("budget", name, "epsilon_remaining")] == f"{p['epsilon_remaining']:.3f}"
        assert cells.cells[("mechanism", name, "rounds")] == str(len(p["rounds_participated"]))
        assert cells.cells[("mechanism", name, "ledger")] == "verified"
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
    # an evaluation page: deciles, the scoring tiers against the outcome, calibration per
    # partner, and what the model leans on by feature name
    deciles = dom.split('id="deciles"')[1].split("</table>")[0]
    assert deciles.count("data-decile=") >= 8 and "100.0 %" in deciles
    tiers = dom.split('id="tiers"')[1].split("</table>")[0]
    assert all(f'data-tier="{t}"' in tiers for t in ("high", "medium", "low"))
    calibration = dom.split('id="calibration"')[1].split("</table>")[0]
    assert all(f'data-partner="{m.name}"' in calibration for m in FederationConfig.load(reported_run[0]).members)
    features = json.loads((run_dir / "model.json").read_text())["features"]
    importance = dom.split('id="importance"')[1].split("</table>")[0]
    assert sum(f">{f}<" in importance for f in features) >= 10
    # federated against local-only on each partner's own hold-out: two partners trained
    # alone (charged, and in their ε), the one at its cap refused
    members = [m.name for m in FederationConfig.load(reported_run[0]).members]
    local = dom.split('id="local-baseline"')[1].split("</table>")[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    for m in FederationConfig.load(reported_run[0]).members[:2]:
        row = local.split(f'data-partner="{m.name}"')[1].split("</tr>")[0]
        assert float(row.split('data-field="local_auc">')[1].split("<")[0]) > 0.5, row
        last = Ledger.of(PartnerConfig.load(m.config)).entries()[-2:]
        assert [e.kind for e in last] == ["baseline", "evaluate"]
        assert summary["epsilon"][m.name] == pytest.approx(max(e.epsilon_after for e in last))
    refused = local.split(f'data-partner="{members[2]}"')[1].split("</tr>")[0]
    assert "refused" in refused and "cap" in refused


# ------------------------------------------------------------------ Playwright: layout, PDF, first screen
CLIPPED = """() => {
  const width = document.documentElement.clientWidth, out = [];
  for (const table of document.querySelectorAll('table')) {
    for (const cell of table.querySelectorAll('th, td')) {
      const box = cell.getBoundingClientRect();
      if (box.right > width + 0.5 || cell.scrollWidth > cell.clientWidth + 1)
        out.push(`${table.id || '?'}: ${cell.textContent.trim().slice(0, 40)} (right ${box.right.toFixed(0)}, `
                 + `content ${cell.scrollWidth} in ${cell.clientWidth})`);
    }
  }
  return {width, page: document.documentElement.scrollWidth, clipped: out};
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's Chromium, driven by Playwright (its own browser download is not needed)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed: pip install -e '.[test]'")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium not installed: `apt-get install chromium` (scripts/test.sh does it when run as root)")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=[f for f in CHROMIUM_FLAGS if f != "--headless"])
        yield launched
        launched.close()


def open_page(browser, html: Path, width: int, height: int = 900):  # noqa: ANN001, ANN201
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(html.resolve().as_uri())
    page.wait_for_load_state("load")
    return page


@pytest.mark.parametrize("report", ["run/compliance.html", "run/report.html"])
@pytest.mark.parametrize("width", [1280, 800])
def test_no_table_column_is_clipped(reported_run: tuple[Path, Path], browser, report: str, width: int) -> None:  # noqa: ANN001
    html = reported_run[1].parent / report
    page = open_page(browser, html, width)
    try:
        layout = page.evaluate(CLIPPED)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{report.replace('/', '-')}-{width}.png"), full_page=True)
    finally:
        page.close()
    assert page.url and layout["clipped"] == [], layout["clipped"][:10]
    assert layout["page"] <= layout["width"], f"the page scrolls sideways at {width} px: {layout}"


def test_the_refused_partner_is_named_on_the_first_screen(reported_run: tuple[Path, Path], browser) -> None:  # noqa: ANN001
    for width in (1280, 800):
        page = open_page(browser, reported_run[1] / "compliance.html", width, height=800)
        try:
            badge = page.locator("#run-status").inner_text()
            named = page.locator('[data-refused="south-broadband"]')
            box, text = named.bounding_box(), named.inner_text()
        finally:
            page.close()
        assert badge == "completed, 1 partner refused"
        assert box is not None and box["y"] + box["height"] <= 800, (width, box)
        assert "south-broadband" in text and "cap" in text


def test_pdf_and_fingerprints_match_the_report(reported_run: tuple[Path, Path]) -> None:
    import hashlib

    for run_dir in (reported_run[1],):
        listed = dict(reversed(line.split("  ", 1)) for line in (run_dir / "compliance.sha256").read_text().splitlines())
        assert set(listed) == {"compliance.json", "compliance.html", "compliance.pdf"}
        for name, digest in listed.items():
            assert hashlib.sha256((run_dir / name).read_bytes()).hexdigest() == digest, name
        pdf = (run_dir / "compliance.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
        # the page names the fingerprint of the figures it shows
        assert listed["compliance.json"] in (run_dir / "compliance.html").read_text()


def test_history_and_audit_verdicts_are_shown(reported_run: tuple[Path, Path], browser) -> None:  # noqa: ANN001
    fed, run_dir = reported_run
    report = json.loads((run_dir / "compliance.json").read_text())
    for p in report["partners"]:
        assert [r["run_id"] for r in p["history"]["runs"]] == [str(report["run_id"])]
        assert p["history"]["epsilon"] == pytest.approx(p["epsilon_cumulative"])
    # the same history on the partners' side: `fedcrm privacy history`
    out = run_dir.parent / "history.json"
    listed = fedcrm("privacy", "history", "--federation", str(fed), "--json", str(out))
    assert listed.returncode == 0 and "privacy history" in listed.stdout, listed.stdout + listed.stderr
    by_partner = {h["partner"]: h for h in json.loads(out.read_text())}
    for p in report["partners"]:
        assert by_partner[p["partner"]]["runs"] == p["history"]["runs"]
    page = open_page(browser, run_dir / "compliance.html", 1280)
    try:
        plot = page.evaluate("() => { const i = document.querySelector('img[data-plot=history]');"
                             " return i ? [i.naturalWidth, i.naturalHeight] : null; }")
        history_rows = page.locator("#history tbody tr").count()
        header = page.locator("#audit thead th").all_inner_texts()
        verdicts = page.locator('#audit td[data-field="verdict"]').all_inner_texts()
    finally:
        page.close()
    assert plot is not None and plot[0] > 300 and plot[1] > 150
    assert history_rows == 3  # one run of each partner
    assert header[-1] == "verdict" and len(verdicts) == 3
    assert all(v.split(":")[0] in ("pass", "review", "fail") for v in verdicts), verdicts


def test_flower_lists_and_logs_a_finished_run(reported_run: tuple[Path, Path]) -> None:
    """`fedcrm flower ls|log RUN_DIR`: `flwr ls` and `flwr log` on a SuperLink started
    again on the finished run's own database (and stopped after)."""
    _, run_dir = reported_run
    listed = fedcrm("flower", "ls", str(run_dir), "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    runs = {r["run-id"]: r for r in json.loads(listed.stdout)["runs"]}
    run_id = json.loads((run_dir / "summary.json").read_text())["run_id"]
    assert runs[str(run_id)]["status"] == "finished:completed"
    logged = fedcrm("flower", "log", str(run_dir))
    assert logged.returncode == 0 and f"run_id `{run_id}`" in logged.stdout, logged.stdout[-2000:]
    home = json.loads((run_dir / "flower.json").read_text())["home"]
    assert not (Path(home) / "superlink.pid").exists()  # its SuperLink was stopped again


def test_run_directory_files_match_their_schemas_and_a_flat_table(reported_run: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    """Tools that read run directories get JSON Schemas for every JSON file, and the metrics
    as a flat table (CSV and Parquet) with a row per round and partner."""
    import jsonschema
    import pandas as pd

    _, run_dir = reported_run
    made = fedcrm("report", "schemas", "--out", str(tmp_path / "schemas"))
    assert made.returncode == 0, made.stdout + made.stderr
    checked = []
    for schema_file in sorted((tmp_path / "schemas").glob("*.schema.json")):
        data = run_dir / schema_file.name.replace(".schema", "")
        if data.is_file():
            jsonschema.validate(json.loads(data.read_text()), json.loads(schema_file.read_text()))
            checked.append(data.name)
    assert {"plan.json", "metrics.json", "summary.json", "model.json", "compliance.json", "flower.json"} <= set(checked)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    csv, parquet = pd.read_csv(run_dir / "metrics.csv"), pd.read_parquet(run_dir / "metrics.parquet")
    assert len(csv) == len(parquet) and list(csv.columns) == list(parquet.columns)
    partners = parquet[parquet["partner"] != "(global)"]
    assert len(partners) == sum(len(set(r["partners"]) | set(r["absent"])) for r in metrics["rounds"])
    south = partners[(partners["partner"] == "south-broadband") & (partners["round"] == 2)].iloc[0]
    assert not south["trained"] and "cap" in south["refused"]
    glob = parquet[parquet["partner"] == "(global)"].set_index("round")
    final = json.loads((run_dir / "summary.json").read_text())["final_global"]
    assert glob.loc[2, "evaluate_auc"] == pytest.approx(final["auc"])


def test_a_run_is_logged_to_mlflow(reported_run: tuple[Path, Path], tmp_path: Path) -> None:
    """`fedcrm report mlflow RUN_DIR`: the plan as parameters, the global metrics and each
    partner's ε per round as metric histories, the run's files as artifacts."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow not installed: pip install -e '.[test]'")
    _, run_dir = reported_run
    uri = (tmp_path / "mlruns").as_uri()
    proc = fedcrm("report", "mlflow", str(run_dir), "--uri", uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("fedcrm").experiment_id])
    assert len(runs) == 1
    tracked, summary = runs[0], json.loads((run_dir / "summary.json").read_text())
    assert tracked.data.tags["fedcrm.run_id"] == str(summary["run_id"]) and tracked.data.params["num-server-rounds"] == "2"
    auc = client.get_metric_history(tracked.info.run_id, "global.auc")
    assert [m.step for m in auc] == [0, 1, 2] and auc[-1].value == pytest.approx(summary["final_global"]["auc"])
    south = client.get_metric_history(tracked.info.run_id, "epsilon.south-broadband")
    assert south and south[0].step == 1  # it trained round 1 only; its ε rose no further
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
    assert {"summary.json", "metrics.parquet", "model.pt", "compliance.pdf"} <= artifacts
