"""Backend names and their resolution, shared by every op and the model.

``"eager"`` is the PyTorch reference. ``"triton"`` routes through the fused kernels in
``cpixelcnn.kernels`` (CUDA tensors, or any tensor under ``TRITON_INTERPRET=1``); ``"auto"``
picks Triton for CUDA tensors when Triton is installed and the kernels have passed their
self-check on that GPU (:mod:`cpixelcnn.trust`: run once, remembered), else eager.
"""
from __future__ import annotations

import os

import torch

BACKENDS = ("eager", "triton", "auto")


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
        from cpixelcnn.trust import trusted

        return "triton" if trusted(device, "triton") else "eager"
    if reason is not None:
        raise RuntimeError(f"backend 'triton' cannot run: {reason}")
    return "triton"
