"""Triton kernels: gated-resnet activation fused with FiLM and the residual, forward and backward.

    out = x + A · σ(Bt),   A = γ_a·a + β_a,   Bt = γ_b·b + β_b,   (a, b) = halves of h

x (B, F, H, W), h (B, 2F, H, W), γ and β (B, 2F) per sample and channel (absent = 1 and 0).
The forward reads x, a, b once and writes out. The backward gives d(a, b) and reduces d(γ, β)
over H×W inside the kernel — one program per (sample, channel) loops over the plane, so the
reduction needs no atomics and is deterministic; d(x) is the incoming gradient itself.
Math in float32 (float64 when the inputs are float64).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cpixelcnn.kernels._spec import NUM_STAGES, PARAM_DTYPES, Specialization, pointer


@triton.jit
def _film_params(gamma_ptr, beta_ptr, b, f, F, row_mask, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, ty: tl.constexpr):
    """γ_a, γ_b, β_a, β_b of each row (sample b, channel f) as [ROWS, 1] columns."""
    ga = tl.full([b.shape[0], 1], 1.0, ty)
    gb = ga
    ba = tl.zeros([b.shape[0], 1], ty)
    bt = ba
    if HAS_GAMMA:
        ga = tl.load(gamma_ptr + b * 2 * F + f, mask=row_mask, other=1.0).to(ty)[:, None]
        gb = tl.load(gamma_ptr + b * 2 * F + F + f, mask=row_mask, other=1.0).to(ty)[:, None]
    if HAS_BETA:
        ba = tl.load(beta_ptr + b * 2 * F + f, mask=row_mask, other=0.0).to(ty)[:, None]
        bt = tl.load(beta_ptr + b * 2 * F + F + f, mask=row_mask, other=0.0).to(ty)[:, None]
    return ga, gb, ba, bt


@triton.jit
def _planes(gamma_ptr, beta_ptr, n_rows, F, HAS_GAMMA: tl.constexpr, HAS_BETA: tl.constexpr, ty: tl.constexpr, ROWS: tl.constexpr):
    """This program's ROWS (sample, channel) planes: indices, mask, sample b, channel f, and γ/β."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_mask = rows < n_rows
    b = rows // F
    f = rows % F
    ga, gb, ba, bt = _film_params(gamma_ptr, beta_ptr, b, f, F, row_mask, HAS_GAMMA, HAS_BETA, ty)
    return rows, row_mask, b, f, ga, gb, ba, bt


