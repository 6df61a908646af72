"""Triton's CPU interpreter (TRITON_INTERPRET=1) on Triton releases before 3.5.

Those interpreters hand a scalar kernel argument (``K``, the mixture count) to the kernel as a
one-element NumPy array and read it back for ``range(K)`` with ``int(array)``, which NumPy 2.4
refuses for arrays with a dimension ("only 0-dimensional arrays can be converted to Python
scalars"). Triton 3.5 and later read ``int(array.squeeze())``; :func:`mend` gives the older
interpreters that same reading. Compiled (GPU) kernels never go through this code.
"""

from __future__ import annotations

import inspect


def mend() -> bool:
    """Patch an old interpreter's tensor protocol once; True if it was one that needed it."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # no Triton, or one without an interpreter: nothing to mend
        return False
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or getattr(patch_tensor, "_cpixelcnn_mended", False):
        return False
    if len(inspect.signature(patch_tensor).parameters) != 1:  # Triton >= 3.5: scoped patching, already squeezes
        return False

    def patch_lang_tensor(tensor):
        patch_tensor(tensor)
        tensor.__index__ = lambda self: int(self.handle.data.squeeze())

    patch_lang_tensor._cpixelcnn_mended = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True
