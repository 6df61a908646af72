"""The source is laid out by one formatter and passes one linter, both configured in pyproject.toml
(ruff, pinned in the test extra: a newer ruff may lay code out differently)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]])
def test_ruff(source_tree, command):
    pytest.importorskip("ruff", reason="ruff comes with the test extra")
    proc = subprocess.run([sys.executable, "-m", "ruff", *command, "--no-cache", "."], cwd=source_tree, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        f"ruff {' '.join(command)} (fix with `ruff {'format' if command[0] == 'format' else 'check --fix'} .`):\n{proc.stdout}{proc.stderr}"
    )


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_sixty_lines(source_tree):
    """Every function of the package, the kernels, the benchmarks and setup.py, docstring and all."""
    import ast

    long = []
    for path in [source_tree / "setup.py"] + sorted(p for d in ("cpixelcnn", "kernels", "benchmarks") for p in (source_tree / d).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(source_tree)}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, "functions over 60 lines (split them):\n" + "\n".join(long)


def test_the_formatter_lays_the_package_out_itself(source_tree):
    """No `# fmt: skip` in the package, the kernels or setup.py: the line length (pyproject.toml) is what the formatter works to."""
    marked = [f"{p.relative_to(source_tree)}:{n}" for d in ("cpixelcnn", "kernels") for p in (source_tree / d).rglob("*.py")
              for n, line in enumerate(p.read_text().splitlines(), 1) if "fmt: skip" in line]  # fmt: skip
    assert not marked and "fmt: skip" not in (source_tree / "setup.py").read_text(), marked
