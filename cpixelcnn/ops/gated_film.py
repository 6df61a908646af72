"""The gated-resnet output with FiLM conditioning and the residual, one function for all cases.

    out = x + (γ_a · a + β_a) · σ(γ_b · b + β_b),   (a, b) = the two channel halves of h

- FiLM conditioning (Perez et al. 2018): γ and β from the class vector.
- additive conditioning (Conditional PixelCNN, van den Oord et al. 2016): γ = 1 (``gamma=None``).
- unconditional PixelCNN++: γ = 1, β = 0 (both None).

Every caller goes through :func:`gated_film`, so the fused Triton kernel replaces exactly one function.
"""

from __future__ import annotations

from typing import Optional

import torch

from cpixelcnn.ops.backend import register_op, resolve_backend


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


# -- Triton path: custom ops (opaque to torch.compile, with fake impls and registered autograd) --


def _result_dtype(x, h, gamma, beta) -> torch.dtype:
    dtype = torch.promote_types(x.dtype, h.dtype)
    for t in (gamma, beta):
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


@torch.library.custom_op("cpixelcnn::gated_film", mutates_args=())
def _gated_film_op(x: torch.Tensor, h: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor]) -> torch.Tensor:
    from cpixelcnn.kernels.gated_film import gated_film_forward

    return gated_film_forward(x, h, gamma, beta, _result_dtype(x, h, gamma, beta))


@_gated_film_op.register_fake
def _(x, h, gamma, beta):
    return x.new_empty(x.shape, dtype=_result_dtype(x, h, gamma, beta))


@torch.library.custom_op("cpixelcnn::gated_film_backward", mutates_args=())
def _gated_film_backward_op(
    grad: torch.Tensor, h: torch.Tensor, gamma: Optional[torch.Tensor], beta: Optional[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d(h), d(gamma), d(beta); an absent gamma or beta gets an empty (0,) gradient."""
    from cpixelcnn.kernels.gated_film import gated_film_backward

    dh, dgamma, dbeta = gated_film_backward(grad, h, gamma, beta, grad.dtype == torch.float64)
    return dh, _or_empty(dgamma, h), _or_empty(dbeta, h)


def _or_empty(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return t if t is not None else like.new_empty((0,))


@_gated_film_backward_op.register_fake
def _(grad, h, gamma, beta):
    return (
        torch.empty_like(h),
        (torch.empty_like(gamma) if gamma is not None else h.new_empty((0,))),
        (torch.empty_like(beta) if beta is not None else h.new_empty((0,))),
    )


def _gated_film_setup_context(ctx, inputs, output):
    x, h, gamma, beta = inputs
    ctx.save_for_backward(h, gamma, beta)
    ctx.x_dtype = x.dtype


def _gated_film_backward(ctx, grad_out):
    h, gamma, beta = ctx.saved_tensors
    dh, dgamma, dbeta = _gated_film_backward_op(grad_out.contiguous(), h, gamma, beta)
    return grad_out.to(ctx.x_dtype), dh, dgamma if gamma is not None else None, dbeta if beta is not None else None


_gated_film_op.register_autograd(_gated_film_backward, setup_context=_gated_film_setup_context)


def gated_film_triton(x: torch.Tensor, h: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None) -> torch.Tensor:
    """Fused-kernel version of :func:`gated_film_eager` (same arguments and result)."""
    return _gated_film_op(
        x.contiguous(), h.contiguous(), gamma.contiguous() if gamma is not None else None, beta.contiguous() if beta is not None else None
    )


def gated_film(
    x: torch.Tensor, h: torch.Tensor, gamma: torch.Tensor | None = None, beta: torch.Tensor | None = None, backend: str = "eager"
) -> torch.Tensor:
    """``x + (γ_a·a + β_a)·σ(γ_b·b + β_b)`` with (a, b) = h.chunk(2, dim=1).

    x: (B, F, H, W) residual input; h: (B, 2F, H, W) output of the block's last conv;
    gamma, beta: (B, 2F) per-sample, per-channel FiLM parameters ([γ_a | γ_b], [β_a | β_b]) or None.
    Returns (B, F, H, W).
    """
    _check(x, h, gamma, beta)
    if resolve_backend(backend, x.device) == "triton":
        return gated_film_triton(x, h, gamma, beta)
    return gated_film_eager(x, h, gamma, beta)


def _compare_triton_with_eager(device: torch.device) -> tuple[float, str]:
    """The fused kernel's forward and backward against the eager reference, in float64, for FiLM, additive and no conditioning."""
    g = torch.Generator().manual_seed(1)
    pairs = []
    for mode in ("film", "additive", "unconditional"):
        b, f, h, w = 2, 3, 5, 7
        new = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(device)  # noqa: E731
        x, hidden, weights = new(b, f, h, w), new(b, 2 * f, h, w), new(b, f, h, w)
        gamma = new(b, 2 * f) if mode == "film" else None
        beta = new(b, 2 * f) if mode != "unconditional" else None
        results = []
        for fn in (gated_film_eager, gated_film_triton):
            inputs = [t.clone().requires_grad_(True) if t is not None else None for t in (x, hidden, gamma, beta)]
            out = fn(*inputs)
            grads = torch.autograd.grad((out * weights).sum(), [t for t in inputs if t is not None])
            results.append((out, *grads))
        pairs += list(zip(results[1], results[0]))
    return max((a - b).abs().max().item() for a, b in pairs), "forward and backward, FiLM/additive/none, float64"


register_op(
    "gated_film",
    "cpixelcnn.kernels.gated_film",
    _compare_triton_with_eager,
    tolerance=1e-10,
    fuses="the gated-resnet activation + FiLM (or additive) conditioning + residual, forward and backward, d(γ, β) reduced in-kernel",
    checked="against the formula in `ops/gated_film.py` in float64: the forward and the four gradients (x, h, γ, β), FiLM, additive and "
    "unconditional, relative 1e-13 (values) and 1e-12 (gradients); bf16 and fp16; `opcheck`",
)
