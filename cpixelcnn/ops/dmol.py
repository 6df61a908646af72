"""Discretized logistic mixture (DMoL) likelihood: the exact eager reference and its dispatch.

Parameter layout (PixelCNN++, channel dimension of ``params``; K = number of mixtures):

- RGB  (10·K channels): ``[logits K | r: means K, log_scales K, coeffs K | g: … | b: …]``
- grey ( 3·K channels): ``[logits K | means K | log_scales K]``

Colour channels are autoregressive inside a pixel through ``tanh(coeffs)``::

    mean_g = mean_g + c_r · x_r
    mean_b = mean_b + c_g · x_r + c_b · x_g

where ``c_r, c_g, c_b`` are the coefficient slots stored under colours r, g, b.

The likelihood is exact: a value ``x`` on the 2^bits grid of [-1, 1] gets the logistic mass of
its bin ``[x - δ, x + δ]`` (δ = 1 / (2^bits - 1)), the lowest level takes the whole lower tail
and the highest the whole upper tail. Interior bins use

    log(σ(a) - σ(b)) = log σ(a) + log σ(-b) + log(1 - exp(-(a - b)))

with ``a - b = 2δ / s`` formed in log space, so nothing cancels and nothing is clipped (the
original code's ``1e-5`` mid-point shortcut is not used). Log-scales are clamped below at -7.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from cpixelcnn.dmol_layout import COEFF, LOG_SCALE, LOG_SCALE_MIN, MEAN, num_mixtures, params_per_mixture, roles_per_colour  # noqa: F401
from cpixelcnn.dmol_layout import LN2 as _LN2
from cpixelcnn.ops.backend import register_op, resolve_backend


class MixtureParams(NamedTuple):
    """DMoL parameters split by role. Shapes: logits (B, K, H, W); the rest (B, C, K, H, W)."""

    logits: torch.Tensor
    means: torch.Tensor
    log_scales: torch.Tensor  # already clamped at LOG_SCALE_MIN
    coeffs: torch.Tensor | None  # tanh applied; None for grey


def split_params(params: torch.Tensor, channels: int) -> MixtureParams:
    """Split raw params (B, n_out, H, W) into their roles (see MixtureParams)."""
    b, n, h, w = params.shape
    k = num_mixtures(channels, n)
    logits = params[:, :k]
    rest = params[:, k:].reshape(b, channels, roles_per_colour(channels), k, h, w)  # the layout of cpixelcnn/dmol_layout.py
    log_scales = torch.clamp(rest[:, :, LOG_SCALE], min=LOG_SCALE_MIN)
    coeffs = torch.tanh(rest[:, :, COEFF]) if channels == 3 else None
    return MixtureParams(logits, rest[:, :, MEAN], log_scales, coeffs)


def grid_levels(bits: int) -> int:
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 1 to 16, got {bits!r}")
    return 2**bits


def quantize_to_grid(x: torch.Tensor, bits: int, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Snap ``x`` in [-1, 1] to the 2^bits grid: returns (level index as x's dtype, grid value).

    With ``check`` (the default) a value outside [-1, 1] or further than 1 % of a bin from its
    level raises ValueError, since its likelihood would be for a different image than given.
    The check reads values back to the host, so inside torch.compile it is skipped.
    """
    levels = grid_levels(bits)
    scale = (levels - 1) / 2.0
    index = torch.round((x + 1.0) * scale)
    if check and not torch.compiler.is_compiling():
        bad_range = ~torch.isfinite(x) | (x < -1.0 - 1e-6) | (x > 1.0 + 1e-6)
        bad_grid = (x - (index / scale - 1.0)).abs() > 0.01 / scale
        out_range, off_grid = torch.stack([bad_range.any(), bad_grid.any()]).tolist()
        if out_range:
            raise ValueError("x has values outside [-1, 1] (or NaN/inf); the likelihood is defined on [-1, 1]")
        if off_grid:
            raise ValueError(
                f"x has values off the {bits}-bit grid of [-1, 1] (levels -1 + 2k/{levels - 1}); quantize the data first, e.g. x = uint8 / 127.5 - 1"
            )
    index = index.clamp(0, levels - 1)
    return index, index / scale - 1.0


def conditioned_means(mix: MixtureParams, x: torch.Tensor) -> torch.Tensor:
    """Per-colour means (B, C, K, H, W) after the linear dependence on earlier colours of x (B, C, 1, H, W)."""
    if mix.coeffs is None:
        return mix.means
    x_r = x[:, 0]  # (B, 1, H, W), broadcast over K
    x_g = x[:, 1]
    c = mix.coeffs
    m = mix.means
    mean_g = m[:, 1] + c[:, 0] * x_r
    mean_b = m[:, 2] + c[:, 1] * x_r + c[:, 2] * x_g
    return torch.stack([m[:, 0], mean_g, mean_b], dim=1)


