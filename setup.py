"""Build script for the compiled part of cpixelcnn (metadata lives in pyproject.toml).

The extension ``cpixelcnn._C`` is built with torch.utils.cpp_extension and ninja: the CPU part
always, CUDA sources only when a CUDA toolkit *and* a CUDA build of torch are present. The C++
language standard is left to torch.utils.cpp_extension, which adds the one the installed torch
needs (C++17 up to torch 2.13, C++20 from torch 2.14).

Environment switches:
    CPIXELCNN_NO_EXTENSION=1   build nothing (pure-Python install: every feature has an eager path)
    CPIXELCNN_CUDA=1 / =0      force / skip the CUDA sources
    CUDA_HOME / CUDA_PATH      the CUDA toolkit (otherwise found from nvcc's real location)
    TORCH_CUDA_ARCH_LIST       CUDA targets (default without a visible GPU: 8.0;9.0+PTX)
A failed build fails the install, naming the cause and the two ways out (fix the toolchain, or
CPIXELCNN_NO_EXTENSION=1). Install with ``--no-build-isolation`` so the build sees the torch you
already have (an isolated build would download another one).
"""

import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "cpixelcnn"))  # the toolkit finder is shared with `cpixelcnn doctor`
import _toolchain  # noqa: E402

sys.path.pop(0)

# The Triton kernels live in kernels/ in the checkout and install as cpixelcnn.kernels.
PACKAGE_DIR = {"cpixelcnn": "cpixelcnn", "cpixelcnn.kernels": "kernels"}


def discovered_packages() -> list[str]:
    """Every package under cpixelcnn/ and kernels/, found rather than listed (a list by hand forgets
    new sub-packages: cpixelcnn.training was missing from the wheel that way)."""
    packages = find_packages(where=HERE, include=["cpixelcnn", "cpixelcnn.*"])
    kernels = find_packages(where=os.path.join(HERE, "kernels"))
    return sorted(packages + ["cpixelcnn.kernels"] + [f"cpixelcnn.kernels.{name}" for name in kernels])


def _say(message):
    print(f"cpixelcnn setup: {message}", file=sys.stderr)


def extension_setup():
    if os.environ.get("CPIXELCNN_NO_EXTENSION") == "1":
        _say("CPIXELCNN_NO_EXTENSION=1: not building cpixelcnn._C (pure-Python install; the cached sampler is unavailable)")
        return {}
    cuda_home = _toolchain.find_cuda_home()
    if cuda_home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = cuda_home  # before cpp_extension reads it (it would guess from `which nvcc`)
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        raise SystemExit(
            "cpixelcnn setup: torch is not importable at build time, so cpixelcnn._C cannot be built. "
            "Install torch first and use `pip install --no-build-isolation ...`, or set CPIXELCNN_NO_EXTENSION=1 for a pure-Python install."
        ) from None

    # *_cuda_binding.cpp include torch's CUDA headers: CUDA builds only. The .cu units are pure CUDA.
    sources = sorted(s for s in glob.glob("csrc/*.cpp") if not s.endswith("_cuda_binding.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*.cu")) + sorted(glob.glob("csrc/*_cuda_binding.cpp"))
    reason = _why_not_cuda(torch, cpp_extension, bool(cuda_sources))
    extra = {"cxx": ["-O3"]}  # no -std: cpp_extension adds what the installed torch's headers need
    if reason is None:
        extra["nvcc"] = ["-O3"]
        include_dirs = _toolchain.pip_cuda_include_dirs()  # cuSPARSE/cuBLAS headers of the pip CUDA libraries (ATen/cuda includes them)
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = _toolchain.DEFAULT_CUDA_ARCHS
            _say(
                f"no visible GPU: building CUDA code for TORCH_CUDA_ARCH_LIST={_toolchain.DEFAULT_CUDA_ARCHS} (sm_80, sm_90 and PTX for newer GPUs); set it to override"
            )
        _say(f"building with CUDA sources (CUDA_HOME={cpp_extension.CUDA_HOME}, torch {torch.__version__}, CUDA {torch.version.cuda})")
        ext = cpp_extension.CUDAExtension(
            "cpixelcnn._C", sources + cuda_sources, define_macros=[("CPIXELCNN_WITH_CUDA", "1")], include_dirs=include_dirs, extra_compile_args=extra
        )
    else:
        _say(f"building the CPU extension only ({reason}; torch {torch.__version__})")
        ext = cpp_extension.CppExtension("cpixelcnn._C", sources, define_macros=[], extra_compile_args=extra)
    return {"ext_modules": [ext], "cmdclass": {"build_ext": _loud_build_ext(cpp_extension, torch).with_options(use_ninja=True)}}


