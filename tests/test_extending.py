"""Each kind of extension takes the places docs/contributing.md ("Extending cpixelcnn") names, and
no others: a toy op, sampler engine, command and data format are written **as files into a copy
of the checkout**, and there the enumerating tests and the docs check are run — first with only
the package's places filled (they must fail, naming what is missing), then with every place the
recipe names (they must pass). The first tests here hold on the real tree: what each registered
thing needs beside its registration exists.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOY_KERNELS = '''\
"""A toy op's Triton kernel, written by tests/test_extending.py: twice its input."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cpixelcnn.kernels._spec import NUM_STAGES, PARAM_DTYPES, Specialization, pointer

BLOCK = 256
WARPS = 4


@triton.jit
def double_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=inside) * 2, mask=inside)


def double(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    out = torch.empty_like(x)
    double_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK, num_warps=WARPS)
    return out


def specializations(dtypes=PARAM_DTYPES):
    for dtype in dtypes:
        signature = {"x_ptr": pointer(dtype), "out_ptr": pointer(dtype), "n": "i32", "BLOCK": "constexpr"}
        yield Specialization(double_kernel, signature, {"BLOCK": BLOCK}, WARPS, NUM_STAGES, dtype)
'''

TOY_OP = '''\
"""A toy op, written by tests/test_extending.py: twice its input. Eager reference, dispatch, registration."""

from __future__ import annotations

import torch

from cpixelcnn.ops.backend import register_op, resolve_backend


def double_eager(x: torch.Tensor) -> torch.Tensor:
    return 2 * x


