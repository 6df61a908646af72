"""Build script for the compiled part of cpixelcnn (metadata lives in pyproject.toml).

The extension ``cpixelcnn._C`` is built with torch.utils.cpp_extension and ninja: the CPU part
always, CUDA sources only when a CUDA toolkit *and* a CUDA build of torch are present.
Environment switches:
    CPIXELCNN_NO_EXTENSION=1   build nothing (pure-Python install)
    CPIXELCNN_CUDA=1 / =0      force / skip the CUDA sources
A failed build does not fail the install: the package falls back to its eager paths and says
why when a compiled feature is requested. Install with ``--no-build-isolation`` so the build
sees the torch you already have (an isolated build would download another one).
"""
import glob
import os
import sys

from setuptools import setup

PACKAGES = ["cpixelcnn", "cpixelcnn.ops", "cpixelcnn.kernels"]
PACKAGE_DIR = {"cpixelcnn": "cpixelcnn", "cpixelcnn.kernels": "kernels"}


def _say(message):
    print(f"cpixelcnn setup: {message}", file=sys.stderr)


def extension_setup():
    if os.environ.get("CPIXELCNN_NO_EXTENSION") == "1":
        _say("CPIXELCNN_NO_EXTENSION=1: not building cpixelcnn._C")
        return {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        _say("torch is not importable at build time: not building cpixelcnn._C (install torch first, then use --no-build-isolation)")
        return {}

    # *_cuda_binding.cpp include torch's CUDA headers: CUDA builds only. The .cu units are pure CUDA.
    sources = sorted(s for s in glob.glob("csrc/*.cpp") if not s.endswith("_cuda_binding.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*.cu")) + sorted(glob.glob("csrc/*_cuda_binding.cpp"))
    want_cuda = os.environ.get("CPIXELCNN_CUDA")
    use_cuda = bool(cuda_sources) and (
        want_cuda == "1" or (want_cuda != "0" and torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None)
    )
    define_macros = [("CPIXELCNN_WITH_CUDA", "1")] if use_cuda else []
    extra = {"cxx": ["-O3", "-std=c++17"]}
    if use_cuda:
        extra["nvcc"] = ["-O3", "-std=c++17"]
        ext = cpp_extension.CUDAExtension("cpixelcnn._C", sources + cuda_sources, define_macros=define_macros, extra_compile_args=extra)
    else:
        ext = cpp_extension.CppExtension("cpixelcnn._C", sources, define_macros=define_macros, extra_compile_args=extra)

    class OptionalBuildExt(cpp_extension.BuildExtension):
        """Build with ninja; on failure warn and install the pure-Python package."""

        def run(self):
            try:
                super().run()
            except Exception as err:  # noqa: BLE001 - any compiler failure means "no extension"
                _say(f"building cpixelcnn._C failed, installing without it: {err}")

        def build_extension(self, extension):
            try:
                super().build_extension(extension)
            except Exception as err:  # noqa: BLE001
                _say(f"building {extension.name} failed, installing without it: {err}")

    return {"ext_modules": [ext], "cmdclass": {"build_ext": OptionalBuildExt.with_options(use_ninja=True)}}


setup(packages=PACKAGES, package_dir=PACKAGE_DIR, **extension_setup())
