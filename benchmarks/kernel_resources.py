"""Registers, spills, shared memory and occupancy of every GPU kernel, compiled for sm_80 and sm_90
without a GPU.

    python -m benchmarks.kernel_resources --out benchmarks/results/kernel-resources.json
    python -m benchmarks.kernel_resources --dtypes fp32 bf16 --targets sm_90 --out r.json   # CI subset
    python -m benchmarks.kernel_resources --verify benchmarks/results/kernel-resources.json --dtypes fp32
        # recompile the report's Triton entries from their recorded fields; same registers/spills?

Triton kernels: every specialization the launchers can make (``specializations()`` of each
``cpixelcnn.kernels`` module) is compiled with ``triton.compile(ASTSource(fn, signature,
constexprs), target=GPUTarget("cuda", 80|90, 32))``; the CUDA sampler's translation units are
compiled with nvcc (the PyPI ``nvidia-cuda-nvcc`` of the ``gpu-check`` extra when installed).
Resources are read from the cubins with the ``cuobjdump -res-usage`` that ships in the Triton
wheel: ``spill_bytes`` is its STACK figure.

Limits, for every entry except float64 ones (reported, not judged): 0 spill bytes and at most
128 registers per thread. The script exits 1 and names the offenders when one is over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE_ARGS = ["--dtypes", "fp32", "--targets", "sm_90"]  # `cpixelcnn bench --smoke`: one dtype, one target
CSRC = ROOT / "csrc"
CUDA_UNITS = sorted(CSRC.glob("*.cu"))
TARGETS = {"sm_80": 80, "sm_90": 90}
DTYPES = ("fp32", "bf16", "fp16", "fp64")
MAX_REGISTERS = 128
FIELDS = (
    "source",
    "module",
    "kernel",
    "target",
    "signature",
    "constexprs",
    "num_warps",
    "num_stages",
    "dtype",
    "registers",
    "spill_bytes",
    "shared_bytes",
    "occupancy",
)

# Per-SM limits (CUDA C Programming Guide, compute capabilities 8.0 and 9.0)
SM_LIMITS = {
    "sm_80": dict(registers=65536, warps=64, blocks=32, shared=167936),
    "sm_90": dict(registers=65536, warps=64, blocks=32, shared=233472),
}
REGISTER_GRANULE = 256  # registers are allocated per warp in units of 256
SHARED_GRANULE = 128
SHARED_RESERVED = 1024  # per block, reserved by the system on sm_80 and later


def occupancy(registers: int, warps: int, shared: int, target: str) -> float:
    """Theoretical occupancy: resident warps / maximum warps, limited by registers, warps, blocks
    and shared memory per SM."""
    lim = SM_LIMITS[target]
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_GRANULE) * REGISTER_GRANULE
    blocks_by_registers = (lim["registers"] // per_warp) // warps
    block_shared = math.ceil((shared + SHARED_RESERVED) / SHARED_GRANULE) * SHARED_GRANULE
    blocks = min(blocks_by_registers, lim["warps"] // warps, lim["blocks"], lim["shared"] // block_shared)
    return round(blocks * warps / lim["warps"], 4)


def tool(name: str) -> Path:
    """A binary shipped in the Triton wheel (ptxas, cuobjdump)."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the Triton wheel at {path}")
    return path


