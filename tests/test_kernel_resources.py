"""GPU code proven without a GPU: every Triton kernel compiled for sm_90 (and the committed report
for sm_80/sm_90) within 128 registers and no spills; the CUDA translation units compile with nvcc.

Compilation runs in a subprocess (python -m benchmarks.kernel_resources): this test process runs Triton
in interpreter mode, where @triton.jit kernels cannot be compiled for a GPU target.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpixelcnn.kernels._spec import TRITON_TYPE
from cpixelcnn.ops import OPS

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "benchmarks" / "results" / "kernel-resources.json"
from benchmarks import kernel_resources as kr  # noqa: E402  (helpers only; compiling happens in main(), in a subprocess)

IN_CI = os.environ.get("CI") == "true"
NVCC = kr.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None and not IN_CI, reason="no nvcc: install the gpu-check extra (CI always has it)")


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "benchmarks.kernel_resources", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _over_limits(entries):
    return [e for e in entries if e["dtype"] != "fp64" and (e["spill_bytes"] > 0 or e["registers"] > kr.MAX_REGISTERS)]


@pytest.mark.slow
def test_fp32_and_bf16_kernels_for_sm90_within_limits(tmp_path):
    out = tmp_path / "r.json"
    proc = _run("--dtypes", "fp32", "bf16", "--targets", "sm_90", "--out", str(out), *(["--require-cuda"] if IN_CI else []))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    entries = json.loads(out.read_text())["kernels"]
    assert all(tuple(e) == kr.FIELDS for e in entries)
    assert _over_limits(entries) == []
    triton = [(e["kernel"], e["dtype"], json.dumps(e["constexprs"], sort_keys=True)) for e in entries if e["source"] == "triton"]
    specs = list(kr.triton_specializations(["fp32", "bf16"]))  # every registered op's kernels module lists its launches
    assert {s.module for s in specs} == {op.kernels for op in OPS.values()}
    assert sorted(triton) == sorted((s.name, TRITON_TYPE[s.dtype], json.dumps(s.constexprs, sort_keys=True)) for s in specs)
    assert all(e["target"] == "sm_90" and 0 < e["occupancy"] <= 1 for e in entries)
    if NVCC is not None or IN_CI:
        assert {e["kernel"] for e in entries if e["source"] == "cuda"} == {"step_op_kernel", "sample_pixel_kernel"}


def test_committed_report_meets_limits_and_matches_the_launchers():
    data = json.loads(REPORT.read_text())
    entries = data["kernels"]
    assert {e["target"] for e in entries} == {"sm_80", "sm_90"}
    assert {e["dtype"] for e in entries if e["source"] == "triton"} == {"fp32", "bf16", "fp16", "fp64"}
    assert {e["kernel"] for e in entries if e["source"] == "cuda"} == {"step_op_kernel", "sample_pixel_kernel"}
    missing = {op.name for op in OPS.values()} - {name for name, op in OPS.items() if op.kernels in {e["module"] for e in entries}}
    assert not missing, f"ops whose kernels the committed report lacks: {sorted(missing)} (python -m benchmarks.kernel_resources --ops NAME)"
    assert _over_limits(entries) == []


@pytest.mark.slow
def test_committed_entries_recompile_to_the_same_resources():
    """Recompiling from the recorded fields alone gives the recorded registers/spills/shared, and
    the report lists exactly the specializations the launchers can make today."""
    proc = _run("--verify", str(REPORT), "--dtypes", "fp32", "bf16", "--targets", "sm_80")
    if "report made with Triton" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@needs_nvcc
@pytest.mark.parametrize("target", ["sm_80", "sm_90"])
def test_cuda_translation_units_compile_host_and_device(target, tmp_path):
    """Every .cu is pure CUDA: host and device code compile with nvcc alone (no torch headers)."""
    assert NVCC is not None, "CI installs the gpu-check extra: nvcc must be there"
    assert kr.CUDA_UNITS, "no .cu sources found"
    for unit in kr.CUDA_UNITS:
        proc = kr.nvcc_compile(NVCC, unit, target, tmp_path / f"{unit.stem}.o", kind="-c")
        assert proc.returncode == 0, f"{unit.name} for {target}:\n{proc.stderr[-3000:]}"
        includes = [line for line in unit.read_text().splitlines() if line.startswith("#include")]
        assert not any("torch" in line or "ATen" in line or "c10" in line for line in includes), includes


def test_occupancy_model():
    assert kr.occupancy(128, 4, 0, "sm_90") == 0.25  # the limit: 128 registers keep 25 %
    assert kr.occupancy(255, 4, 0, "sm_90") == 0.125  # the 255-register DMoL kernels
    assert kr.occupancy(32, 8, 0, "sm_80") == 1.0
    assert kr.occupancy(32, 4, 100_000, "sm_80") == 4 / 64  # one block per SM by shared memory
