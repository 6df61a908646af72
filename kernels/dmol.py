"""Triton kernels: fused discretized-logistic-mixture log-likelihood, forward and backward.

One program handles BLOCK pixels (flattened over batch × H × W, so every parameter channel is
read coalesced). The forward reads each parameter and pixel value once, runs two online
log-sum-exps over the K components (mixture and logit normaliser) and writes per-pixel
log p plus those two log-sum-exps — all the backward needs. The backward recomputes each
component and writes d(params) directly: no (B, K, H, W) intermediates in global memory.

Same exact formula as the eager reference (cpixelcnn/ops/dmol.py): edge bins take the tails,
interior bins ``log σ(a) + log σ(-b) + log(1 - exp(-(a - b)))`` with ``a - b`` formed in log
space, log-scales clamped at LOG_SCALE_MIN (-7; the layout is cpixelcnn/dmol_layout.py). Math is float32 (float64 when params are float64).
``log1p``/``expm1`` are written with the Goldberg/Kahan tricks on ``log``/``exp``, which are
accurate to a few ulps and run in the interpreter as well as on the GPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from cpixelcnn import dmol_layout
from cpixelcnn.dmol_layout import num_mixtures
from cpixelcnn.kernels._spec import NUM_STAGES, PARAM_DTYPES, Specialization, pointer

# the layout's constants, as compile-time constants of the kernels
LOG_SCALE_MIN = tl.constexpr(dmol_layout.LOG_SCALE_MIN)
LN2 = tl.constexpr(dmol_layout.LN2)
MEAN = tl.constexpr(dmol_layout.MEAN)
LOG_SCALE = tl.constexpr(dmol_layout.LOG_SCALE)
COEFF = tl.constexpr(dmol_layout.COEFF)
ROLES_RGB = tl.constexpr(dmol_layout.roles_per_colour(3))
ROLES_GREY = tl.constexpr(dmol_layout.roles_per_colour(1))


@triton.jit
def _slot(colour, role, k, K, C: tl.constexpr):
    """dmol_layout.slot: the channel of component k's ``role`` for ``colour``."""
    return (1 + colour * (ROLES_RGB if C == 3 else ROLES_GREY) + role) * K + k


@triton.jit
def _log1p(y):
    """log(1 + y), accurate for small |y| (Goldberg): log(u) · y / (u - 1) with u = 1 + y."""
    u = 1.0 + y
    denom = tl.where(u == 1.0, 1.0, u - 1.0)
    return tl.where(u == 1.0, y, tl.log(u) * (y / denom))


@triton.jit
def _expm1(z):
    """exp(z) - 1, accurate for small |z| (Kahan): (u - 1) · z / log(u) with u = exp(z)."""
    u = tl.exp(z)
    log_u = tl.log(u)
    safe = tl.where((u == 1.0) | (log_u == 0.0), 1.0, log_u)
    return tl.where(u == 1.0, z, tl.where(u - 1.0 == -1.0, -1.0, (u - 1.0) * (z / safe)))


@triton.jit
def _log_sigmoid(z):
    return tl.minimum(z, 0.0) - _log1p(tl.exp(-tl.abs(z)))


@triton.jit
def _sigmoid(z):
    e = tl.exp(-tl.abs(z))
    return tl.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def _tanh(z):
    t = -_expm1(-2.0 * tl.abs(z))  # 1 - exp(-2|z|), accurate near 0
    r = t / (2.0 - t)
    return tl.where(z >= 0, r, -r)


@triton.jit
def _log1mexp(d, log_d):
    """log(1 - exp(-d)) for d > 0; ``log_d`` covers d that underflows."""
    d_mid = tl.maximum(d, 1e-6)
    d_big = tl.maximum(d, LN2)
    small = tl.log(-_expm1(-d_mid))
    big = _log1p(-tl.exp(-d_big))
    return tl.where(d < 1e-6, log_d - 0.5 * d, tl.where(d < LN2, small, big))


