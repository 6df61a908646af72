"""Backend names, the ops that have a Triton path, and the resolution of a backend for a tensor.

``"eager"`` is the PyTorch reference. ``"triton"`` routes through the fused kernels in
``cpixelcnn.kernels`` (CUDA tensors, or any tensor under ``TRITON_INTERPRET=1``); ``"auto"``
picks Triton for CUDA tensors when Triton is installed and every op's kernels have passed their
self-check on that GPU (the fast path ``backend:triton`` of :mod:`cpixelcnn.gate`), else eager.

An op declares itself with :func:`register_op` in its own module (``cpixelcnn/ops/<op>.py``):
its name, the module of its kernels and its self-check. Nothing else needs an edit.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable

import torch

from cpixelcnn import gate

BACKENDS = ("eager", "triton", "auto")
TRITON = "backend:triton"  # the fast path every op's Triton kernels make up together


@dataclasses.dataclass(frozen=True)
class Op:
    """An op with a Triton path: its ``kernels`` module (which also gives ``specializations(dtypes)``,
    what the kernel report compiles) and the check of that path against its eager reference;
    ``fuses`` and ``checked`` are its row in the docs' kernel table (what the kernels do in one pass;
    how they are tested against the reference, with the tolerances)."""

    name: str
    kernels: str
    check: gate.Check
    fuses: str = ""
    checked: str = ""


OPS: dict[str, Op] = {}


def register_op(
    name: str, kernels: str, compare: Callable[[torch.device], tuple[float, str]], tolerance: float, fuses: str = "", checked: str = ""
) -> Op:
    """Declare op ``name``: its Triton kernels live in module ``kernels`` (imported when Triton is
    first asked for), and ``compare(device)`` → (largest error, what was compared) checks them
    against the eager reference within ``tolerance`` (``cpixelcnn doctor``, and before ``auto``
    uses Triton on a GPU). ``fuses`` and ``checked``: its row in the docs' kernel table."""
    if name in OPS:
        raise ValueError(f"op {name!r} is registered twice")
    check = gate.register_check(gate.Check(TRITON, name, compare, tolerance, skip=triton_unavailable_reason))
    OPS[name] = Op(name, kernels, check, fuses, checked)
    return OPS[name]


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise a one-line ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(map(repr, BACKENDS))}")
    return name


def triton_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the Triton backend cannot run on ``device`` (None when it can)."""
    try:
        if not torch.compiler.is_compiling():  # traced, the custom ops import their kernels when they run
            for op in OPS.values():
                importlib.import_module(op.kernels)  # imports Triton
    except ImportError as err:  # Triton is not installed (or does not support this platform)
        return f"the Triton kernels cannot be imported ({err})"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    if device is not None and device.type != "cuda":
        return f"Triton kernels need a CUDA tensor, got a {device.type} tensor (set TRITON_INTERPRET=1 to run them on the CPU)"
    if not torch.cuda.is_available():
        return "no CUDA device is available (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def resolve_backend(name: str, device: torch.device | None = None) -> str:
    """Map a requested backend to the one that runs: ``"eager"`` or ``"triton"``."""
    check_backend(name)
    if name == "eager":
        return "eager"
    reason = triton_unavailable_reason(device)
    if name == "auto":  # Triton only on a real GPU tensor; the interpreter is for testing
        on_gpu = device is not None and device.type == "cuda"
        if not on_gpu:
            return "eager"
        if reason is not None:
            from cpixelcnn.notices import warn_once

            warn_once("auto-backend-eager", f"cpixelcnn: backend 'auto' runs the eager path on {device}: {reason}")
            return "eager"
        return "triton" if gate.trusted(device, TRITON) else "eager"
    if reason is not None:
        raise RuntimeError(f"backend 'triton' cannot run: {reason}")
    return "triton"
