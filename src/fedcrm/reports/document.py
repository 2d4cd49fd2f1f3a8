"""Reports as documents someone signs: a PDF printed by headless Chromium from the same
HTML (its print stylesheet), and SHA-256 fingerprints so the signed copy can be checked
against the files later (`sha256sum -c compliance.sha256`).

Chromium is found on PATH (`chromium`, `chromium-browser`, `google-chrome`) or named by
FEDCRM_CHROMIUM; it runs with an empty profile of its own and no network features, so
printing a report reaches nothing outside the machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel

from fedcrm.errors import ConfigError

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


class ReportFiles(BaseModel):
    data: Path
    html: Path
    pdf: Path | None = None
    sha256: Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def chromium() -> str:
    named = os.environ.get("FEDCRM_CHROMIUM")
    found = named or next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not found:
        raise ConfigError("a PDF needs Chromium: install it (Debian: apt-get install chromium) or set FEDCRM_CHROMIUM "
                          "to its path; the HTML report is written either way")
    return found


def print_pdf(html: Path, pdf: Path, timeout: float = 120) -> Path:
    """`html` printed to `pdf` (A4, no header or footer: the page carries its own run id)."""
    pdf.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedcrm-chromium-") as profile:
        done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                               f"--print-to-pdf={pdf.resolve()}", html.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        raise ConfigError(f"Chromium could not print {html.name} to PDF (exit {done.returncode})")
    return pdf
