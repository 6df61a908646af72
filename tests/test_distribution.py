"""What users install: the sdist carries every module and the C++/CUDA sources, and a wheel built
*from that sdist* (what `pip install .`, `pip install git+URL` and a build farm do) carries every
module and the compiled extension.

Building the wheel compiles the extension (minutes on 2 cores), so the test is marked slow. CI
builds the sdist and the wheel once for its installed-package phase and hands them over in
$CPIXELCNN_DIST_DIR; this test then checks those very files.
"""

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _source_modules(source: Path) -> set[str]:
    """Every module as the wheel must hold it: cpixelcnn/** as is, kernels/** as cpixelcnn/kernels/**."""
    modules = {f"cpixelcnn/{p.relative_to(source / 'cpixelcnn').as_posix()}" for p in (source / "cpixelcnn").rglob("*.py")}
    modules |= {f"cpixelcnn/kernels/{p.relative_to(source / 'kernels').as_posix()}" for p in (source / "kernels").rglob("*.py")}
    return modules


def _build(source: Path, out: Path) -> tuple[Path, Path]:
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(source)], check=True, capture_output=True, timeout=600
    )
    (sdist,) = out.glob("cpixelcnn-*.tar.gz")
    # from the sdist, not from the checkout: only what the sdist carries can reach the wheel
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "--wheel-dir", str(out), str(sdist)],
                   check=True, capture_output=True, timeout=1800)  # fmt: skip
    (wheel,) = out.glob("cpixelcnn-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def distribution(source_tree, tmp_path_factory):
    given = os.environ.get("CPIXELCNN_DIST_DIR")
    if given:
        sdists, wheels = sorted(Path(given).glob("cpixelcnn-*.tar.gz")), sorted(Path(given).glob("cpixelcnn-*.whl"))
        assert len(sdists) == 1 and len(wheels) == 1, f"CPIXELCNN_DIST_DIR={given} must hold one sdist and one wheel"
        return sdists[0], wheels[0]
    return _build(source_tree, tmp_path_factory.mktemp("dist"))


def test_the_sdist_holds_every_module_and_the_compiled_sources(distribution, source_tree):
    sdist, _ = distribution
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n[len(top) + 1 :] for n in tar.getnames() if n.startswith(top + "/")}
    expected = {p.relative_to(source_tree).as_posix() for folder in ("cpixelcnn", "kernels") for p in (source_tree / folder).rglob("*.py")}
    expected |= {p.relative_to(source_tree).as_posix() for p in (source_tree / "csrc").iterdir() if p.is_file()}
    expected |= {"setup.py", "pyproject.toml", "MANIFEST.in", "README.md"}
    assert any(n.endswith(".cu") for n in expected) and any(n.endswith(".h") for n in expected)
    assert sorted(expected - names) == []


def test_a_wheel_built_from_the_sdist_holds_every_module_and_the_extension(distribution, source_tree):
    _, wheel = distribution
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
    assert {"cpixelcnn/training/__init__.py", "cpixelcnn/kernels/dmol.py"} <= names
    assert sorted(_source_modules(source_tree) - names) == []
    extensions = [n for n in names if n.startswith("cpixelcnn/_C.") and n.endswith((".so", ".pyd"))]
    assert len(extensions) == 1, f"the compiled extension cpixelcnn._C is not in the wheel: {sorted(n for n in names if '_C' in n)}"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "csrc/"))]  # sources of the sdist, not of the install
