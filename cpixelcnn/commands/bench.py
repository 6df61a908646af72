"""``cpixelcnn bench``: every module of benchmarks/ (smoke mode without CUDA)."""

from __future__ import annotations

NAME, HELP = "bench", "run the benchmark suite (smoke mode without CUDA)"


def add_arguments(p) -> None:
    from cpixelcnn.bench import benchmark_modules

    p.add_argument("--smoke", action="store_true", help="each benchmark's quick mode (its SMOKE_ARGS), results to a temporary folder")
    p.add_argument(
        "--only",
        nargs="*",
        metavar="NAME",
        choices=list(benchmark_modules()) or None,
        help="these benchmarks, by module name without bench_ (default: every module of benchmarks/)",
    )


def run(args) -> int:
    from cpixelcnn.bench import run_benchmarks

    return run_benchmarks(args.only, smoke=args.smoke)
