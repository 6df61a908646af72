"""Backend names and their resolution, shared by every op and the model.

``"eager"`` is the PyTorch reference. ``"triton"`` routes through the fused kernels in
``cpixelcnn.kernels`` (CUDA tensors, or any tensor under ``TRITON_INTERPRET=1``); ``"auto"``
picks Triton for CUDA tensors when Triton is installed and the kernels have passed their
self-check on that GPU, else eager. The verdict comes from :mod:`cpixelcnn.trust` (run once,
remembered), which registers itself here when the package is imported: the dispatcher never
imports the self-checks, which build models and sample (a layer above the ops).
"""

from __future__ import annotations

import os
from typing import Callable

import torch

BACKENDS = ("eager", "triton", "auto")

# (device, fast path) -> may 'auto' use it there; registered by cpixelcnn.trust
_trust_verdict: Callable[[torch.device, str], bool] | None = None


def register_trust(verdict: Callable[[torch.device, str], bool]) -> None:
    """Let ``verdict(device, "triton")`` decide whether ``auto`` may pick Triton on a CUDA device."""
    global _trust_verdict
    _trust_verdict = verdict


def check_backend(name: str) -> str:
    """Return ``name`` if it is a known backend, else raise a one-line ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(map(repr, BACKENDS))}")
    return name


def triton_unavailable_reason(device: torch.device | None = None) -> str | None:
    """Why the Triton backend cannot run on ``device`` (None when it can)."""
    try:
        import cpixelcnn.kernels.dmol  # noqa: F401  (imports Triton)
        import cpixelcnn.kernels.gated_film  # noqa: F401
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
        return "triton" if _trust_verdict is not None and _trust_verdict(device, "triton") else "eager"
    if reason is not None:
        raise RuntimeError(f"backend 'triton' cannot run: {reason}")
    return "triton"
