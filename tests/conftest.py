"""Fixtures for every test; shared helpers live in helpers.py.

The suite runs against whichever cpixelcnn is importable: the checkout's (an editable install,
README command 2) or an installed wheel (CI's installed phase copies tests/ out of the checkout and
sets CPIXELCNN_EXPECT_INSTALLED=1, which fails the run unless the package comes from site-packages).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# decoded images go to a cache folder of this test process (CLI subprocesses inherit it), never the user's
os.environ["CPIXELCNN_DATA_CACHE"] = _CACHE = tempfile.mkdtemp(prefix="cpixelcnn-test-data-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker (and per child process): the workers share the cores
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
if not torch.cuda.is_available():  # run the Triton kernels on CPU tensors (must precede their import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import cpixelcnn  # noqa: E402

HERE = Path(__file__).resolve().parent.parent


def pytest_report_header(config):
    return f"cpixelcnn {cpixelcnn.__version__} from {Path(cpixelcnn.__file__).parent}, torch {torch.__version__}"


def pytest_sessionstart(session):
    if os.environ.get("CPIXELCNN_EXPECT_INSTALLED") == "1":
        where = Path(cpixelcnn.__file__).resolve()
        if "site-packages" not in where.parts or (HERE / "cpixelcnn") in where.parents:
            raise pytest.UsageError(f"CPIXELCNN_EXPECT_INSTALLED=1 but cpixelcnn was imported from {where}, not from an installed wheel")


def pytest_collection_modifyitems(config, items):
    """The longest tests first (the quality guard, then the slow ones): pytest-xdist hands tests out
    in order, so a long test started last would run alone at the end while the other cores idle."""
    rank = {"quality": 0, "slow": 1}
    items.sort(key=lambda item: min((rank[m.name] for m in item.iter_markers() if m.name in rank), default=2))


@pytest.fixture(scope="session")
def source_tree() -> Path:
    """The source checkout (setup.py, cpixelcnn/, kernels/, csrc/), for tests of the build itself:
    the folder above tests/, or $CPIXELCNN_SOURCE_TREE when the tests were copied out of it."""
    for root in (os.environ.get("CPIXELCNN_SOURCE_TREE"), HERE):
        if root and (Path(root) / "setup.py").is_file() and (Path(root) / "cpixelcnn").is_dir():
            return Path(root).resolve()
    pytest.skip("needs the source checkout (set CPIXELCNN_SOURCE_TREE when the tests run outside it)")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
