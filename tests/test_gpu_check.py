"""The GPU check's smoke mode: the script that checks fha on CUDA runs here on the CPU, so a
change that breaks its code (or the attention paths it checks) fails CI where no GPU is lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow
def test_smoke_mode_passes_every_check_and_writes_its_report(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] and report["summary"]["failed"] == 0
    variants = {row["variant"] for row in report["correctness"]}
    assert {"fha", "mha", "uniform-finest", "reversed-fha", "coarse-to-fine", "split"} <= variants
    assert {row["dtype"] for row in report["correctness"]} == {"float32", "bfloat16"}
    rows = report["correctness"]
    assert any(row["T"] == 1 for row in rows) and any(row["key_heads"] > row["value_heads"] for row in rows)
    assert any(row["masked"] for row in rows) and any(row["scale"] == "head" for row in rows)
    assert any(row["head_multiple"] == 8 for row in rows)  # CUDA's padding, forced on the CPU
    assert all(row["tokens_equal_fp32"] for row in report["generation"])
    assert {row["subhead_dim"] for row in report["backends"]} == {2, 4, 8, 16, 32, 64}
    assert "worst error / tolerance" in done.stdout and "0 failed" in done.stdout
