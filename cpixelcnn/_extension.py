"""Access to the compiled extension ``cpixelcnn._C``, which is optional.

The package works without it (everything has an eager path); features that need it call
:func:`require_extension`, which says why it is missing and how to build it.
"""

from __future__ import annotations

import importlib

import torch  # noqa: F401  (loads libc10/libtorch, which _C links against)

_BUILD_HINT = (
    "build it with `pip install --no-build-isolation -e .` in an environment that already has torch "
    "(a C++ compiler and ninja are needed; CUDA is optional)"
)

try:  # the compiled module by its full name: it is no Python module of the package (and not its facade)
    _C = importlib.import_module("cpixelcnn._C")
    IMPORT_ERROR: str | None = None
except ImportError as err:  # not built, or built against another torch
    _C = None
    IMPORT_ERROR = str(err)


def extension_available() -> bool:
    """Whether the compiled extension ``cpixelcnn._C`` (the cached sampler's engines, the fast PNG row reconstruction) is built and importable."""
    return _C is not None


def require_extension(feature: str):
    """Return the extension module, or raise RuntimeError naming ``feature`` and the fix."""
    if _C is None:
        raise RuntimeError(f"{feature} needs the compiled extension cpixelcnn._C, which is not available ({IMPORT_ERROR}); {_BUILD_HINT}")
    return _C