def res_usage(cubin: Path) -> dict[str, dict]:
    """``cuobjdump -res-usage``: {mangled function name: {REG, STACK, SHARED, LOCAL}}."""
    text = subprocess.run([str(tool("cuobjdump")), "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
    usage, name = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            name = m.group(1)
        elif name and "REG:" in line:
            usage[name] = {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", line)}
            name = None
    return usage


def _entry(**fields) -> dict:
    return {k: fields[k] for k in FIELDS}


# -- Triton ------------------------------------------------------------------------------------


def triton_specializations(dtypes, ops=None):
    """Every registered op's kernels (``cpixelcnn.ops.OPS``, or the ops named in ``ops``), each
    specialization its module lists."""
    import importlib

    from cpixelcnn.kernels._spec import TRITON_TYPE
    from cpixelcnn.ops import OPS

    wanted = [d for d, name in TRITON_TYPE.items() if name in dtypes]
    for op in OPS.values():
        if ops is None or op.name in ops:
            yield from importlib.import_module(op.kernels).specializations(wanted)


def compile_triton(kernel, signature: dict, constexprs: dict, num_warps: int, num_stages: int, target: str, workdir: Path) -> dict:
    """Compile one specialization for ``target``; its registers, spill bytes and shared bytes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    compiled = triton.compile(
        ASTSource(kernel, signature, constexprs),
        target=GPUTarget("cuda", TARGETS[target], 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    cubin = workdir / "kernel.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    (usage,) = res_usage(cubin).values()
    shared = max(usage.get("SHARED", 0), int(getattr(compiled.metadata, "shared", 0) or 0))  # Triton's is dynamic
    return {"registers": usage["REG"], "spill_bytes": usage["STACK"], "shared_bytes": shared}


def triton_entries(dtypes, targets, workdir: Path, ops=None):
    from cpixelcnn.kernels._spec import TRITON_TYPE

    for spec in triton_specializations(dtypes, ops):
        for target in targets:
            res = compile_triton(spec.kernel, spec.signature, spec.constexprs, spec.num_warps, spec.num_stages, target, workdir)
            yield _entry(
                source="triton",
                module=spec.module,
                kernel=spec.name,
                target=target,
                signature=spec.signature,
                constexprs=spec.constexprs,
                num_warps=spec.num_warps,
                num_stages=spec.num_stages,
                dtype=TRITON_TYPE[spec.dtype],
                occupancy=occupancy(res["registers"], spec.num_warps, res["shared_bytes"], target),
                **res,
            )


def recompile(entry: dict, workdir: Path) -> dict:
    """Registers/spills/shared of a recorded Triton entry, recompiled from its fields alone."""
    import importlib

    kernel = getattr(importlib.import_module(entry["module"]), entry["kernel"])
    return compile_triton(kernel, entry["signature"], entry["constexprs"], entry["num_warps"], entry["num_stages"], entry["target"], workdir)


# -- CUDA --------------------------------------------------------------------------------------


def find_nvcc() -> Path | None:
    """nvcc from the PyPI packages of the ``gpu-check`` extra, else $CPIXELCNN_NVCC, else PATH/CUDA_HOME."""
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        for base in nvidia.__path__:
            for candidate in sorted(Path(base).glob("cu*/bin/nvcc")) + [Path(base) / "cuda_nvcc" / "bin" / "nvcc"]:
                if candidate.is_file():
                    return candidate
    except ImportError:
        pass
    for candidate in (
        os.environ.get("CPIXELCNN_NVCC"),
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def nvcc_version(nvcc: Path) -> str:
    out = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+)", out)
    return m.group(1) if m else "unknown"


def nvcc_compile(nvcc: Path, unit: Path, target: str, out: Path, kind: str = "-cubin") -> subprocess.CompletedProcess:
    """Compile one translation unit: ``-cubin`` (device code, for resources) or ``-c`` (host + device object)."""
    cmd = [str(nvcc), "-std=c++17", "-O3", f"-arch={target}", "-I", str(CSRC), kind, str(unit), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _demangle(names: list[str]) -> list[str]:
    filt = shutil.which("c++filt")
    if not filt:
        return names
    return subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()


CUDA_TYPES = {"float": "fp32", "double": "fp64"}


def cuda_launch_warps() -> dict[str, int]:
    """Threads per block of each CUDA kernel, read from the launcher's constants (kernel → warps)."""
    text = (CSRC / "cached_sampler_launch.h").read_text()
    warps = {}
    for kernel, const in (("step_op_kernel", "kStepThreads"), ("sample_pixel_kernel", "kSampleThreads")):
        m = re.search(rf"constexpr int {const} = (\d+);", text)
        if not m:
            raise RuntimeError(f"{const} not found in csrc/cached_sampler_launch.h")
        warps[kernel] = int(m.group(1)) // 32
    return warps


def cuda_entries(targets, workdir: Path, nvcc: Path):
    warps = cuda_launch_warps()
    for unit in CUDA_UNITS:
        for target in targets:
            cubin = workdir / f"{unit.stem}-{target}.cubin"
            proc = nvcc_compile(nvcc, unit, target, cubin)
            if proc.returncode != 0:
                raise RuntimeError(f"nvcc failed on {unit.name} for {target}:\n{proc.stderr[-3000:]}")
            usage = res_usage(cubin)
            for mangled, signature in zip(usage, _demangle(list(usage))):
                m = re.match(r"(?:void )?cpixelcnn::cuda::(\w+)<(\w+)>", signature)
                if not m:
                    continue
                kernel, ctype = m.groups()
                res = usage[mangled]
                yield _entry(
                    source="cuda",
                    module=f"csrc/{unit.name}",
                    kernel=kernel,
                    target=target,
                    signature=signature,
                    constexprs={"T": ctype},
                    num_warps=warps[kernel],
                    num_stages=None,
                    dtype=CUDA_TYPES[ctype],
                    registers=res["REG"],
                    spill_bytes=res["STACK"],
                    shared_bytes=res.get("SHARED", 0),
                    occupancy=occupancy(res["REG"], warps[kernel], res.get("SHARED", 0), target),
                )


def _key(entry: dict) -> tuple:
    return (
        entry["source"],
        entry["module"],
        entry["kernel"],
        entry["target"],
        entry["dtype"],
        json.dumps(entry["constexprs"], sort_keys=True),
        entry["num_warps"],
        entry["num_stages"],
    )


def verify(report: Path, dtypes, targets, workdir: Path) -> list[str]:
    """Problems with a recorded report: Triton entries whose recompilation (from the recorded
    fields alone) gives other resources, and launch specializations it lacks or no longer has."""
    import triton

    data = json.loads(report.read_text())
    problems = []
    recorded_version = data.get("tools", {}).get("triton")
    entries = [e for e in data["kernels"] if e["dtype"] in dtypes and e["target"] in targets]
    if recorded_version != triton.__version__:
        problems.append(f"report made with Triton {recorded_version}, this is {triton.__version__}: regenerate it")
    else:
        for e in (e for e in entries if e["source"] == "triton"):
            again = recompile(e, workdir)
            recorded = {k: e[k] for k in again}
            if again != recorded:
                problems.append(f"{e['kernel']} {e['target']} {e['dtype']} {e['constexprs']}: recorded {recorded}, recompiled {again}")
    current = {
        _key(
            dict(
                source="triton",
                module=spec.module,
                kernel=spec.name,
                target=t,
                dtype=name,
                constexprs=spec.constexprs,
                num_warps=spec.num_warps,
                num_stages=spec.num_stages,
            )
        )
        for spec, name in _named(triton_specializations(dtypes))
        for t in targets
    }
    have = {_key(e) for e in entries if e["source"] == "triton"}
    problems += [f"launchable but not in the report: {k}" for k in sorted(current - have)]
    problems += [f"in the report but no longer launched: {k}" for k in sorted(have - current)]
    return problems


def _named(specs):
    from cpixelcnn.kernels._spec import TRITON_TYPE

    for spec in specs:
        yield spec, TRITON_TYPE[spec.dtype]


# -- report ------------------------------------------------------------------------------------


def violations(entries) -> list[str]:
    """Entries over the limits (float64 entries are not judged)."""
    bad = []
    for e in entries:
        if e["dtype"] == "fp64":
            continue
        if e["spill_bytes"] > 0 or e["registers"] > MAX_REGISTERS:
            bad.append(
                f"{e['module']}.{e['kernel']} {e['target']} {e['dtype']} {e['constexprs']}: "
                f"{e['registers']} registers, {e['spill_bytes']} spill bytes"
            )
    return bad


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "kernel-resources.json"), help="JSON path")
    parser.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA sampler's translation units")
    parser.add_argument("--require-cuda", action="store_true", help="fail when no nvcc is found (CI)")
    parser.add_argument("--verify", metavar="REPORT", help="recompile REPORT's Triton entries (within --dtypes/--targets) and compare")
    parser.add_argument(
        "--ops",
        nargs="+",
        metavar="OP",
        help="compile only these registered ops' kernels and replace their entries in --out (a new op's entries, added)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    # Before the kernels are imported: real compilation (under TRITON_INTERPRET @triton.jit
    # would give the interpreter), and Triton 3.9's default FP fusion, stated (silences its warning).
    if os.environ.pop("TRITON_INTERPRET", None) and "cpixelcnn.kernels.dmol" in sys.modules:
        raise RuntimeError("the kernels were imported in interpreter mode; run this script in its own process")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    import triton

    # A private, empty Triton cache: every entry is really compiled (and recompiled by --verify),
    # never read back from an earlier run's cache.
    cache = tempfile.TemporaryDirectory(prefix="triton-cache-")
    os.environ["TRITON_CACHE_DIR"] = cache.name
    if args.ops:
        return update_ops(args)
    if args.verify:
        with tempfile.TemporaryDirectory() as tmp:
            problems = verify(Path(args.verify), args.dtypes, args.targets, Path(tmp))
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{args.verify}: {'OK' if not problems else f'{len(problems)} problems'} ({', '.join(args.dtypes)} on {', '.join(args.targets)})")
        return 1 if problems else 0

    start = time.time()
    nvcc = None if args.no_cuda else find_nvcc()
    if nvcc is None and args.require_cuda:
        print("kernel_resources: no nvcc found; install the gpu-check extra: pip install -e '.[gpu-check]'", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        entries = list(triton_entries(args.dtypes, args.targets, Path(tmp)))
        if nvcc is not None:
            entries += list(cuda_entries(args.targets, Path(tmp), nvcc))
    tools = {
        "triton": triton.__version__,
        "nvcc": str(nvcc) if nvcc else None,
        "nvcc_version": nvcc_version(nvcc) if nvcc else None,
        "python": platform.python_version(),
        "host": platform.platform(),
        "seconds": round(time.time() - start, 1),
    }
    out = _write_report(Path(args.out), entries, tools)
    bad = violations(entries)
    print(f"{len(entries)} entries ({'with' if nvcc else 'without'} CUDA units) in {tools['seconds']} s -> {out}")
    return _said_over_limits(bad)


def _said_over_limits(bad: list[str]) -> int:
    """The exit status of a report with entries ``bad`` over the limits (said on standard error)."""
    if bad:
        print(f"over the limits (0 spills, <= {MAX_REGISTERS} registers):\n  " + "\n  ".join(bad), file=sys.stderr)
        return 1
    return 0


def update_ops(args) -> int:
    """``--ops``: the named ops' entries compiled afresh (every dtype and target asked for), every
    other entry of the report kept as it was (compiled as :func:`main` sets Triton up)."""
    from cpixelcnn.ops import OPS

    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        print(f"kernel_resources: no registered op {', '.join(unknown)} (registered: {', '.join(OPS)})", file=sys.stderr)
        return 2
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"kernels": [], "tools": {}}
    modules = {OPS[name].kernels for name in args.ops}
    with tempfile.TemporaryDirectory() as tmp:
        fresh = list(triton_entries(args.dtypes, args.targets, Path(tmp), set(args.ops)))
    kept = [e for e in report["kernels"] if e.get("module") not in modules]
    _write_report(out, kept + fresh, report["tools"])
    print(f"{len(fresh)} entries of {', '.join(args.ops)} replaced in {out}")
    return _said_over_limits(violations(fresh))


def _write_report(out: Path, entries: list[dict], tools: dict) -> Path:
    """The report as JSON (whole or not at all), and its table on standard output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps({"kernels": entries, "tools": tools}, indent=1) + "\n")
    os.replace(tmp_out, out)
    print(f"{'kernel':<24} {'target':<6} {'dtype':<5} {'constexprs':<58} {'regs':>4} {'spill':>5} {'shared':>6} {'occ':>5}")
    for e in entries:
        flags = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in e["constexprs"].items())
        print(
            f"{e['kernel']:<24} {e['target']:<6} {e['dtype']:<5} {flags:<58} {e['registers']:>4} {e['spill_bytes']:>5} {e['shared_bytes']:>6} {e['occupancy']:>5.0%}"
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
