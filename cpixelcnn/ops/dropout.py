"""Element-wise dropout with a cheap mask on the CPU.

Semantics are the paper's: every activation is kept independently with probability 1 − p and
scaled by 1/(1 − p) (not the channel-wise ``Dropout2d`` of the PyTorch port). On the CPU,
``torch.nn.functional.dropout`` draws one Bernoulli variate per element (about 10 ns each); here
the mask comes from bulk 64-bit random words, each element taking as few of their bits as its
probability needs: one bit for p = 0.5 (64 elements per word), 2, 4 or 8 bits when p is a multiple
of 1/4, 1/16 or 1/256, otherwise 16 bits compared with a threshold, so p is rounded to a multiple
of 2⁻¹⁶. The mask is kept as 0/1 bytes (1 byte per element) for the backward pass. Other devices
use torch's dropout. Both draw from torch's default generator, so ``torch.manual_seed`` makes a
step reproducible.

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

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from cpixelcnn import gate
from cpixelcnn.ops.backend import check_backend

LEVELS = 1 << 16  # p resolution of the fast mask
FIELD_BITS = (1, 2, 4, 8)  # bits per element when p is a multiple of 2^-bits (else 16)


def _threshold(p: float) -> int:
    # an int16 draw r is uniform on [-2¹⁵, 2¹⁵): P(r >= threshold) = 1 − round(p·2¹⁶)/2¹⁶
    return round(p * LEVELS) - LEVELS // 2


def bits_per_element(p: float) -> int:
    """Random bits each element of a keep mask takes: the fewest b in (1, 2, 4, 8) for which p·2^b
    is whole (the keep probability is then exactly 1 − p; the default 0.5 takes one bit), else 16."""
    return next((bits for bits in FIELD_BITS if (p * (1 << bits)).is_integer()), 16)


def _random_words(count: int, device) -> torch.Tensor:
    return torch.empty(count, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)  # all 64 bits uniform


def _draws(numel: int, device) -> torch.Tensor:
    """``numel`` independent uniform int16 draws: 16-bit slices of bulk 64-bit random words."""
    return _random_words((numel + 3) // 4, device).view(torch.int16)[:numel]


_ROW_DTYPES = {1: torch.int64, 2: torch.int32, 4: torch.int16, 8: torch.uint8}  # 8 / bits bytes: one row of the table


@functools.lru_cache(maxsize=None)
def _field_flags(bits: int, threshold: int) -> bytearray:
    """For each byte value v (256 entries): the 0/1 keep flags of its 8/bits fields (field k: bits
    [k·bits, (k + 1)·bits) of v, kept when >= threshold). Plain bytes, so the cache never holds a
    tensor of some tracing mode."""
    fields = range(0, 8, bits)
    return bytearray(int((v >> k) & ((1 << bits) - 1) >= threshold) for v in range(256) for k in fields)


def _field_table(bits: int, threshold: int) -> torch.Tensor:
    """:func:`_field_flags` as a (256,) tensor, each entry the 8/bits flag bytes viewed as one integer."""
    return torch.frombuffer(_field_flags(bits, threshold), dtype=torch.uint8).view(_ROW_DTYPES[bits])


def _fill_in_draw_order(mask: torch.Tensor, p: float) -> torch.Tensor:
    """Fill ``mask`` (uint8, its dims in draw order, any strides) with a 0/1 keep mask; returns it.

    Element i of the draw order reads bits [b·i, b·(i + 1)) of a stream of uniform random bytes
    (b = :func:`bits_per_element`; within a byte from the low bits up) as an integer u, and is kept
    when u >= p·2^b — for b = 16, u is a signed int16 compared with :func:`_threshold`. For b ≤ 8
    each random byte becomes its 8/b flags in one table lookup (a gather of 8/b-byte rows).
    """
    n, bits = mask.numel(), bits_per_element(p)
    if bits == 16:
        torch.ge(_draws(n, mask.device).view(mask.shape), _threshold(p), out=mask.view(torch.bool))  # 0/1 bytes are valid bools
        return mask
    per_byte = 8 // bits
    stream = _random_words((n * bits + 63) // 64, mask.device).view(torch.uint8)[: -(-n // per_byte)].long()
    table = _field_table(bits, round(p * (1 << bits))).to(mask.device)
    if mask.is_contiguous() and n % per_byte == 0:  # the flags land in place
        torch.index_select(table, 0, stream, out=mask.view(-1).view(table.dtype))
    else:
        mask.copy_(table[stream].view(torch.uint8)[:n].view(mask.shape))
    return mask


def _in_draw_order(mask: torch.Tensor) -> torch.Tensor:
    """A view of ``mask`` with its dims in draw order: (B, H, W, C) for a 4-D (B, C, H, W) mask."""
    return mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of ``shape``: each element True (kept) with probability 1 − round(p·2¹⁶)/2¹⁶, independently.

    For a 4-D shape (B, C, H, W) the draws go to the elements in channels-last order (B, H, W, C),
    the layout torch.compile gives activations on the CPU, so the compiled graph can take the same
    mask (from :func:`torch.ops.cpixelcnn.dropout_keep_mask`) without transposing it. The result is
    contiguous either way.
    """
    shape = tuple(int(s) for s in shape)
    mask = torch.empty(shape, dtype=torch.uint8, device=device)
    _fill_in_draw_order(_in_draw_order(mask), p)  # the last pass writes in place, transposing
    return mask.view(torch.bool)