@triton.jit
def _colour_terms(x_c, mean, raw_log_scale, half_bin, log_bin_width, is_low, is_high):
    """Bin log-mass of one colour for one component, and its partials w.r.t. mean and log-scale."""
    log_scale = tl.maximum(raw_log_scale, LOG_SCALE_MIN)
    inv_scale = tl.exp(-log_scale)
    centred = x_c - mean
    upper = inv_scale * (centred + half_bin)
    lower = inv_scale * (centred - half_bin)
    log_cdf_upper = _log_sigmoid(upper)
    log_sf_lower = _log_sigmoid(-lower)
    log_d = log_bin_width - log_scale
    d = tl.exp(log_d)
    interior = log_cdf_upper + log_sf_lower + _log1mexp(d, log_d)
    value = tl.where(is_low, log_cdf_upper, tl.where(is_high, log_sf_lower, interior))

    sf_upper = _sigmoid(-upper)  # d log σ(a) / da
    cdf_lower = _sigmoid(lower)  # -d log σ(-b) / db
    d_gap = tl.where(d < 1e-6, -1.0 + 0.5 * d, -d / _expm1(tl.maximum(d, 1e-30)))  # d log1mexp / d log_scale
    d_mean = tl.where(is_low, -inv_scale * sf_upper, tl.where(is_high, inv_scale * cdf_lower, inv_scale * (cdf_lower - sf_upper)))
    d_log_scale = tl.where(is_low, -upper * sf_upper, tl.where(is_high, lower * cdf_lower, -upper * sf_upper + lower * cdf_lower + d_gap))
    d_log_scale = tl.where(raw_log_scale >= LOG_SCALE_MIN, d_log_scale, 0.0)  # the clamp passes no gradient below it
    return value, d_mean, d_log_scale


@triton.jit
def _load(ptr, mask, F64: tl.constexpr):
    v = tl.load(ptr, mask=mask, other=0.0)
    return v.to(tl.float64) if F64 else v.to(tl.float32)


