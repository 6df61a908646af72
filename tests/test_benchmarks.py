"""The benchmark scripts stay runnable: smoke mode on CPU checks every variant against the reference."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["dmol", "gated_film", "train_step", "sampling", "conditional_vs_per_class"])
def test_benchmark_smoke(name, tmp_path):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"bench_{name}.py"), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke" and result["device_info"]["torch"]
    if name == "sampling":
        assert all(row["identical_pixels"] == 1.0 for row in result["rows"])
    elif name == "conditional_vs_per_class":
        assert {row["method"] for row in result["rows"]} == {"conditional", "per-class"}
        assert all(0 <= row["accuracy"] <= 1 and 0 < row["test_bpd"] < 16 for row in result["rows"])
    else:
        assert {row["variant"] for row in result["rows"]} >= {"eager", "triton"}
