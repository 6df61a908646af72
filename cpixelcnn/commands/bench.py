"""``cpixelcnn bench``: the benchmark modules of a source checkout, found rather than listed.

Every module of ``benchmarks/`` but ``__init__`` and ``common`` is a benchmark, named without its
``bench_`` prefix. Smoke mode runs each with the arguments its module declares in ``SMOKE_ARGS``
(default ``["--smoke"]``) and ``--out`` in a temporary folder, so nothing in the checkout changes.
The benchmarks are not installed with the package: they need the checkout.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

NAME, HELP = "bench", "run the benchmark suite (smoke mode without CUDA)"

NOT_BENCHMARKS = ("__init__", "common", "tables")  # helpers: shared code, the docs tables from the results
DEFAULT_SMOKE_ARGS = ["--smoke"]


def checkout_root() -> Path | None:
    """The source checkout this package runs from, if it does (an installed package has no benchmarks/)."""
    root = Path(__file__).resolve().parents[2]  # cpixelcnn/commands/bench.py -> the checkout
    return root if (root / "benchmarks" / "__init__.py").is_file() else None


def benchmark_modules(root: Path | None = None) -> dict[str, Path]:
    """Short name -> module file, for every benchmark of the checkout (empty without one)."""
    root = checkout_root() if root is None else root
    if root is None:
        return {}
    files = sorted((root / "benchmarks").glob("*.py"))
    return {p.stem.removeprefix("bench_"): p for p in files if p.stem not in NOT_BENCHMARKS}


def smoke_arguments(path: Path) -> list[str]:
    """The module's ``SMOKE_ARGS`` (a literal list at top level), else ``["--smoke"]``."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SMOKE_ARGS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return list(DEFAULT_SMOKE_ARGS)


def run_benchmarks(names: list[str] | None = None, smoke: bool = False) -> int:
    """Run the named benchmarks (default: all) one after another, each in its own process; 0 if all succeed."""
    root = checkout_root()
    if root is None:
        raise FileNotFoundError(
            "the benchmarks are not installed with the package: they are the benchmarks/ package of the source "
            "checkout; clone it and run `cpixelcnn bench` (or python -m benchmarks.<name>) from there"
        )
    modules = benchmark_modules(root)
    unknown = [n for n in names or [] if n not in modules]
    if unknown:
        raise ValueError(f"no benchmark {unknown[0]!r} (benchmarks: {', '.join(modules)})")
    status = 0
    with tempfile.TemporaryDirectory(prefix="cpixelcnn-bench-smoke-") as scratch:
        for name in names or list(modules):
            path = modules[name]
            cmd = [sys.executable, "-m", f"benchmarks.{path.stem}"]
            if smoke:
                cmd += smoke_arguments(path) + ["--out", str(Path(scratch) / f"{name}.json")]
            print(f"== {name}: {' '.join(cmd)}", flush=True)
            status |= subprocess.call(cmd, cwd=root)
    return 1 if status else 0


def add_arguments(p) -> None:
    p.add_argument("--smoke", action="store_true", help="each benchmark's quick mode (its SMOKE_ARGS), results to a temporary folder")
    p.add_argument(
        "--only",
        nargs="*",
        metavar="NAME",
        choices=list(benchmark_modules()) or None,
        help="these benchmarks, by module name without bench_ (default: every module of benchmarks/)",
    )


def run(args) -> int:
    return run_benchmarks(args.only, smoke=args.smoke)