def _why_not_cuda(torch, cpp_extension, have_sources: bool) -> str | None:
    """Why the CUDA sources are left out of this build (None: they are built); CPIXELCNN_CUDA=1 that cannot be honoured stops the build."""
    want_cuda = os.environ.get("CPIXELCNN_CUDA")
    if want_cuda == "1" and torch.version.cuda is None:
        raise SystemExit(f"cpixelcnn setup: CPIXELCNN_CUDA=1 needs a CUDA build of torch, this one is {torch.__version__} (CPU only)")
    if want_cuda == "1" and cpp_extension.CUDA_HOME is None:
        raise SystemExit(
            "cpixelcnn setup: CPIXELCNN_CUDA=1 but no CUDA toolkit was found; set CUDA_HOME to the toolkit's folder (the one holding bin/nvcc)"
        )
    if not have_sources or want_cuda == "0":
        return "CPIXELCNN_CUDA=0" if want_cuda == "0" else "no CUDA sources"
    if want_cuda != "1" and torch.version.cuda is None:
        return "CPU torch"
    if want_cuda != "1" and cpp_extension.CUDA_HOME is None:
        return "no CUDA toolkit found"
    toolkit = _toolchain.toolkit_cuda_version(cpp_extension.CUDA_HOME)
    if toolkit is not None and not _toolchain.same_cuda_major(toolkit, torch.version.cuda):
        if want_cuda == "1":
            raise SystemExit(
                f"cpixelcnn setup: CPIXELCNN_CUDA=1 but the CUDA toolkit at {cpp_extension.CUDA_HOME} is CUDA {toolkit} and torch "
                f"{torch.__version__} was built with CUDA {torch.version.cuda}; the major releases must match (set CUDA_HOME to a "
                f"CUDA {torch.version.cuda.split('.')[0]}.x toolkit)"
            )
        return (
            f"the CUDA toolkit at {cpp_extension.CUDA_HOME} is CUDA {toolkit}, torch was built with CUDA {torch.version.cuda}; "
            "set CUDA_HOME to a matching toolkit for the CUDA sampler"
        )
    return None


def _loud_build_ext(cpp_extension, torch):
    class LoudBuildExt(cpp_extension.BuildExtension):
        """Build with ninja; on failure stop the install with the compiler's first error and the ways out."""

        def build_extension(self, extension):
            with _toolchain.captured_stdout() as log:
                try:
                    super().build_extension(extension)
                    failure = None
                except Exception as err:  # noqa: BLE001 - any compiler or linker failure
                    failure = err
            if failure is not None:
                cause = _toolchain.first_error(log.text()) or str(failure)
                raise SystemExit(
                    f"cpixelcnn setup: building the compiled extension cpixelcnn._C failed (torch {torch.__version__}): {cause}\n"
                    "  Either fix the toolchain (a C++ compiler and ninja; for CUDA a toolkit matching torch's CUDA, CUDA_HOME) and reinstall,\n"
                    "  or install without the extension: CPIXELCNN_NO_EXTENSION=1 pip install --no-build-isolation -e .  "
                    "(everything still works; sampling then runs one forward pass per pixel, about 1000x slower at 32x32)"
                )

    return LoudBuildExt


setup(packages=discovered_packages(), package_dir=PACKAGE_DIR, **extension_setup())
