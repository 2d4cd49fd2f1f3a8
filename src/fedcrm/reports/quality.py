"""The data-quality page `partner check --html` writes: the same report as the terminal's,
for a data team that reads it in a browser. No run is needed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from fedcrm.data.quality import QualityReport
from fedcrm.privatefiles import private_replace


def render_html(report: QualityReport, quarantine: Path | None = None) -> str:
    env = Environment(loader=PackageLoader("fedcrm.reports", "templates"), autoescape=select_autoescape(["html"]))
    return env.get_template("data_quality.html").render(
        r=report, quarantine=quarantine, generated_at=datetime.now(UTC).isoformat(timespec="seconds"))


def write_html(report: QualityReport, path: Path, quarantine: Path | None = None) -> Path:
    """Owner-only: completeness and reasons describe the partner's own data."""
    with private_replace(path, "w") as fh:
        fh.write(render_html(report, quarantine))
    return path
