"""Element-wise dropout with a cheap mask on the CPU.

Semantics are the paper's: every activation is kept independently with probability 1 − p and
scaled by 1/(1 − p) (not the channel-wise ``Dropout2d`` of the PyTorch port). On the CPU,
``torch.nn.functional.dropout`` draws one Bernoulli variate per element (about 10 ns each); here
the mask comes from 16-bit slices of bulk 64-bit random words — four elements per draw — compared
with a threshold, so p is rounded to a multiple of 2⁻¹⁶. The mask is kept as bools (1 byte per
element) for the backward pass. Other devices use torch's dropout. Both draw from torch's default
generator, so ``torch.manual_seed`` makes a step reproducible.

Under ``torch.compile`` the CPU mask comes from the operator ``cpixelcnn::dropout_keep_mask``
(the same draws, tagged as seeded-random so the compiler neither repeats nor merges it, and
activation checkpointing replays it from the saved generator state): the compiler traces it
without a graph break and fuses the ``x · mask / (1 − p)`` around it. Left to itself the
compiler draws a Philox number per element in scalar C++ (about 17 ns each: a fifth of a compiled
CPU step at 1/40/5). The eager and compiled paths draw the same masks in the same order.

``backend`` takes the package's one vocabulary (:data:`cpixelcnn.ops.backend.BACKENDS`):
``"eager"`` is torch's dropout (the reference); ``"auto"`` the fastest path — the cheap mask on
CPU tensors, torch's fused dropout elsewhere. Dropout has no Triton kernel (torch's fused one is
already a single pass on a GPU), so ``"triton"`` takes that same fast path.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpixelcnn.ops.backend import check_backend

LEVELS = 1 << 16  # p resolution of the fast mask


def _threshold(p: float) -> int:
    # an int16 draw r is uniform on [-2¹⁵, 2¹⁵): P(r >= threshold) = 1 − round(p·2¹⁶)/2¹⁶
    return round(p * LEVELS) - LEVELS // 2


def _draws(numel: int, device) -> torch.Tensor:
    """``numel`` independent uniform int16 draws: 16-bit slices of bulk 64-bit random words."""
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)  # all 64 bits uniform
    return words.view(torch.int16)[:numel]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of ``shape``: each element True (kept) with probability 1 − round(p·2¹⁶)/2¹⁶, independently.

    For a 4-D shape (B, C, H, W) the draws go to the elements in channels-last order (B, H, W, C),
    the layout torch.compile gives activations on the CPU, so the compiled graph can take the same
    mask (from :func:`torch.ops.cpixelcnn.dropout_keep_mask`) without transposing it. The result is
    contiguous either way.
    """
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    draws = _draws(numel, device)
    if len(shape) != 4:
        return (draws >= _threshold(p)).view(shape)
    b, c, h, w = shape
    mask = torch.empty(shape, dtype=torch.bool, device=device)
    return torch.ge(draws.view(b, h, w, c).permute(0, 3, 1, 2), _threshold(p), out=mask)  # one pass: compare and transpose


# The mask as one operator, so torch.compile traces it (the in-place random_ above breaks the graph).
# It returns a 0/1 uint8 mask of ``shape`` (bytes, not bools: the compiler's generated code loads bools
# element by element) laid out channels last when asked (4-D activations: the layout the compiler
# gives them on the CPU, so no transposing copy is needed), drawn in memory order — for a 4-D mask
# exactly the values keep_mask gives. ``fresh`` is a new empty (0-element) tensor per call,
# never read: the compiler's common-subexpression pass spares only its own list of random ops and would
# otherwise merge two masks of one shape into one. (The activation itself is not passed: the compiler
# would materialise it in a fixed layout first.) Tagged nondeterministic_seeded: never recomputed by the
# partitioner, and replayed from the saved generator state inside checkpointed regions.
torch.library.define(
    "cpixelcnn::dropout_keep_mask",
    "(Tensor fresh, SymInt[] shape, bool channels_last, float p) -> Tensor",
    tags=(torch.Tag.nondeterministic_seeded,),
)


def _empty_mask(fresh: torch.Tensor, shape, channels_last: bool, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=fresh.device, memory_format=layout)


@torch.library.impl("cpixelcnn::dropout_keep_mask", "CompositeExplicitAutograd")
def _dropout_keep_mask(fresh: torch.Tensor, shape: list[int], channels_last: bool, p: float) -> torch.Tensor:
    mask = _empty_mask(fresh, shape, channels_last, torch.bool)
    in_memory_order = mask.permute(0, 2, 3, 1) if channels_last else mask
    torch.ge(_draws(mask.numel(), mask.device), _threshold(p), out=in_memory_order.view(-1))
    return mask.view(torch.uint8)  # 0/1 bytes: see _MaskedScale


@torch.library.register_fake("cpixelcnn::dropout_keep_mask")
def _(fresh, shape, channels_last, p):
    return _empty_mask(fresh, shape, channels_last)


def _traced_keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`keep_mask` for ``x`` inside torch.compile: the same draws, through the operator."""
    fresh = torch.empty(0, device=x.device)
    return torch.ops.cpixelcnn.dropout_keep_mask(fresh, list(x.shape), x.dim() == 4, p)


class _MaskedScale(torch.autograd.Function):
    # The mask multiplies as 0/1 bytes (uint8), not bools: the same values, but torch's CPU kernels
    # and the compiler's generated code convert bytes to floats in vector registers and bools
    # element by element (eager 1.6x, compiled code 6x slower with bools).
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        mask = mask.view(torch.uint8)
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
    if backend == "eager" or x.device.type != "cpu":
        return F.dropout(x, p, True)
    if torch.compiler.is_compiling():
        # traced: plain ops around the mask operator, so the compiler fuses the scaling into its neighbours
        return x * _traced_keep_mask(x, p) * (1.0 / (1.0 - p))
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