@triton.jit
def gated_film_fwd_kernel(
    x_ptr,
    h_ptr,
    gamma_ptr,
    beta_ptr,
    out_ptr,
    n_rows,
    F,
    hw,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    F64: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """A [ROWS × BLOCK] tile: ROWS (sample, channel) planes × BLOCK positions."""
    ty = tl.float64 if F64 else tl.float32
    rows, row_mask, b, f, ga, gb, ba, bt = _planes(gamma_ptr, beta_ptr, n_rows, F, HAS_GAMMA, HAS_BETA, ty, ROWS)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = row_mask[:, None] & (offs < hw)[None, :]
    x = tl.load(x_ptr + rows[:, None] * hw + offs[None, :], mask=mask, other=0.0).to(ty)
    a = tl.load(h_ptr + ((b * 2 * F + f) * hw)[:, None] + offs[None, :], mask=mask, other=0.0).to(ty)
    bb = tl.load(h_ptr + ((b * 2 * F + F + f) * hw)[:, None] + offs[None, :], mask=mask, other=0.0).to(ty)
    gate = 1.0 / (1.0 + tl.exp(-(gb * bb + bt)))
    out = x + (ga * a + ba) * gate
    tl.store(out_ptr + rows[:, None] * hw + offs[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gated_film_bwd_kernel(
    grad_ptr,
    h_ptr,
    gamma_ptr,
    beta_ptr,
    dh_ptr,
    dgamma_ptr,
    dbeta_ptr,
    n_rows,
    F,
    hw,
    HAS_GAMMA: tl.constexpr,
    HAS_BETA: tl.constexpr,
    F64: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """ROWS whole planes per program: d(h) per element, d(γ, β) summed over the plane here."""
    ty = tl.float64 if F64 else tl.float32
    rows, row_mask, b, f, ga, gb, ba, bt = _planes(gamma_ptr, beta_ptr, n_rows, F, HAS_GAMMA, HAS_BETA, ty, ROWS)
    a_base = ((b * 2 * F + f) * hw)[:, None]
    b_base = ((b * 2 * F + F + f) * hw)[:, None]
    acc_ga = tl.zeros([ROWS, BLOCK], ty)
    acc_gb = tl.zeros([ROWS, BLOCK], ty)
    acc_ba = tl.zeros([ROWS, BLOCK], ty)
    acc_bb = tl.zeros([ROWS, BLOCK], ty)
    for start in range(0, hw, BLOCK):
        offs = (start + tl.arange(0, BLOCK))[None, :]
        mask = row_mask[:, None] & (offs < hw)
        g = tl.load(grad_ptr + rows[:, None] * hw + offs, mask=mask, other=0.0).to(ty)
        a = tl.load(h_ptr + a_base + offs, mask=mask, other=0.0).to(ty)
        bb = tl.load(h_ptr + b_base + offs, mask=mask, other=0.0).to(ty)
        big_a = ga * a + ba
        gate = 1.0 / (1.0 + tl.exp(-(gb * bb + bt)))
        d_big_a = g * gate  # d out / d A
        d_big_b = g * big_a * gate * (1.0 - gate)  # d out / d Bt
        tl.store(dh_ptr + a_base + offs, (d_big_a * ga).to(dh_ptr.dtype.element_ty), mask=mask)
        tl.store(dh_ptr + b_base + offs, (d_big_b * gb).to(dh_ptr.dtype.element_ty), mask=mask)
        acc_ga += d_big_a * a
        acc_gb += d_big_b * bb
        acc_ba += d_big_a
        acc_bb += d_big_b
    if HAS_GAMMA:
        tl.store(dgamma_ptr + b * 2 * F + f, tl.sum(acc_ga, axis=1).to(dgamma_ptr.dtype.element_ty), mask=row_mask)
        tl.store(dgamma_ptr + b * 2 * F + F + f, tl.sum(acc_gb, axis=1).to(dgamma_ptr.dtype.element_ty), mask=row_mask)
    if HAS_BETA:
        tl.store(dbeta_ptr + b * 2 * F + f, tl.sum(acc_ba, axis=1).to(dbeta_ptr.dtype.element_ty), mask=row_mask)
        tl.store(dbeta_ptr + b * 2 * F + F + f, tl.sum(acc_bb, axis=1).to(dbeta_ptr.dtype.element_ty), mask=row_mask)


# Tiles: BLOCK positions of ROWS planes. BLOCK is the smallest of a few sizes covering the plane
# (the model's planes are H·W, H·W/4 and H·W/16), so the launchers compile at most a handful of
# specializations; ``specializations()`` lists them all. Sizes are chosen so every one stays
# under 128 registers with no spills on sm_80/sm_90 (benchmarks/results/kernel-resources.json).
FWD_TILE, FWD_BLOCKS, FWD_WARPS = 1024, (16, 64, 256, 1024), 4
BWD_TILE, BWD_BLOCKS, BWD_WARPS = 512, (16, 64, 256), 8
# (has γ, has β) of each conditioning: FiLM, additive (class bias only), none
FILM_VARIANTS = ((True, True), (False, True), (False, False))


def _tile(hw: int, tile: int, blocks: tuple[int, ...]) -> tuple[int, int]:
    """(ROWS, BLOCK): the smallest BLOCK covering a plane of ``hw`` (else the largest), ROWS fills the tile."""
    block = next((b for b in blocks if b >= hw), blocks[-1])
    return tile // block, block


def gated_film_forward(x, h, gamma, beta, out_dtype: torch.dtype) -> torch.Tensor:
    """x (B, F, H, W), h (B, 2F, H, W) contiguous; gamma/beta (B, 2F) contiguous or None."""
    bsz, f, height, width = x.shape
    hw = height * width
    out = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    rows, block = _tile(hw, FWD_TILE, FWD_BLOCKS)
    grid = (triton.cdiv(bsz * f, rows), triton.cdiv(hw, block))
    gated_film_fwd_kernel[grid](
        x,
        h,
        gamma if gamma is not None else x,
        beta if beta is not None else x,
        out,
        bsz * f,
        f,
        hw,
        HAS_GAMMA=gamma is not None,
        HAS_BETA=beta is not None,
        F64=out_dtype == torch.float64,
        ROWS=rows,
        BLOCK=block,
        num_warps=FWD_WARPS,
        num_stages=NUM_STAGES,
    )
    return out


def gated_film_backward(grad, h, gamma, beta, compute_f64: bool):
    """Returns d(h) (B, 2F, H, W) in h's dtype, d(gamma), d(beta) (B, 2F) or None."""
    bsz, two_f, height, width = h.shape
    f = two_f // 2
    hw = height * width
    dh = torch.empty_like(h)
    dgamma = torch.empty_like(gamma) if gamma is not None else None
    dbeta = torch.empty_like(beta) if beta is not None else None
    rows, block = _tile(hw, BWD_TILE, BWD_BLOCKS)
    gated_film_bwd_kernel[(triton.cdiv(bsz * f, rows),)](
        grad,
        h,
        gamma if gamma is not None else h,
        beta if beta is not None else h,
        dh,
        dgamma if dgamma is not None else h,
        dbeta if dbeta is not None else h,
        bsz * f,
        f,
        hw,
        HAS_GAMMA=gamma is not None,
        HAS_BETA=beta is not None,
        F64=compute_f64,
        ROWS=rows,
        BLOCK=block,
        num_warps=BWD_WARPS,
        num_stages=NUM_STAGES,
    )
    return dh, dgamma, dbeta


def specializations(dtypes=PARAM_DTYPES):
    """Every launch the two functions above can make: forward and backward × tile × (γ, β)
    variant × dtype (x, h, γ, β, the output and the gradient all in that dtype; an absent γ or β
    is passed as another tensor of the same dtype, as the launchers do)."""
    scalars = {"n_rows": "i32", "F": "i32", "hw": "i32"}
    for dtype in dtypes:
        ptr = pointer(dtype)
        for has_gamma, has_beta in FILM_VARIANTS:
            flags = {"HAS_GAMMA": has_gamma, "HAS_BETA": has_beta, "F64": dtype == torch.float64}
            for block in FWD_BLOCKS:
                constexprs = {**flags, "ROWS": FWD_TILE // block, "BLOCK": block}
                names = ("x_ptr", "h_ptr", "gamma_ptr", "beta_ptr", "out_ptr")
                signature = {**{n: ptr for n in names}, **scalars, **{n: "constexpr" for n in constexprs}}
                yield Specialization(gated_film_fwd_kernel, signature, constexprs, FWD_WARPS, NUM_STAGES, dtype)
            for block in BWD_BLOCKS:
                constexprs = {**flags, "ROWS": BWD_TILE // block, "BLOCK": block}
                names = ("grad_ptr", "h_ptr", "gamma_ptr", "beta_ptr", "dh_ptr", "dgamma_ptr", "dbeta_ptr")
                signature = {**{n: ptr for n in names}, **scalars, **{n: "constexpr" for n in constexprs}}
                yield Specialization(gated_film_bwd_kernel, signature, constexprs, BWD_WARPS, NUM_STAGES, dtype)
