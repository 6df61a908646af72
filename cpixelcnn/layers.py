"""PixelCNN++ building blocks (Salimans et al. 2017), NCHW throughout.

Causality comes from padding, not masks: a *down-shifted* conv pads only above (and evenly
left/right), so its output at row i sees input rows ≤ i; a *down-right-shifted* conv pads above
and to the left, so it sees rows ≤ i and, in row i, columns ≤ j. Shifting the output by one row
(or column) turns "≤" into "<". Layer shapes and padding follow the public PyTorch port
(pclucas14/pixel-cnn-pp) so its checkpoints map onto these layers one to one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from cpixelcnn.ops.dropout import Dropout
from cpixelcnn.ops.gated_film import gated_film


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: (B, F, H, W) → (B, 2F, H, W)."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down; the first row becomes zero. (B, F, H, W) → same."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every column one right; the first column becomes zero. (B, F, H, W) → same."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def maybe_weight_norm(module: nn.Module, enabled: bool, dim: int = 0) -> nn.Module:
    """Weight normalisation (w = g · v / ‖v‖) over every axis but ``dim``, when enabled.

    torch makes g of a transposed convolution (dim=1, shape (1, F, 1, 1)) with strides (1, 1, 1, 1);
    its gradient comes with the standard ones, and DDP, which lays each gradient bucket out like
    its parameter, copied (and warned) every step. g gets the standard strides here."""
    if not enabled:
        return module
    module = _weight_norm(module, dim=dim)
    for original in module.parametrizations.weight.original0, module.parametrizations.weight.original1:
        if original.stride() != torch.empty(original.shape).stride():
            original.data = original.data.clone(memory_format=torch.contiguous_format)
    return module


class DownShiftedConv2d(nn.Module):
    """Output (i, j) sees input rows ≤ i (rows < i with ``shift_output_down``), all columns within
    the kernel's width. Stride 2 halves H and W (rounding up). (B, Cin, H, W) → (B, Cout, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 3), stride=1, shift_output_down: bool = False, weight_norm: bool = True):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.shift_output_down = shift_output_down
        self.conv = maybe_weight_norm(nn.Conv2d(in_channels, out_channels, self.kernel_size, stride), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        x = self.conv(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))
        return down_shift(x) if self.shift_output_down else x


class DownRightShiftedConv2d(nn.Module):
    """Output (i, j) sees input rows ≤ i and columns ≤ j (columns < j with ``shift_output_right``).
    (B, Cin, H, W) → (B, Cout, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 2), stride=1, shift_output_right: bool = False, weight_norm: bool = True):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.shift_output_right = shift_output_right
        self.conv = maybe_weight_norm(nn.Conv2d(in_channels, out_channels, self.kernel_size, stride), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        x = self.conv(F.pad(x, (kw - 1, 0, kh - 1, 0)))
        return right_shift(x) if self.shift_output_right else x


class _ShiftedConvTranspose2d(nn.Module):
    """Stride-2 transposed conv, cropped so the output keeps its stream's receptive field:
    (B, Cin, H, W) → (B, Cout, 2H, 2W). ``crop_left`` columns are dropped on the left."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int, weight_norm: bool, crop_left: int):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.crop_left = crop_left
        # weight (Cin, Cout, kh, kw): normalise per output channel (dim 1)
        self.deconv = maybe_weight_norm(nn.ConvTranspose2d(in_channels, out_channels, self.kernel_size, stride, output_padding=1), weight_norm, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        y = self.deconv(x)
        height, width = y.shape[2] - kh + 1, y.shape[3] - kw + 1
        return y[:, :, :height, self.crop_left : self.crop_left + width]


class DownShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Up-sampling for the u stream (rows above): crops evenly left and right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 3), stride=2, weight_norm: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, weight_norm, crop_left=(kernel_size[1] - 1) // 2)


class DownRightShiftedConvTranspose2d(_ShiftedConvTranspose2d):
    """Up-sampling for the ul stream (above and left): crops only on the right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(2, 2), stride=2, weight_norm: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, weight_norm, crop_left=0)


class NiN(nn.Module):
    """Network-in-network: a 1×1 convolution. (B, Cin, H, W) → (B, Cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, weight_norm: bool = True):
        super().__init__()
        self.conv = maybe_weight_norm(nn.Conv2d(in_channels, out_channels, 1), weight_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1×1 conv, not a Linear over channels-last pixels (the port's way): compiled on an AMD
        # EPYC, oneDNN runs it forward and backward ~2× faster than MKL's matrix product (MKL takes
        # its AVX2 path on non-Intel CPUs), which made a compiled training step ~1.05× faster.
        return self.conv(x)


class GatedResnet(nn.Module):
    """PixelCNN++ gated residual block with optional skip input and class conditioning.

        h   = conv_in(concat_elu(x)) [+ nin_skip(concat_elu(skip))]
        h   = conv_out(dropout(concat_elu(h)))                    # (B, 2F, H, W)
        out = x + (γ_a·a + β_a)·σ(γ_b·b + β_b),  (a, b) = halves of h

    ``skip_inputs`` is how many F-channel maps the skip input stacks (0: none).
    ``condition``: None, ``"additive"`` (class bias β, γ = 1) or ``"film"`` (γ and β); the head
    reading the class vector starts at zero so the block is label-independent at init.
    """

    def __init__(
        self,
        nr_filters: int,
        conv: type,
        skip_inputs: int = 0,
        dropout: float = 0.5,
        condition: str | None = None,
        cond_dim: int = 0,
        weight_norm: bool = True,
    ):
        super().__init__()
        f = nr_filters
        self.conv_in = conv(2 * f, f, weight_norm=weight_norm)
        self.nin_skip = NiN(2 * skip_inputs * f, f, weight_norm=weight_norm) if skip_inputs else None
        self.dropout = Dropout(dropout)  # element-wise, as in the paper; a cheap mask on the CPU
        self.conv_out = conv(2 * f, 2 * f, weight_norm=weight_norm)
        self.condition = condition
        self.cond_head = None
        if condition is not None:
            out = 4 * f if condition == "film" else 2 * f  # film: [Δγ_a | Δγ_b | β_a | β_b]
            self.cond_head = nn.Linear(cond_dim, out, bias=condition == "film")
            nn.init.zeros_(self.cond_head.weight)  # neutral init: γ = 1, β = 0 exactly
            if self.cond_head.bias is not None:
                nn.init.zeros_(self.cond_head.bias)

    def film_params(self, cond: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(γ, β), each (B, 2F) or None, from the class vector cond (B, cond_dim)."""
        if self.cond_head is None or cond is None:
            return None, None
        out = self.cond_head(cond)
        if self.condition == "additive":
            return None, out
        delta_gamma, beta = out.chunk(2, dim=1)
        return 1.0 + delta_gamma, beta

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, cond: torch.Tensor | None = None, backend: str = "eager") -> torch.Tensor:
        h = self.conv_in(concat_elu(x))
        if skip is not None:
            h = h + self.nin_skip(concat_elu(skip))
        h = self.conv_out(self.dropout(concat_elu(h)))
        gamma, beta = self.film_params(cond)
        return gated_film(x, h, gamma, beta, backend=backend)