@triton.jit
def _pixels(x_ptr, p_ptr, n_pixels, hw, K, C: tl.constexpr, F64: tl.constexpr, BLOCK: tl.constexpr):
    """This program's pixels: offsets, mask, base offset of their params, and their colour values."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_pixels
    b = offs // hw
    s = offs % hw
    x_base = x_ptr + b * (C * hw) + s
    n_params = _slot(C, 0, 0, K, C)  # one past the last colour's parameters
    x0 = _load(x_base, mask, F64)
    x1 = x0
    x2 = x0
    if C == 3:
        x1 = _load(x_base + hw, mask, F64)
        x2 = _load(x_base + 2 * hw, mask, F64)
    return offs, mask, b * (n_params * hw) + s, x0, x1, x2


@triton.jit
def _component(p_base, k, K, hw, mask, x0, x1, x2, half_bin, log_bin_width, C: tl.constexpr, F64: tl.constexpr):
    """Component k: its logit, summed colour log-mass, and the partials the backward needs
    (d/d mean and d/d log-scale per colour, and the tanh'd coefficients)."""
    logit = _load(p_base + k * hw, mask, F64)
    comp, dm0, dls0 = _colour_terms(
        x0,
        _load(p_base + _slot(0, MEAN, k, K, C) * hw, mask, F64),
        _load(p_base + _slot(0, LOG_SCALE, k, K, C) * hw, mask, F64),
        half_bin,
        log_bin_width,
        x0 < -1.0 + half_bin,
        x0 > 1.0 - half_bin,
    )
    dm1 = comp * 0.0
    dls1 = dm1
    dm2 = dm1
    dls2 = dm1
    c_r = dm1
    c_g = dm1
    c_b = dm1
    if C == 3:
        c_r = _tanh(_load(p_base + _slot(0, COEFF, k, K, C) * hw, mask, F64))
        c_g = _tanh(_load(p_base + _slot(1, COEFF, k, K, C) * hw, mask, F64))
        c_b = _tanh(_load(p_base + _slot(2, COEFF, k, K, C) * hw, mask, F64))
        mean_g = _load(p_base + _slot(1, MEAN, k, K, C) * hw, mask, F64) + c_r * x0
        mean_b = _load(p_base + _slot(2, MEAN, k, K, C) * hw, mask, F64) + c_g * x0 + c_b * x1
        v1, dm1, dls1 = _colour_terms(
            x1,
            mean_g,
            _load(p_base + _slot(1, LOG_SCALE, k, K, C) * hw, mask, F64),
            half_bin,
            log_bin_width,
            x1 < -1.0 + half_bin,
            x1 > 1.0 - half_bin,
        )
        v2, dm2, dls2 = _colour_terms(
            x2,
            mean_b,
            _load(p_base + _slot(2, LOG_SCALE, k, K, C) * hw, mask, F64),
            half_bin,
            log_bin_width,
            x2 < -1.0 + half_bin,
            x2 > 1.0 - half_bin,
        )
        comp += v1 + v2
    return logit, comp, dm0, dls0, dm1, dls1, dm2, dls2, c_r, c_g, c_b


@triton.jit
def dmol_fwd_kernel(
    x_ptr,
    p_ptr,
    out_ptr,
    lse_mix_ptr,
    lse_logit_ptr,
    n_pixels,
    hw,
    K,
    half_bin,
    log_bin_width,
    C: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, mask, p_off, x0, x1, x2 = _pixels(x_ptr, p_ptr, n_pixels, hw, K, C, F64, BLOCK)
    m_mix = tl.full([BLOCK], float("-inf"), x0.dtype)
    s_mix = tl.zeros([BLOCK], x0.dtype)
    m_logit = tl.full([BLOCK], float("-inf"), x0.dtype)
    s_logit = tl.zeros([BLOCK], x0.dtype)
    for k in range(K):  # two online log-sum-exps: mixture and logit normaliser
        terms = _component(p_ptr + p_off, k, K, hw, mask, x0, x1, x2, half_bin, log_bin_width, C, F64)
        logit = terms[0]
        a = logit + terms[1]
        new_m = tl.maximum(m_mix, a)
        s_mix = s_mix * tl.where(m_mix == float("-inf"), 0.0, tl.exp(m_mix - new_m)) + tl.exp(a - new_m)
        m_mix = new_m
        new_m = tl.maximum(m_logit, logit)
        s_logit = s_logit * tl.where(m_logit == float("-inf"), 0.0, tl.exp(m_logit - new_m)) + tl.exp(logit - new_m)
        m_logit = new_m
    lse_mix = m_mix + tl.log(s_mix)
    lse_logit = m_logit + tl.log(s_logit)
    tl.store(out_ptr + offs, lse_mix - lse_logit, mask=mask)
    tl.store(lse_mix_ptr + offs, lse_mix, mask=mask)
    tl.store(lse_logit_ptr + offs, lse_logit, mask=mask)


@triton.jit
def dmol_bwd_kernel(
    x_ptr,
    p_ptr,
    grad_ptr,
    lse_mix_ptr,
    lse_logit_ptr,
    dp_ptr,
    n_pixels,
    hw,
    K,
    half_bin,
    log_bin_width,
    C: tl.constexpr,
    F64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs, mask, p_off, x0, x1, x2 = _pixels(x_ptr, p_ptr, n_pixels, hw, K, C, F64, BLOCK)
    dp_base = dp_ptr + p_off
    out_ty = dp_ptr.dtype.element_ty
    g = _load(grad_ptr + offs, mask, F64)
    lse_mix = _load(lse_mix_ptr + offs, mask, F64)
    lse_logit = _load(lse_logit_ptr + offs, mask, F64)
    for k in range(K):
        logit, comp, dm0, dls0, dm1, dls1, dm2, dls2, c_r, c_g, c_b = _component(
            p_ptr + p_off, k, K, hw, mask, x0, x1, x2, half_bin, log_bin_width, C, F64
        )
        responsibility = tl.exp(logit + comp - lse_mix)
        gr = g * responsibility
        tl.store(dp_base + k * hw, (g * (responsibility - tl.exp(logit - lse_logit))).to(out_ty), mask=mask)
        tl.store(dp_base + _slot(0, MEAN, k, K, C) * hw, (gr * dm0).to(out_ty), mask=mask)
        tl.store(dp_base + _slot(0, LOG_SCALE, k, K, C) * hw, (gr * dls0).to(out_ty), mask=mask)
        if C == 3:
            tl.store(dp_base + _slot(0, COEFF, k, K, C) * hw, (gr * dm1 * x0 * (1.0 - c_r * c_r)).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(1, MEAN, k, K, C) * hw, (gr * dm1).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(1, LOG_SCALE, k, K, C) * hw, (gr * dls1).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(1, COEFF, k, K, C) * hw, (gr * dm2 * x0 * (1.0 - c_g * c_g)).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(2, MEAN, k, K, C) * hw, (gr * dm2).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(2, LOG_SCALE, k, K, C) * hw, (gr * dls2).to(out_ty), mask=mask)
            tl.store(dp_base + _slot(2, COEFF, k, K, C) * hw, (gr * dm2 * x1 * (1.0 - c_b * c_b)).to(out_ty), mask=mask)


def _launch_args(x: torch.Tensor, params: torch.Tensor, bits: int):
    b, c, h, w = x.shape
    k = num_mixtures(c, params.shape[1])
    half_bin = 1.0 / (2**bits - 1)
    return b * h * w, h * w, k, half_bin, math.log(2.0 * half_bin), c, params.dtype == torch.float64


# One pixel per thread. 1024 pixels over 4 warps (8 per thread) needed 255 registers and spilled
# on sm_80/sm_90; one per thread stays far under 128 registers with no spills
# (benchmarks/results/kernel-resources.json). The K loop keeps per-pixel state small.
BLOCK = 256
NUM_WARPS = 8


def dmol_forward(x: torch.Tensor, params: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, C, H, W) snapped to the grid, in the compute dtype; params (B, n_out, H, W) contiguous.
    Returns per-pixel log p, log-sum-exp of the mixture and of the logits, each (B, H, W)."""
    n, hw, k, half_bin, log_width, c, f64 = _launch_args(x, params, bits)
    out_dtype = torch.float64 if f64 else torch.float32
    b, _, h, w = x.shape
    out, lse_mix, lse_logit = (torch.empty(b, h, w, device=x.device, dtype=out_dtype) for _ in range(3))
    dmol_fwd_kernel[(triton.cdiv(n, BLOCK),)](
        x, params, out, lse_mix, lse_logit, n, hw, k, half_bin, log_width, C=c, F64=f64, BLOCK=BLOCK, num_warps=NUM_WARPS, num_stages=NUM_STAGES
    )
    return out, lse_mix, lse_logit


def dmol_backward(
    x: torch.Tensor, params: torch.Tensor, grad: torch.Tensor, lse_mix: torch.Tensor, lse_logit: torch.Tensor, bits: int
) -> torch.Tensor:
    """d(sum(grad · log p)) / d(params): (B, n_out, H, W) in params' dtype."""
    n, hw, k, half_bin, log_width, c, f64 = _launch_args(x, params, bits)
    dparams = torch.empty_like(params)
    dmol_bwd_kernel[(triton.cdiv(n, BLOCK),)](
        x,
        params,
        grad.contiguous(),
        lse_mix,
        lse_logit,
        dparams,
        n,
        hw,
        k,
        half_bin,
        log_width,
        C=c,
        F64=f64,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return dparams


def specializations(dtypes=PARAM_DTYPES):
    """Every launch the two functions above can make: forward and backward × grey/RGB × params
    dtype (x, the outputs and the gradient are in the compute dtype: float64 for float64 params,
    else float32)."""
    scalars = {"n_pixels": "i32", "hw": "i32", "K": "i32", "half_bin": "fp32", "log_bin_width": "fp32"}
    for dtype in dtypes:
        compute = pointer(torch.float64 if dtype == torch.float64 else torch.float32)
        params = pointer(dtype)
        for channels in (1, 3):
            constexprs = {"C": channels, "F64": dtype == torch.float64, "BLOCK": BLOCK}
            flags = {name: "constexpr" for name in constexprs}
            fwd = {"x_ptr": compute, "p_ptr": params, "out_ptr": compute, "lse_mix_ptr": compute, "lse_logit_ptr": compute, **scalars, **flags}
            bwd = {
                "x_ptr": compute,
                "p_ptr": params,
                "grad_ptr": compute,
                "lse_mix_ptr": compute,
                "lse_logit_ptr": compute,
                "dp_ptr": params,
                **scalars,
                **flags,
            }
            yield Specialization(dmol_fwd_kernel, fwd, constexprs, NUM_WARPS, NUM_STAGES, dtype)
            yield Specialization(dmol_bwd_kernel, bwd, constexprs, NUM_WARPS, NUM_STAGES, dtype)
