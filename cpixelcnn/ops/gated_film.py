"""The gated-resnet output with FiLM conditioning and the residual, one function for all cases.

    out = x + (γ_a · a + β_a) · σ(γ_b · b + β_b),   (a, b) = the two channel halves of h

- FiLM conditioning (Perez et al. 2018): γ and β from the class vector.
- additive conditioning (Conditional PixelCNN, van den Oord et al. 2016): γ = 1 (``gamma=None``).
- unconditional PixelCNN++: γ = 1, β = 0 (both None).

Every caller goes through :func:`gated_film`, so the fused Triton kernel replaces exactly one function.
"""
from __future__ import annotations

import torch

from cpixelcnn.ops.backend import resolve_backend


def _check(x: torch.Tensor, h: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None) -> None:
    if x.dim() != 4 or h.dim() != 4:
        raise ValueError(f"x and h must be (B, F, H, W) and (B, 2F, H, W), got {tuple(x.shape)} and {tuple(h.shape)}")
    b, f, height, width = x.shape
    if tuple(h.shape) != (b, 2 * f, height, width):
        raise ValueError(f"h must have shape (B, 2F, H, W) = {(b, 2 * f, height, width)}, got {tuple(h.shape)}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t is not None and tuple(t.shape) != (b, 2 * f):
            raise ValueError(f"{name} must have shape (B, 2F) = {(b, 2 * f)}, got {tuple(t.shape)}")


def gated_film_eager(x: torch.Tensor, h: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Eager reference. x (B, F, H, W), h (B, 2F, H, W), gamma/beta (B, 2F) or None → (B, F, H, W)."""
    if gamma is not None:
        h = h * gamma[:, :, None, None]
    if beta is not None:
        h = h + beta[:, :, None, None]
    a, b = h.chunk(2, dim=1)
    return x + a * torch.sigmoid(b)


def gated_film(x: torch.Tensor, h: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None, backend: str = "eager") -> torch.Tensor:
    """``x + (γ_a·a + β_a)·σ(γ_b·b + β_b)`` with (a, b) = h.chunk(2, dim=1).

    x: (B, F, H, W) residual input; h: (B, 2F, H, W) output of the block's last conv;
    gamma, beta: (B, 2F) per-sample, per-channel FiLM parameters ([γ_a | γ_b], [β_a | β_b]) or None.
    Returns (B, F, H, W).
    """
    _check(x, h, gamma, beta)
    if resolve_backend(backend, x.device) == "triton":
        return gated_film_triton(x, h, gamma, beta)
    return gated_film_eager(x, h, gamma, beta)
