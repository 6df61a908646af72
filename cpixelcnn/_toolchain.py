"""Finding the build toolchain: the CUDA toolkit, the pip CUDA libraries' headers, compiler errors.

Imported by ``setup.py`` before torch (standard library only) and by ``cpixelcnn doctor``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import site
import sys
import tempfile

DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"  # without a visible GPU: A100 / H100, and PTX that newer GPUs JIT-compile


def _is_toolkit(folder: str | None) -> bool:
    return (
        bool(folder)
        and os.path.isfile(os.path.join(folder, "bin", "nvcc"))
        and bool(
            glob.glob(os.path.join(folder, "include", "cuda_runtime*.h"))
            or glob.glob(os.path.join(folder, "targets", "*", "include", "cuda_runtime*.h"))
        )
    )


def _nvcc_toolkit(nvcc: str) -> str | None:
    """The toolkit behind an ``nvcc`` on the PATH: its real location, or — for a wrapper script
    such as ``exec /usr/local/cuda-13.0/bin/nvcc "$@"`` — the nvcc it runs."""
    real = os.path.realpath(nvcc)
    folder = os.path.dirname(os.path.dirname(real))
    if _is_toolkit(folder):
        return folder
    try:
        with open(real, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    for target in re.findall(rb"(/[\w./+-]+)/bin/nvcc\b", head):
        candidate = os.path.realpath(target.decode())
        if _is_toolkit(candidate):
            return candidate
    return None


def _site_dirs() -> list[str]:
    dirs = [p for p in sys.path if p.endswith("site-packages")]
    with contextlib.suppress(AttributeError):
        dirs += site.getsitepackages()
    return list(dict.fromkeys(d for d in dirs if os.path.isdir(d)))


def find_cuda_home() -> str | None:
    """The CUDA toolkit folder: $CUDA_HOME, $CUDA_PATH, nvcc's real location on the PATH,
    /usr/local/cuda, then the pip-installed compiler (``nvidia/cu13`` or ``nvidia/cuda_nvcc``)."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if _is_toolkit(os.environ.get(name)):
            return os.environ[name]
    nvcc = shutil.which("nvcc")
    if nvcc and (found := _nvcc_toolkit(nvcc)):
        return found
    if _is_toolkit("/usr/local/cuda"):
        return os.path.realpath("/usr/local/cuda")
    for root in _site_dirs():
        for candidate in sorted(glob.glob(os.path.join(root, "nvidia", "cu*"))) + [os.path.join(root, "nvidia", "cuda_nvcc")]:
            if _is_toolkit(candidate):
                return candidate
    return None


def toolkit_cuda_version(cuda_home: str) -> str | None:
    """The CUDA release of a toolkit ("13.0"), read from ``nvcc --version``; None if unreadable."""
    import subprocess

    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+\.\d+)", out)
    return found.group(1) if found else None


def same_cuda_major(a: str | None, b: str | None) -> bool:
    """torch.utils.cpp_extension refuses a toolkit whose major CUDA release differs from torch's."""
    return bool(a) and bool(b) and a.split(".")[0] == b.split(".")[0]


def pip_cuda_include_dirs() -> list[str]:
    """Header folders of the pip CUDA libraries a CUDA torch installs (cuSPARSE, cuBLAS ...): a
    system toolkit without those libraries still compiles torch's ATen/cuda headers with them."""
    found = []
    for root in _site_dirs():
        for folder in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if glob.glob(os.path.join(folder, "cusparse*.h")) or glob.glob(os.path.join(folder, "cublas*.h")):
                found.append(folder)
    return found


class _Captured:
    def __init__(self):
        self.file = tempfile.TemporaryFile()

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read().decode(errors="replace")


@contextlib.contextmanager
def captured_stdout():
    """Capture what this process and its children write to file descriptor 1 (ninja, the
    compiler) and write it back afterwards, so a failure can quote the compiler's first error."""
    sys.stdout.flush()
    captured = _Captured()
    saved = os.dup(1)
    os.dup2(captured.file.fileno(), 1)
    try:
        yield captured
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout.write(captured.text())
        sys.stdout.flush()


def first_error(log: str) -> str | None:
    """The first compiler/linker error line of a build log (``#error``, ``error:``, ``fatal error``)."""
    for line in log.splitlines():
        if (
            re.search(r"(\berror\b:|#error|fatal error|undefined reference|command not found)", line, re.IGNORECASE)
            and "Error compiling objects" not in line
        ):
            return line.strip()
    return None
