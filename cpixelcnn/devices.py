"""Devices: what ``--device auto`` picks, and where float64 work runs.

Apple GPUs (``mps``) have no float64. The package keeps float64 where exactness needs it — the
samplers' per-pixel draws (and their random numbers), the classifier's log-likelihood sums, the
bits/dim and FID statistics — and on a device without float64 that work runs on the host (CPU)
instead: the device computes the network in float32, the (small) outputs are copied over, and the
float64 results are the same as on the CPU. Deliberate float64 math is marked with
:func:`float64_math` (its inputs moved by :func:`to_float64`), so a test can fail every other
float64 allocation.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading

import torch

HOST = torch.device("cpu")
WITHOUT_FLOAT64 = {"mps"}  # device types whose kernels have no float64
_region = threading.local()


def cpu_name() -> str:
    """The host CPU's model name and count, e.g. ``"AMD EPYC, 2 CPUs"`` (Linux: /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        name = None
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


def supports_float64(device: torch.device | str) -> bool:
    return torch.device(device).type not in WITHOUT_FLOAT64


def float64_device(device: torch.device | str) -> torch.device:
    """Where float64 work for tensors on ``device`` runs: the device itself, or the host."""
    device = torch.device(device)
    return device if supports_float64(device) else HOST


@contextlib.contextmanager
def float64_math():
    """Marks deliberate float64 math, on ``float64_device`` of the data (see the module docstring)."""
    depth = getattr(_region, "depth", 0)
    _region.depth = depth + 1
    try:
        yield
    finally:
        _region.depth = depth


def in_float64_math() -> bool:
    return getattr(_region, "depth", 0) > 0


def to_float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float64: on its own device when that has float64, else copied to the host first."""
    with float64_math():
        return tensor.double() if supports_float64(tensor.device) else tensor.to(HOST).double()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → cuda, else mps (Apple GPU), else cpu. Asking for a device that is not there is
    a ValueError naming it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device (cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but no CUDA device is available")
    if device.type == "mps" and not mps_available():
        raise ValueError(f"--device {name} was asked for but no Apple GPU (MPS) is available")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r}: only cpu, cuda and mps are supported")
    return device


def model_device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    """Where the model's parameters live and the float dtype its inputs take (float64 for a float64
    model, else float32: bf16 and fp16 models take float32 inputs under autocast)."""
    p = next(model.parameters())
    return p.device, p.dtype if p.dtype == torch.float64 else torch.float32