def double(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    if resolve_backend(backend, x.device) == "triton":
        from cpixelcnn.kernels.toy import double as double_triton

        return double_triton(x)
    return double_eager(x)


def _compare(device: torch.device) -> tuple[float, str]:
    x = torch.randn(3, 5, 7, dtype=torch.float64, device=device)
    return (double(x, "triton") - double_eager(x)).abs().max().item(), "3x5x7, float64"


register_op("toy", "cpixelcnn.kernels.toy", _compare, tolerance=0.0, fuses="twice its input", checked="float64, 3x5x7")
'''

TOY_OP_TEST = """\
import torch

from cpixelcnn.ops.toy import double, double_eager


def test_triton_matches_the_reference():
    for shape in [(1,), (3, 5, 7), (2, 1, 300)]:
        x = torch.randn(shape, dtype=torch.float64)
        assert torch.equal(double(x, "triton"), double_eager(x))
"""

TOY_OP_BENCH = '''\
"""The toy op, eager vs Triton (written by tests/test_extending.py)."""

from __future__ import annotations

import argparse
import sys

from benchmarks import common

GPU_CASES = [(1 << 24, "float32"), (1 << 24, "bfloat16")]


def gpu_traffic(elem_bytes: dict[str, int]):
    for n, dtype in GPU_CASES:
        yield f"N{n}", dtype, n, {"fwd": 2 * n * elem_bytes[dtype]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    common.setup_smoke_mode()
    import torch

    from cpixelcnn.ops.toy import double, double_eager

    x = torch.randn(1000, dtype=torch.float64)
    rows = [dict(variant=name, rel_error=common.relative_error(fn(x), 2 * x)) for name, fn in (("eager", double_eager), ("triton", double))]
    payload = dict(benchmark="toy", mode="smoke", device_info=common.device_info(), rows=rows)
    common.write_results("toy", payload, args.out)
    return 0 if all(common.agrees(row, 0.0) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
'''

TOY_ENGINE = """
register_engine(Engine("toy", "cached_sample", "cpu", "a toy engine: the CPU engine's function again", "csrc/cached_sampler.cpp", auto=False))
"""

TOY_COMMAND = '''\
"""``cpixelcnn toy``: says a word (written by tests/test_extending.py)."""

NAME = "toy"
HELP = "a toy command"


def add_arguments(parser) -> None:
    parser.add_argument("--word", default="hi", help="what to say")


def run(args) -> int:
    print(f"toy says {args.word}")
    return 0
'''

TOY_FORMAT = '''\
"""``toy:N``: N flat grey images, two classes (written by tests/test_extending.py)."""

from __future__ import annotations

import torch

from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import Dataset, DataError

CLASSES = ["dark", "light"]


def _load(request: Request) -> Dataset:
    if not request.source.isdigit():
        raise DataError(f"--data toy:{request.source}: N must be a whole number")
    n = int(request.source)
    labels = torch.arange(n) % 2
    images = (20 + 200 * labels).to(torch.uint8).view(n, 1, 1, 1).expand(n, request.channels, request.size, request.size)
    return Dataset(images.contiguous(), labels, list(CLASSES), layout="toy")


register(
    DataFormat(
        "toy",
        "prefix",
        "toy:N",
        "N flat images, two classes (a toy)",
        _load,
        lambda source, split: split in ("train", "test"),
        lambda source: Native(None, None, CLASSES, ("train", "test")),
    )
)
'''


def _installed() -> bool:
    return os.environ.get("CPIXELCNN_EXPECT_INSTALLED") == "1"


# -- on the real tree: what each registered thing needs beside its registration ------------------


def test_every_op_has_its_kernels_test_and_benchmark(source_tree):
    """An op's kernels module lists its launches; tests/test_<op>.py and benchmarks/bench_<op>.py
    (with ``gpu_traffic`` for the GPU predictions) mirror it."""
    import importlib

    from cpixelcnn.ops import OPS

    missing = []
    for name, op in OPS.items():
        if not callable(getattr(importlib.import_module(op.kernels), "specializations", None)):
            missing.append(f"{op.kernels}.specializations")
        for place in (f"tests/test_{name}.py", f"benchmarks/bench_{name}.py"):
            if not (source_tree / place).is_file():
                missing.append(place)
        bench = source_tree / "benchmarks" / f"bench_{name}.py"
        if bench.is_file() and "def gpu_traffic(" not in bench.read_text():
            missing.append(f"benchmarks/bench_{name}.py: gpu_traffic")
    assert not missing, f"an op lacks its places: {', '.join(missing)}"


def test_every_engine_names_its_source_and_every_command_module_is_listed(source_tree):
    from cpixelcnn.commands import COMMANDS
    from cpixelcnn.sampling.engines import ENGINES

    assert not [e.name for e in ENGINES.values() if not (source_tree / e.source).is_file()], "an engine's source is not under csrc/"
    listed = {command.__name__.rsplit(".", 1)[1] for command in COMMANDS}
    modules = {p.stem for p in (source_tree / "cpixelcnn" / "commands").glob("*.py")} - {"__init__", "options"}
    assert modules == listed, f"command modules not in COMMANDS: {sorted(modules - listed)}"
    assert len({c.NAME for c in COMMANDS}) == len(COMMANDS)


# Literal collections that may name registered things, and why: the experiment a benchmark runs
# (which sets, paired how), and the one place the data-format recipe names (checked complete there).
NAMED_ON_PURPOSE = {
    ("benchmarks/bench_ood.py", "TASKS"): "the out-of-distribution pairs the benchmark measures",
    ("tests/test_data_describes_itself.py", "_sources"): "a source per format, asserted complete against FORMATS",
}


DEVICES = {"cpu", "cuda"}


def registered_lists(text: str, kinds: dict[str, set[str]]) -> list[tuple[int, str, str, list[str]]]:
    """(line, enclosing name, kind, names) of every list, tuple, set or dict literal made only of
    registered names of one kind (two or more): an enumeration of a registry written by hand."""
    found = []

    def visit(node, owner):
        for child in ast.iter_child_nodes(node):
            name = owner
            if isinstance(child, (ast.FunctionDef, ast.ClassDef)):
                name = child.name
            elif isinstance(child, ast.Assign) and isinstance(child.targets[0], ast.Name) and isinstance(node, ast.Module):
                name = child.targets[0].id
            if isinstance(child, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
                elements = child.keys if isinstance(child, ast.Dict) else child.elts
                values = [e.value if isinstance(e, ast.Constant) else None for e in elements]
                for kind, names in kinds.items():
                    if kind == "engine" and set(values) <= DEVICES:
                        continue  # ("cpu", "cuda") are the devices before they are engines
                    if len(set(values)) >= 2 and all(isinstance(v, str) and v in names for v in values):
                        found.append((child.lineno, name, kind, sorted(set(values))))
            visit(child, name)

    visit(ast.parse(text), "")
    return found


def test_no_test_benchmark_or_script_lists_registered_names_by_hand(source_tree):
    """Ops, engines and formats are enumerated from OPS, ENGINES and FORMATS, never from a literal."""
    import re

    from cpixelcnn.data import FORMATS
    from cpixelcnn.ops import OPS
    from cpixelcnn.sampling.engines import ENGINES

    kinds = {"op": set(OPS), "engine": set(ENGINES), "format": set(FORMATS)}
    assert registered_lists("x = ('dmol', 'gated_film')\ndef f():\n    return {'cpu': 1, 'cuda-emulated': 2}\n", kinds) == [
        (1, "x", "op", "dmol gated_film".split()),
        (3, "f", "engine", "cpu cuda-emulated".split()),
    ]  # the scan sees what it is for
    hits = []
    for path in sorted([*(source_tree / "tests").glob("*.py"), *(source_tree / "benchmarks").glob("*.py")]):
        where = path.relative_to(source_tree).as_posix()
        for line, owner, kind, names in registered_lists(path.read_text(), kinds):
            if (where, owner) not in NAMED_ON_PURPOSE:
                hits.append(f"{where}:{line} ({owner or 'module'}) lists the {kind}s {names}")
    for path in sorted((source_tree / "scripts").glob("*.sh")):
        for number, text in enumerate(path.read_text().splitlines(), 1):
            for kind, names in kinds.items():
                named = [n for n in names if n not in DEVICES and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
                if len(named) >= 2:
                    hits.append(f"scripts/{path.name}:{number} names the {kind}s {sorted(named)}")
    assert not hits, "enumerate the registry instead:\n" + "\n".join(hits)


# -- in a copy of the checkout: the toy of each kind, its places, what fails without them --------


@pytest.fixture
def tree(tmp_path, source_tree) -> Path:
    """A copy of the checkout (git's files, tracked and untracked, and the built extension)."""
    if _installed():
        pytest.skip("tests the repository's recipes, not the installed package")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=source_tree, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("needs a git checkout")
    copy = tmp_path / "tree"
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (source_tree / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_tree / name, copy / name)
    for built in (source_tree / "cpixelcnn").glob("_C*.so"):
        shutil.copy2(built, copy / "cpixelcnn" / built.name)
    # as installed, kernels/ is cpixelcnn.kernels (an editable install maps it to the real checkout)
    (copy / "cpixelcnn" / "kernels").symlink_to(copy / "kernels", target_is_directory=True)
    return copy


def _in(tree: Path, *command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CPIXELCNN_SOURCE_TREE", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")}
    env["PYTHONPATH"] = str(tree)
    proc = subprocess.run([sys.executable, *command], cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    proc.said = proc.stdout + proc.stderr
    return proc


def _pytest(tree: Path, *node_ids: str) -> subprocess.CompletedProcess:
    return _in(tree, "-m", "pytest", "-q", "-p", "no:cacheprovider", *node_ids)


def _write(tree: Path, place: str, text: str, append: bool = False) -> None:
    path = tree / place
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if append else "") + text)


def _docs_lag(tree: Path) -> str:
    proc = _in(tree, "-m", "benchmarks.tables", "--check")
    return "" if proc.returncode == 0 else proc.said


OP_TESTS = (
    "tests/test_extending.py::test_every_op_has_its_kernels_test_and_benchmark",
    "tests/test_kernel_resources.py::test_committed_report_meets_limits_and_matches_the_launchers",
    "tests/test_predict_gpu.py::test_committed_predictions_cover_every_op",
    "tests/test_layers.py::test_one_gate_holds_every_fast_paths_checks_and_memoises_the_device",
)


def test_a_toy_op_takes_the_recipes_places(tree):
    """Package: kernels/<op>.py, ops/<op>.py. Repository: tests/test_<op>.py, benchmarks/bench_<op>.py,
    the kernel-resource report and the GPU predictions regenerated, the docs' tables rendered."""
    _write(tree, "kernels/toy.py", TOY_KERNELS)
    _write(tree, "cpixelcnn/ops/toy.py", TOY_OP)
    first = _pytest(tree, *OP_TESTS)
    assert first.returncode == 1 and "tests/test_toy.py" in first.said and "benchmarks/bench_toy.py" in first.said, first.said[-3000:]
    assert "lacks: ['toy']" in first.said and "FAILED tests/test_predict_gpu.py::test_committed_predictions_cover_every_op" in first.said
    assert "docs/kernels.md" in _docs_lag(tree)

    _write(tree, "tests/test_toy.py", TOY_OP_TEST)
    _write(tree, "benchmarks/bench_toy.py", TOY_OP_BENCH)
    for regenerate in (("benchmarks.kernel_resources", "--ops", "toy"), ("benchmarks.predict_gpu",), ("benchmarks.tables",)):
        proc = _in(tree, "-m", *regenerate)
        assert proc.returncode == 0, proc.said[-3000:]
    again = _pytest(tree, *OP_TESTS, "tests/test_toy.py", "tests/test_benchmarks.py::test_every_benchmark_is_smoked_or_has_its_own_test")
    assert again.returncode == 0, again.said[-3000:]
    assert _docs_lag(tree) == "" and "| `toy` |" in (tree / "docs" / "kernels.md").read_text()
    bench = _in(tree, "-m", "benchmarks.bench_toy", "--smoke", "--out", str(tree / "toy.json"))
    assert bench.returncode == 0, bench.said[-3000:]
    doctor = _in(tree, "-m", "cpixelcnn", "doctor")
    assert "toy" in doctor.said, doctor.said[-3000:]


def test_a_toy_engine_takes_the_recipes_places(tree):
    """Package: its C++ unit (here the CPU engine's, reused: a new unit needs the extension rebuilt)
    and one register_engine line. Repository: the docs' engine table and --engine's help rendered;
    the engine tests then run it against the naive sampler because they iterate the registry."""
    _write(tree, "cpixelcnn/sampling/engines.py", TOY_ENGINE, append=True)
    lag = _docs_lag(tree)
    assert "docs/kernels.md" in lag and "docs/cli.md" in lag, lag
    assert _in(tree, "-m", "benchmarks.tables").returncode == 0 and _docs_lag(tree) == ""
    listed = _in(tree, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_cached_sampler.py", "-k", "toy")
    assert len([line for line in listed.stdout.splitlines() if "toy" in line]) >= 3, listed.said[-2000:]
    proc = _pytest(
        tree, "tests/test_sampling.py::test_one_sampler_vocabulary_method_and_engine", "tests/test_cached_sampler.py", "-k", "toy or vocabulary"
    )
    assert proc.returncode == 0, proc.said[-3000:]


def test_a_toy_command_takes_the_recipes_places(tree):
    """Package: commands/<name>.py and its entry in COMMANDS. Repository: docs/cli.md rendered."""
    _write(tree, "cpixelcnn/commands/toy.py", TOY_COMMAND)
    first = _pytest(tree, "tests/test_extending.py::test_every_engine_names_its_source_and_every_command_module_is_listed")
    assert first.returncode == 1 and "not in COMMANDS: ['toy']" in first.said, first.said[-3000:]
    init = tree / "cpixelcnn" / "commands" / "__init__.py"
    text = init.read_text().replace("import bench,", "import bench, toy,").replace("import_checkpoint, cache)", "import_checkpoint, cache, toy)")
    init.write_text(text)
    assert _pytest(tree, "tests/test_extending.py::test_every_engine_names_its_source_and_every_command_module_is_listed").returncode == 0
    assert "docs/cli.md" in _docs_lag(tree)
    assert _in(tree, "-m", "benchmarks.tables").returncode == 0 and _docs_lag(tree) == ""
    said = _in(tree, "-m", "cpixelcnn", "toy", "--word", "hello")
    assert said.returncode == 0 and said.stdout == "toy says hello\n", said.said


def test_a_toy_format_takes_the_recipes_places(tree):
    """Package: data/<format>.py (found by the data package itself). Repository: a source for it in
    tests/test_data_describes_itself.py, the docs' format table and --data's help rendered."""
    _write(tree, "cpixelcnn/data/toy.py", TOY_FORMAT)
    describes = "tests/test_data_describes_itself.py::test_every_format_describes_what_loading_gives"
    first = _pytest(tree, describes)
    assert first.returncode == 1 and "cpixelcnn.data.toy" in first.said, first.said[-3000:]
    test = tree / "tests" / "test_data_describes_itself.py"
    test.write_text(test.read_text().replace('"demo": "demo",', '"demo": "demo",\n        "toy": "toy:6",'))
    assert _pytest(tree, describes).returncode == 0
    lag = _docs_lag(tree)
    assert "docs/data.md" in lag and "docs/cli.md" in lag, lag
    assert _in(tree, "-m", "benchmarks.tables").returncode == 0 and _docs_lag(tree) == ""
    run = tree / "runs" / "toy"
    tiny = ("--image-size", "4", "--channels", "1", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2", "--batch-size", "4", "--device", "cpu")
    trained = _in(tree, "-m", "cpixelcnn", "train", "--data", "toy:12", "--out", str(run), "--max-steps", "2", "--val-data", "none", *tiny)
    assert trained.returncode == 0, trained.said[-3000:]
    classified = _in(tree, "-m", "cpixelcnn", "classify", "--checkpoint", str(run), "--data", "toy:6", "--device", "cpu")
    assert classified.returncode == 0 and "accuracy" in classified.said, classified.said[-3000:]
    bad = _in(tree, "-m", "cpixelcnn", "classify", "--checkpoint", str(run), "--data", "toy:many")
    assert bad.returncode != 0 and bad.said.strip().splitlines()[-1].endswith("N must be a whole number"), bad.said


def test_the_recipe_names_every_place(source_tree):
    """docs/contributing.md names each place the toys above needed."""
    recipe = (source_tree / "docs" / "contributing.md").read_text()
    section = recipe[recipe.index("## Extending cpixelcnn") :]
    for place in (
        "kernels/<op>.py", "cpixelcnn/ops/<op>.py", "tests/test_<op>.py", "benchmarks/bench_<op>.py", "--ops <op>", "benchmarks.predict_gpu",
        "csrc/<engine>.cpp", "cpixelcnn/sampling/engines.py", "_cuda_binding.cpp",
        "cpixelcnn/commands/<name>.py", "COMMANDS",
        "cpixelcnn/data/<format>.py", "tests/test_data_describes_itself.py", "python -m benchmarks.tables",
    ):  # fmt: skip
        assert place in section, place