def log1mexp(d: torch.Tensor, log_d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate everywhere, with finite gradients in every branch.

    ``log_d`` (= log d, known exactly by the caller) covers d so small that it underflows.
    """
    tiny = d < 1e-6
    small = d < _LN2
    d_mid = d.clamp(min=1e-6)
    d_big = d.clamp(min=_LN2)
    return torch.where(
        tiny,
        log_d - 0.5 * d,  # log(d) + log(1 - d/2 + …), error < d²/24
        torch.where(small, torch.log(-torch.expm1(-d_mid)), torch.log1p(-torch.exp(-d_big))),
    )


def bin_log_prob(x_grid: torch.Tensor, index: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Exact log-mass of the bin holding each grid value, per mixture component.

    x_grid, index: (B, C, 1, H, W) broadcast against means, log_scales: (B, C, K, H, W).
    Returns (B, C, K, H, W).
    """
    levels = grid_levels(bits)
    half_bin = 1.0 / (levels - 1)
    inv_scale = torch.exp(-log_scales)
    centred = x_grid - means
    upper = inv_scale * (centred + half_bin)  # a: standardised upper bin edge
    lower = inv_scale * (centred - half_bin)  # b: standardised lower bin edge
    log_cdf_upper = F.logsigmoid(upper)  # lowest level: the whole lower tail
    log_sf_lower = F.logsigmoid(-lower)  # highest level: the whole upper tail
    log_width = math.log(2.0 * half_bin) - log_scales  # log(a - b), exact
    interior = log_cdf_upper + log_sf_lower + log1mexp(torch.exp(log_width), log_width)
    return torch.where(index <= 0, log_cdf_upper, torch.where(index >= levels - 1, log_sf_lower, interior))


def _check_pair(x: torch.Tensor, params: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(params, torch.Tensor):
        raise TypeError("x and params must be torch tensors")
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    if params.dim() != 4:
        raise ValueError(f"params must have shape (B, n_out, H, W), got {tuple(params.shape)}")
    if not x.is_floating_point() or not params.is_floating_point():
        raise TypeError(f"x and params must be floating point, got {x.dtype} and {params.dtype}")
    params_per_mixture(x.shape[1])
    if params.shape[0] != x.shape[0] or params.shape[2:] != x.shape[2:]:
        raise ValueError(f"params {tuple(params.shape)} do not match x {tuple(x.shape)}: batch and H, W must agree")
    num_mixtures(x.shape[1], params.shape[1])


def _compute_dtype(params: torch.Tensor) -> torch.dtype:
    return torch.float64 if params.dtype == torch.float64 else torch.float32


def dmol_log_prob_eager(x: torch.Tensor, params: torch.Tensor, bits: int = 8, per_pixel: bool = False, check: bool = True) -> torch.Tensor:
    """Eager reference. x (B, C, H, W) on the grid, params (B, n_out, H, W).

    Returns log p(x) in nats, (B,) or (B, H, W) with ``per_pixel``; computed in float32
    (float64 when params are float64). ``check=False`` skips the grid check of x (a host sync).
    """
    _check_pair(x, params)
    dtype = _compute_dtype(params)
    params = params.to(dtype)
    index, x_grid = quantize_to_grid(x.to(dtype), bits, check=check)
    mix = split_params(params, x.shape[1])
    means = conditioned_means(mix, x_grid.unsqueeze(2))
    per_component = bin_log_prob(x_grid.unsqueeze(2), index.unsqueeze(2), means, mix.log_scales, bits).sum(1)
    per_pixel_lp = torch.logsumexp(per_component + torch.log_softmax(mix.logits, dim=1), dim=1)
    return per_pixel_lp if per_pixel else per_pixel_lp.sum(dim=(1, 2))


# -- Triton path: custom ops (opaque to torch.compile, with fake impls and registered autograd) --


@torch.library.custom_op("cpixelcnn::dmol_log_prob_pixels", mutates_args=())
def _dmol_pixels_op(x: torch.Tensor, params: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel log p and the two log-sum-exps the backward needs, each (B, H, W)."""
    from cpixelcnn.kernels.dmol import dmol_forward

    return dmol_forward(x, params, bits)


@_dmol_pixels_op.register_fake
def _(x, params, bits):
    b, _, h, w = x.shape
    out = params.new_empty((b, h, w), dtype=_compute_dtype(params))
    return out, torch.empty_like(out), torch.empty_like(out)


@torch.library.custom_op("cpixelcnn::dmol_log_prob_pixels_backward", mutates_args=())
def _dmol_pixels_backward_op(
    x: torch.Tensor, params: torch.Tensor, grad: torch.Tensor, lse_mix: torch.Tensor, lse_logit: torch.Tensor, bits: int
) -> torch.Tensor:
    from cpixelcnn.kernels.dmol import dmol_backward

    return dmol_backward(x, params, grad, lse_mix, lse_logit, bits)


@_dmol_pixels_backward_op.register_fake
def _(x, params, grad, lse_mix, lse_logit, bits):
    return torch.empty_like(params)


def _dmol_setup_context(ctx, inputs, output):
    x, params, bits = inputs
    _, lse_mix, lse_logit = output
    ctx.save_for_backward(x, params, lse_mix, lse_logit)
    ctx.bits = bits


def _dmol_backward(ctx, grad_out, _grad_lse_mix, _grad_lse_logit):
    x, params, lse_mix, lse_logit = ctx.saved_tensors
    dparams = _dmol_pixels_backward_op(x, params, grad_out.to(lse_mix.dtype), lse_mix, lse_logit, ctx.bits)
    return None, dparams, None


_dmol_pixels_op.register_autograd(_dmol_backward, setup_context=_dmol_setup_context)


def dmol_log_prob_triton(x: torch.Tensor, params: torch.Tensor, bits: int = 8, per_pixel: bool = False, check: bool = True) -> torch.Tensor:
    """Fused-kernel version of :func:`dmol_log_prob_eager` (same arguments and result)."""
    _check_pair(x, params)
    dtype = _compute_dtype(params)
    _, x_grid = quantize_to_grid(x.to(dtype), bits, check=check)
    per_pixel_lp = _dmol_pixels_op(x_grid.contiguous(), params.contiguous(), bits)[0]
    return per_pixel_lp if per_pixel else per_pixel_lp.sum(dim=(1, 2))


def dmol_log_prob(
    x: torch.Tensor, params: torch.Tensor, bits: int = 8, backend: str = "eager", per_pixel: bool = False, check: bool = True
) -> torch.Tensor:
    """Exact log-likelihood in nats of images under a discretized logistic mixture.

    x: (B, C, H, W), C in {1, 3}, values on the 2^bits grid of [-1, 1] (``uint8 / 127.5 - 1``
    for 8 bits); values off the grid or outside [-1, 1] raise ValueError.
    params: (B, n_out, H, W) in the PixelCNN++ layout (module docstring); float32, bf16 and
    fp16 are computed in float32, float64 in float64.
    Returns (B,) — or (B, H, W) with ``per_pixel=True``.
    ``check=False`` skips the grid check of x (one host sync) for data already known to be valid.
    """
    if resolve_backend(backend, params.device if isinstance(params, torch.Tensor) else None) == "triton":
        return dmol_log_prob_triton(x, params, bits, per_pixel, check)
    return dmol_log_prob_eager(x, params, bits, per_pixel, check)


def bits_per_dim(log_prob: torch.Tensor, shape) -> torch.Tensor:
    """Bits per dimension from log-likelihoods in nats.

    ``shape`` is an image's (C, H, W) or a batch's (B, C, H, W); the dimension count is C·H·W.
    """
    dims = tuple(shape)[-3:]
    if len(dims) != 3 or any(int(d) < 1 for d in dims):
        raise ValueError(f"shape must end in (C, H, W) with positive sizes, got {tuple(shape)}")
    return -log_prob / (math.prod(int(d) for d in dims) * math.log(2.0))


def _compare_triton_with_eager(device: torch.device) -> tuple[float, str]:
    """The fused kernels' forward and backward against the eager reference, in float64, grey and RGB."""
    g = torch.Generator().manual_seed(0)
    pairs = []
    for channels, mixtures, (b, h, w) in ((3, 5, (2, 5, 7)), (1, 3, (1, 4, 3))):
        levels = torch.randint(0, 256, (b, channels, h, w), generator=g)
        x = (levels.double() / 127.5 - 1.0).to(device)
        params = (2 * torch.randn(b, mixtures * params_per_mixture(channels), h, w, generator=g, dtype=torch.float64)).to(device)
        weights = torch.randn(b, h, w, generator=g, dtype=torch.float64).to(device)
        results = []
        for fn in (dmol_log_prob_eager, dmol_log_prob_triton):
            p = params.clone().requires_grad_(True)
            out = fn(x, p, 8, per_pixel=True)
            results.append((out, torch.autograd.grad((out * weights).sum(), p)[0]))
        pairs += list(zip(results[1], results[0]))
    return max((a - b).abs().max().item() for a, b in pairs), "forward and backward, grey and RGB, float64"


register_op(
    "dmol",
    "cpixelcnn.kernels.dmol",
    _compare_triton_with_eager,
    tolerance=1e-9,
    fuses="the DMoL log-likelihood, forward and backward: one pass over the parameters, no (B, K, H, W) intermediates",
    checked="against `dmol_log_prob_eager` in float64: values and gradients, fuzzed shapes (1 and 3 channels, odd sizes, batch 1, "
    "1 to 8 bits), relative 1e-10 (values) and 1e-9 (gradients); float32, bf16 and fp16 parameters within 2e-5 relative; `torch.library.opcheck`",
)
