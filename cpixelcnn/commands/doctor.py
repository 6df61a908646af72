"""``cpixelcnn doctor``: what is installed, and does every fast path
give the eager reference's numbers on this device?

Prints versions (package, Python, torch, CUDA, Triton, compilers), the device and its compute
capability, which compiled pieces are present (and why any is missing), then runs every self-check
registered in :mod:`cpixelcnn.gate` (each op's Triton path, each sampler engine, the dropout
mask) — each with its fast path, error, tolerance and time. Exit status
1 when any check fails. On a machine without a GPU the Triton kernels run in Triton's interpreter
and the CUDA sampler's kernels under CPU emulation; the checks that need a GPU say they were skipped.
Verdicts on a CUDA device are remembered for ``auto`` (:mod:`cpixelcnn.gate`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

NAME, HELP = "doctor", "versions, device, compiled pieces, and a self-check of every fast path against the eager reference"


def _prepare_interpreter() -> str | None:
    """Without a GPU, run the Triton kernels in the interpreter — possible only before they are imported."""
    import torch

    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        return None
    if "cpixelcnn.kernels.dmol" in sys.modules:
        return "the Triton kernels were imported before the interpreter could be chosen (run `cpixelcnn doctor` in a new process)"
    os.environ["TRITON_INTERPRET"] = "1"
    return None


def _tool_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[-1] if command[0] == "nvcc" and out else (out[0] if out else None)


def environment() -> dict:
    import torch

    from cpixelcnn._extension import _C, IMPORT_ERROR
    from cpixelcnn._toolchain import find_cuda_home
    from cpixelcnn._version import __version__
    from cpixelcnn.devices import cpu_name
    from cpixelcnn.sampling.engines import ENGINES, engine_available

    try:
        import triton

        triton_version = triton.__version__
    except ImportError as err:
        triton_version = f"not installed ({err})"
    info = {
        "cpixelcnn": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cxx": _tool_version([os.environ.get("CXX", "c++"), "--version"]),
        "nvcc": _tool_version(["nvcc", "--version"]),
        "cuda_home": find_cuda_home(),
        "cuda_available": torch.cuda.is_available(),
        "device": "cpu",
        "device_name": cpu_name(),
        "compute_capability": None,
        "extension": {"built": _C is not None, "why_missing": IMPORT_ERROR, "engines": {name: engine_available(name, _C) for name in ENGINES}},
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        info.update(device="cuda", device_name=torch.cuda.get_device_name(0), compute_capability=f"{major}.{minor}")
    return info


def report(device_name: str | None = None) -> dict:
    """The whole report as a dict: ``environment``, ``checks`` (list of dicts), ``passed``."""
    import torch

    note = _prepare_interpreter()
    from cpixelcnn import gate, ops, sampling  # noqa: F401  (the modules that register the checks)
    from cpixelcnn.ops import dropout  # noqa: F401
    from cpixelcnn.ops.backend import TRITON

    info = environment()
    device = torch.device(device_name or info["device"])
    results = gate.run_checks(device)
    if note:
        for r in results:
            if r.path == TRITON and r.passed is None:
                r.detail = note
    if device.type == "cuda":  # what auto will trust from now on
        gate.record_results(device, results)
    checks = [
        dict(name=r.label, path=r.path, status=r.status, error=r.error, tolerance=r.tolerance, seconds=round(r.seconds, 4), detail=r.detail)
        for r in results
    ]
    return {"environment": info, "checks": checks, "passed": all(r.passed is not False for r in results)}


def _print(report: dict) -> None:
    env = report["environment"]
    ext = env["extension"]
    print("cpixelcnn doctor")
    for key in ("cpixelcnn", "python", "platform", "torch", "torch_cuda", "triton", "cxx", "nvcc", "cuda_home"):
        print(f"  {key:<20} {env[key] if env[key] is not None else '-'}")
    capability = f" (compute capability {env['compute_capability']})" if env["compute_capability"] else ""
    print(f"  {'device':<20} {env['device']}: {env['device_name']}{capability}")
    if ext["built"]:
        engines = ", ".join(f"{name} engine" for name, built in ext["engines"].items() if built)
        missing = [name for name, built in ext["engines"].items() if not built]
        print(
            f"  {'compiled extension':<20} built: {engines}"
            + (f" (without {', '.join(missing)}: built without a CUDA torch and toolkit)" if missing else "")
        )
    else:
        print(f"  {'compiled extension':<20} MISSING: {ext['why_missing']}")
    print(f"  {'triton mode':<20} {'interpreter (no GPU)' if env['triton_interpret'] else 'compiled kernels'}")
    print("self-checks against the eager reference:")
    for c in report["checks"]:
        figures = (
            f"error {c['error']:.3g} (tolerance {c['tolerance']:.3g}), {c['seconds']:.2f} s" if c["error"] is not None else f"{c['seconds']:.2f} s"
        )
        print(f"  [{c['status']:>4}] {c['name']:<34} {figures if c['status'] != 'skip' else ''} {c['detail']}".rstrip())
    print("all checks passed" if report["passed"] else "SOME CHECKS FAILED: the failing fast paths are not used by 'auto'")


def one_line_report() -> str:
    """torch's version, where cpixelcnn comes from, and whether its compiled extension (and its CUDA part) is built."""
    import torch

    from cpixelcnn import _version
    from cpixelcnn._extension import _C, IMPORT_ERROR
    from cpixelcnn.sampling.engines import engine_available, engines_on

    cuda = [e.name for e in engines_on("cuda")]
    present = bool(cuda) and all(engine_available(name) for name in cuda)
    built = f"built, CUDA part {'present' if present else 'absent'}" if _C else f"NOT built ({IMPORT_ERROR})"
    return f"torch {torch.__version__} | cpixelcnn from {Path(_version.__file__).parent} | compiled extension: {built}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="device to check (default: cuda when available, else cpu)")
    parser.add_argument("--brief", action="store_true", help="one line: torch, where cpixelcnn is imported from, the compiled extension (no checks)")


def run(args: argparse.Namespace) -> int:
    """Check, print the report (text or ``--json``); 0 when every check that ran passed."""
    if args.brief:
        print(one_line_report())
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("cpixelcnn: error: --device cuda: no CUDA device is available", file=sys.stderr)
            return 2
    found = report(args.device)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        _print(found)
    return 0 if found["passed"] else 1
