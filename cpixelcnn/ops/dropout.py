"""Element-wise dropout with a cheap mask on the CPU.

Semantics are the paper's: every activation is kept independently with probability 1 − p and
scaled by 1/(1 − p) (not the channel-wise ``Dropout2d`` of the PyTorch port). On the CPU,
``torch.nn.functional.dropout`` draws one Bernoulli variate per element (about 10 ns each); here
the mask comes from 16-bit slices of bulk 64-bit random words — four elements per draw — compared
with a threshold, so p is rounded to a multiple of 2⁻¹⁶. The mask is kept as bools (1 byte per
element) for the backward pass. Other devices, and code under ``torch.compile``, use torch's
dropout (which the compiler fuses into its neighbours). Both draw from torch's
default generator, so ``torch.manual_seed`` makes a step reproducible.

``backend`` takes the package's one vocabulary (:data:`cpixelcnn.ops.backend.BACKENDS`):
``"eager"`` is torch's dropout (the reference); ``"auto"`` the fastest path — the cheap mask on
CPU tensors, torch's fused dropout elsewhere. Dropout has no Triton kernel (torch's fused one is
already a single pass on a GPU), so ``"triton"`` takes that same fast path.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpixelcnn.ops.backend import check_backend

LEVELS = 1 << 16  # p resolution of the fast mask


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of ``shape``: each element True (kept) with probability 1 − round(p·2¹⁶)/2¹⁶, independently."""
    numel = 1
    for s in shape:
        numel *= s
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)  # all 64 bits uniform
    threshold = round(p * LEVELS) - LEVELS // 2  # int16 r is uniform on [-2¹⁵, 2¹⁵): P(r >= threshold) = 1 − round(p·2¹⁶)/2¹⁶
    return (words.view(torch.int16)[:numel] >= threshold).view(shape)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x * mask * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None, None


def dropout(x: torch.Tensor, p: float, training: bool = True, backend: str = "auto") -> torch.Tensor:
    """Element-wise dropout of ``x`` (any shape). Identity when not training or p = 0."""
    check_backend(backend)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if backend == "eager" or x.device.type != "cpu" or torch.compiler.is_compiling():
        # under torch.compile the compiler draws and fuses the mask itself: the cheap mask's in-place
        # random_ would break the graph at every layer
        return F.dropout(x, p, True)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a module (no parameters: checkpoints are unaffected)."""

    def __init__(self, p: float = 0.5, backend: str = "auto"):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p, self.backend = p, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.backend)

    def extra_repr(self) -> str:
        return f"p={self.p}, backend={self.backend!r}"
