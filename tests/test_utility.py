"""The baselines command: local-only, federated (no DP and DP) and pooled on the same split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedcrm.sandbox.public_data import BANK_CSV
from fedcrm.sandbox.utility import markdown, own_gains, summarise, variants


def _row(seed: int, aucs: dict[str, float]) -> dict:
    return {"seed": seed, "auc": 0.8, "mean_partner_auc": sum(aucs.values()) / len(aucs), "partner_aucs": aucs}


def test_gains_are_per_partner_against_the_same_seed() -> None:
    local = [_row(0, {"a": 0.70, "b": 0.80}), _row(1, {"c": 0.60, "d": 0.90})]
    fed = [_row(0, {"a": 0.75, "b": 0.79}), _row(1, {"c": 0.70, "d": 0.90})]
    gains = own_gains(fed, local)
    assert gains["mean"]["mean"] == pytest.approx((0.02 + 0.05) / 2)
    assert gains["smallest_partner"]["mean"] == pytest.approx((-0.01 + 0.0) / 2)
    assert gains["largest_partner"]["mean"] == pytest.approx((0.05 + 0.10) / 2)
    summary = summarise({"iid": {"local-only": local, "federated, no DP": fed}})
    assert summary["iid"]["local-only"]["gain_over_local"] is None
    table = markdown({"settings": {"data": "x", "partners": 2, "rounds": 1, "seeds": [0, 1]}, "summary": summary})
    assert "| federated, no DP | +0.0350 [-0.0050, +0.0750] |" in table
    assert "| federated, ε=1 | – |" in table


@pytest.mark.flower
@pytest.mark.dataset
def test_utility_command_on_bank_marketing(tmp_path: Path) -> None:
    """One command, real `flwr run` simulations: every variant scored on the same split."""
    if not BANK_CSV.is_file():
        pytest.skip(f"UCI Bank Marketing not found at {BANK_CSV} (../shared/datasets/bank-marketing)")
    out = tmp_path / "utility_bank"
    proc = subprocess.run([sys.executable, "-m", "fedcrm", "benchmark", "utility", "--data", "bank", "--partners", "3",
                           "--split-by", "label-skew", "--seeds", "1", "--rounds", "2", "--keep-fraction", "0.1", "--epsilon", "3",
                           "--work", str(tmp_path / "work"), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["settings"]["keep_fraction"] == 0.1 and report["settings"]["epsilons"] == [3.0]
    expected = variants([3.0])  # one DP variant asked for: no ε 1 or 8 run
    rows = report["results"]["label-skew"]
    assert set(rows) == set(expected)
    names = set(rows["local-only"][0]["partner_aucs"])
    assert len(names) == 3 and all(n.startswith("bank-label-skew-p") for n in names)
    for variant, seeds in rows.items():
        assert set(seeds[0]["partner_aucs"]) == names, variant  # every variant scored on the same partners
        assert 0.6 < seeds[0]["auc"] < 1.0, (variant, seeds[0])
    table = out.with_suffix(".md").read_text()
    assert all(f"| {v} |" in table for v in expected)
    baselines = json.loads(out.with_suffix(".baselines.json").read_text())
    assert baselines["columns"] == ["variant", "label-skew"] and len(baselines["rows"]) == len(expected)
