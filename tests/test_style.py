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