# The mask as one operator, so torch.compile traces it (the in-place random_ above breaks the graph).
# It returns a 0/1 mask of ``shape`` and ``dtype`` (a 1-byte type; the model asks for uint8 — bytes, not
# bools: the compiler's generated code loads bools element by element) laid out channels last when
# asked (4-D activations: the layout the compiler gives them on the CPU, so no transposing copy is
# needed), drawn in memory order — for a 4-D mask exactly the values keep_mask gives. The dtype is an
# argument, not implied, because the compiler's on-disk cache keys a compiled graph by its code, not
# by what its custom operators return: a graph cached when the mask was bool was reloaded for the
# uint8 mask and failed (torch 2.15 checks). ``fresh`` is a new empty (0-element) tensor per call,
# never read: the compiler's common-subexpression pass spares only its own list of random ops and would
# otherwise merge two masks of one shape into one. (The activation itself is not passed: the compiler
# would materialise it in a fixed layout first.) Tagged nondeterministic_seeded: never recomputed by the
# partitioner, and replayed from the saved generator state inside checkpointed regions.
torch.library.define(
    "cpixelcnn::dropout_keep_mask",
    "(Tensor fresh, SymInt[] shape, bool channels_last, float p, ScalarType dtype) -> Tensor",
    tags=(torch.Tag.nondeterministic_seeded,),
)


def _empty_mask(fresh: torch.Tensor, shape, channels_last: bool, dtype: torch.dtype) -> torch.Tensor:
    if dtype.itemsize != 1:
        raise ValueError(f"dropout_keep_mask: dtype must be a 1-byte type (uint8 or bool), got {dtype}")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=fresh.device, memory_format=layout)


@torch.library.impl("cpixelcnn::dropout_keep_mask", "CompositeExplicitAutograd")
def _dropout_keep_mask(fresh: torch.Tensor, shape: list[int], channels_last: bool, p: float, dtype: torch.dtype) -> torch.Tensor:
    mask = _empty_mask(fresh, shape, channels_last, dtype)
    _fill_in_draw_order(_in_draw_order(mask.view(torch.uint8)), p)  # channels last: in memory order
    return mask


@torch.library.register_fake("cpixelcnn::dropout_keep_mask")
def _(fresh, shape, channels_last, p, dtype):
    return _empty_mask(fresh, shape, channels_last, dtype)


def _traced_keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`keep_mask` for ``x`` inside torch.compile: the same draws, through the operator, as 0/1 bytes."""
    fresh = torch.empty(0, device=x.device)
    return torch.ops.cpixelcnn.dropout_keep_mask(fresh, list(x.shape), x.dim() == 4, p, torch.uint8)


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


def _compare_keep_rate(device: torch.device) -> tuple[float, str]:
    """The keep rate of a mask at p = 0.5 over 2^20 elements, off by at most 6 standard deviations."""
    n, p = 1 << 20, 0.5
    torch.manual_seed(0)
    rate = keep_mask((n,), p, device).double().mean().item()
    return abs(rate - (1 - p)), f"keep rate {rate:.5f} for p = {p} ({n} elements)"


gate.register_check(gate.Check("", "dropout keep rate", _compare_keep_rate, tolerance=6 * (0.5 * 0.5 / (1 << 20)) ** 0.5))
