"""The exact DMoL likelihood against a 50-digit mpmath reference, and its invariants."""

import itertools
import math

import mpmath
import pytest
import torch

from cpixelcnn import bits_per_dim, dmol_log_prob

from helpers import random_grid_images

mpmath.mp.dps = 50


def _mp_log_prob(x, params, bits):
    """Per-pixel log p in 50-digit arithmetic, written straight from the definition."""
    b, c, h, w = x.shape
    per = 10 if c == 3 else 3
    k_mix = params.shape[1] // per
    delta = mpmath.mpf(1) / (2**bits - 1)
    sig = lambda t: 1 / (1 + mpmath.exp(-t))  # noqa: E731
    out = torch.empty(b, h, w, dtype=torch.float64)
    for n, i, j in itertools.product(range(b), range(h), range(w)):
        p = [mpmath.mpf(float(v)) for v in params[n, :, i, j]]
        xv = [mpmath.mpf(float(v)) for v in x[n, :, i, j]]
        logits = p[:k_mix]
        lse = mpmath.log(sum(mpmath.exp(logit) for logit in logits))
        total = mpmath.mpf(0)
        for k in range(k_mix):
            prob = mpmath.exp(logits[k] - lse)
            for ch in range(c):
                base = k_mix + ch * (3 if c == 3 else 2) * k_mix
                mean = p[base + k]
                log_s = max(p[base + k_mix + k], mpmath.mpf(-7))
                if c == 3 and ch == 1:
                    mean += mpmath.tanh(p[k_mix + 2 * k_mix + k]) * xv[0]
                if c == 3 and ch == 2:
                    mean += mpmath.tanh(p[k_mix + 3 * k_mix + 2 * k_mix + k]) * xv[0] + mpmath.tanh(p[k_mix + 6 * k_mix + 2 * k_mix + k]) * xv[1]
                s = mpmath.exp(log_s)
                hi = (xv[ch] + delta - mean) / s if xv[ch] < 1 - delta else mpmath.inf
                lo = (xv[ch] - delta - mean) / s if xv[ch] > -1 + delta else -mpmath.inf
                # mass of [lo, hi]: subtract the two tails on the side away from the mean, so
                # neither term is close to 1 (no cancellation even at 50 digits)
                prob *= sig(-lo) - sig(-hi) if lo > 0 else sig(hi) - sig(lo)
            total += prob
        out[n, i, j] = float(mpmath.log(total))
    return out


def _random_params(b, c, k, h, w, scale=1.0, dtype=torch.float64):
    return torch.randn(b, (10 if c == 3 else 3) * k, h, w, dtype=dtype) * scale


@pytest.mark.parametrize("c,k,bits", [(1, 1, 8), (1, 3, 8), (3, 1, 8), (3, 4, 8), (3, 2, 5), (1, 2, 1)])
def test_matches_high_precision_reference(c, k, bits):
    x = random_grid_images(2, c, 2, 3, bits=bits)
    params = _random_params(2, c, k, 2, 3, scale=2.0)
    ours = dmol_log_prob(x, params, bits=bits, per_pixel=True)
    ref = _mp_log_prob(x, params, bits)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12), (ours - ref).abs().max()
    assert torch.allclose(dmol_log_prob(x, params, bits=bits), ref.sum((1, 2)), rtol=1e-10)


@pytest.mark.parametrize("c", [1, 3])
def test_extreme_parameters(c):
    """Large |means|, scales at and below the clamp, huge scales, logits ±50, edge pixels."""
    k = 4
    per = 10 if c == 3 else 3
    params = torch.zeros(1, per * k, 2, 4, dtype=torch.float64)
    params[0, :k] = torch.tensor([50.0, -50.0, 0.0, 3.0])[:, None, None]
    ls0 = k + k  # first colour's log-scales
    means = torch.tensor([[[30.0, -30.0, 0.0, 0.99]]])
    for ch in range(c):
        base = k + ch * (per // c if c == 3 else 2) * k
        params[0, base : base + k] = means.reshape(k, 1, 1).expand(k, 2, 4) * (1 if ch % 2 == 0 else -1)
        params[0, base + k : base + 2 * k] = torch.tensor([-7.0, -20.0, 12.0, -3.0])[:, None, None]
        if c == 3:
            params[0, base + 2 * k : base + 3 * k] = torch.tensor([5.0, -5.0, 0.3, 40.0])[:, None, None]
    assert ls0 == 2 * k
    x = torch.tensor([-1.0, 1.0, 1 - 2 / 255, -1 + 2 / 255, 0.0, 127 / 127.5 - 1, 0.5 * 254 / 255, -254 / 255], dtype=torch.float64)
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    x = x.reshape(1, 1, 2, 4).expand(1, c, 2, 4).contiguous()
    ours = dmol_log_prob(x, params, per_pixel=True)
    ref = _mp_log_prob(x, params, 8)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-10), (ours, ref)
    params.requires_grad_(True)
    dmol_log_prob(x, params).sum().backward()
    assert torch.isfinite(params.grad).all()


@pytest.mark.parametrize("c,bits", [(1, 1), (1, 3), (3, 1), (3, 3)])
def test_bin_probabilities_sum_to_one(c, bits):
    levels = 2**bits
    grid = torch.arange(levels, dtype=torch.float64) * 2 / (levels - 1) - 1
    values = torch.cartesian_prod(*([grid] * c)).reshape(-1, c) if c > 1 else grid.reshape(-1, 1)
    n = values.shape[0]
    for scale in (0.5, 3.0):
        params = _random_params(1, c, 3, 1, 1, scale=scale).expand(n, -1, -1, -1)
        lp = dmol_log_prob(values.reshape(n, c, 1, 1), params, bits=bits)
        assert abs(torch.logsumexp(lp, 0).item()) < 1e-12


def test_float32_agrees_with_float64():
    x = random_grid_images(3, 3, 5, 7)
    params = _random_params(3, 3, 10, 5, 7, scale=2.0)
    ref = dmol_log_prob(x, params, per_pixel=True)
    out = dmol_log_prob(x.float(), params.float(), per_pixel=True)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(dmol_log_prob(x.float(), params.float()).double(), ref.sum((1, 2)), rtol=1e-6)


def test_half_precision_params_computed_in_float32():
    x = random_grid_images(2, 1, 3, 3)
    params = _random_params(2, 1, 2, 3, 3)
    for dtype in (torch.bfloat16, torch.float16):
        out = dmol_log_prob(x.float(), params.to(dtype))
        ref = dmol_log_prob(x, params.to(dtype).double())
        assert out.dtype == torch.float32
        assert torch.allclose(out.double(), ref, rtol=1e-5)


def test_gradcheck():
    x = random_grid_images(2, 3, 2, 2)
    params = _random_params(2, 3, 2, 2, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: dmol_log_prob(x, p), (params,))


def test_bits_per_dim():
    lp = torch.tensor([-3 * 4 * 5 * math.log(2) * 2.5])
    assert torch.allclose(bits_per_dim(lp, (3, 4, 5)), torch.tensor([2.5]))
    assert torch.allclose(bits_per_dim(lp, (7, 3, 4, 5)), torch.tensor([2.5]))
    with pytest.raises(ValueError, match="shape"):
        bits_per_dim(lp, (4,))


@pytest.mark.parametrize(
    "x,params,message",
    [
        (torch.full((1, 3, 2, 2), 1.5), torch.zeros(1, 10, 2, 2), r"outside \[-1, 1\]"),
        (torch.full((1, 3, 2, 2), float("nan")), torch.zeros(1, 10, 2, 2), "NaN"),
        (torch.full((1, 3, 2, 2), 0.5), torch.zeros(1, 10, 2, 2), "off the 8-bit grid"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 12, 2, 2), r"10\*K"),
        (torch.zeros(1, 1, 2, 2), torch.zeros(1, 10, 2, 2), r"3\*K"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(2, 10, 2, 2), "do not match"),
        (torch.zeros(1, 3, 2, 2), torch.zeros(1, 10, 2, 3), "do not match"),
        (torch.zeros(1, 2, 2, 2), torch.zeros(1, 10, 2, 2), "1 \\(grey\\) or 3 \\(RGB\\)"),
        (torch.zeros(3, 2, 2), torch.zeros(1, 10, 2, 2), r"\(B, C, H, W\)"),
    ],
)
def test_bad_inputs(x, params, message):
    with pytest.raises(ValueError, match=message):
        dmol_log_prob(x, params)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend"):
        dmol_log_prob(torch.zeros(1, 1, 1, 1), torch.zeros(1, 3, 1, 1), backend="fast")


# -- Triton kernel (interpreter mode on CPU, real kernels on a GPU) ------------------------------

from cpixelcnn.ops.dmol import dmol_log_prob_eager, dmol_log_prob_triton  # noqa: E402

from helpers import KERNEL_DEVICE, requires_cuda  # noqa: E402

KERNEL_CASES = [  # (channels, K, bits, B, H, W)
    (1, 1, 8, 1, 1, 1),
    (1, 10, 8, 2, 5, 7),
    (3, 1, 8, 1, 3, 3),
    (3, 10, 8, 2, 4, 5),
    (3, 3, 4, 3, 1, 9),
    (1, 2, 1, 2, 2, 3),
]


def _kernel_inputs(c, k, bits, b, h, w, scale=2.0, dtype=torch.float64, device=KERNEL_DEVICE):
    x = random_grid_images(b, c, h, w, bits=bits, dtype=dtype).to(device)
    n = min(2, x.numel())
    x.view(-1)[:n] = torch.tensor([-1.0, 1.0], dtype=dtype)[:n]  # the edge bins are always present
    params = (_random_params(b, c, k, h, w, scale=scale, dtype=dtype)).to(device).requires_grad_(True)
    return x, params


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_triton_matches_eager_float64(case):
    c, k, bits = case[:3]
    x, params = _kernel_inputs(*case)
    weights = torch.randn(case[3], case[4], case[5], dtype=torch.float64, device=KERNEL_DEVICE)
    ref = dmol_log_prob_eager(x, params, bits, per_pixel=True)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), params)
    out = dmol_log_prob(x, params, bits=bits, backend="triton", per_pixel=True)
    (grad,) = torch.autograd.grad((out * weights).sum(), params)
    assert out.dtype == torch.float64
    assert torch.allclose(out, ref, rtol=1e-11, atol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c", [1, 3])
def test_triton_extreme_parameters(c):
    k = 4
    x, params = _kernel_inputs(c, k, 8, 2, 3, 4, scale=1.0)
    with torch.no_grad():
        params[:, :k] = torch.tensor([50.0, -50.0, 0.0, 3.0], device=KERNEL_DEVICE)[None, :, None, None]
        params[:, k : 2 * k] *= 40  # |means| far outside [-1, 1]
        ls = torch.tensor([-7.0, -20.0, 12.0, 0.5], device=KERNEL_DEVICE)[None, :, None, None]
        params[:, 2 * k : 3 * k] = ls
        if c == 3:
            params[:, 5 * k : 6 * k] = ls
            params[:, 8 * k : 9 * k] = ls
    ref = dmol_log_prob_eager(x, params, per_pixel=True)
    (ref_grad,) = torch.autograd.grad(ref.sum(), params)
    out = dmol_log_prob_triton(x, params, per_pixel=True)
    (grad,) = torch.autograd.grad(out.sum(), params)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-5), (torch.float16, 2e-5)])
def test_triton_reduced_precision_params(dtype, rtol):
    """Low-precision params are computed in float32 by both paths: results agree to float32 rounding."""
    x, params = _kernel_inputs(3, 5, 8, 2, 4, 6)
    p = params.detach().to(dtype).requires_grad_(True)
    xf = x.float()
    ref = dmol_log_prob_eager(xf, p, per_pixel=True)
    (ref_grad,) = torch.autograd.grad(ref.sum(), p)
    out = dmol_log_prob_triton(xf, p, per_pixel=True)
    (grad,) = torch.autograd.grad(out.sum(), p)
    assert out.dtype == torch.float32 and grad.dtype == dtype
    assert torch.allclose(out, ref, rtol=rtol, atol=1e-4)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert ((grad.float() - ref_grad.float()).norm() / ref_grad.float().norm()).item() < tol


def test_triton_non_contiguous_inputs():
    x, params = _kernel_inputs(3, 2, 8, 2, 5, 4)
    x_nc = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    p_nc = params.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_(True)
    assert not x_nc.is_contiguous() and not p_nc.is_contiguous()
    out = dmol_log_prob_triton(x_nc, p_nc)
    (grad,) = torch.autograd.grad(out.sum(), p_nc)
    ref = dmol_log_prob_eager(x, params)
    (ref_grad,) = torch.autograd.grad(ref.sum(), params)
    assert torch.allclose(out, ref, rtol=1e-12) and torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)


def test_triton_checks_inputs_like_eager():
    with pytest.raises(ValueError, match="off the 8-bit grid"):
        dmol_log_prob(torch.full((1, 3, 2, 2), 0.5, device=KERNEL_DEVICE), torch.zeros(1, 10, 2, 2, device=KERNEL_DEVICE), backend="triton")
    with pytest.raises(ValueError, match=r"10\*K"):
        dmol_log_prob(torch.zeros(1, 3, 2, 2, device=KERNEL_DEVICE), torch.zeros(1, 9, 2, 2, device=KERNEL_DEVICE), backend="triton")


def test_dmol_custom_ops_pass_opcheck():
    x, params = _kernel_inputs(3, 2, 8, 2, 3, 3)  # on KERNEL_DEVICE
    x = x.detach()
    torch.library.opcheck(torch.ops.cpixelcnn.dmol_log_prob_pixels.default, (x, params, 8))
    lp, lse_mix, lse_logit = torch.ops.cpixelcnn.dmol_log_prob_pixels(x, params.detach(), 8)
    torch.library.opcheck(
        torch.ops.cpixelcnn.dmol_log_prob_pixels_backward.default, (x, params.detach(), torch.randn_like(lp), lse_mix, lse_logit, 8)
    )


def test_triton_backend_errors_without_a_device(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, params = _kernel_inputs(1, 1, 8, 1, 2, 2, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="backend 'triton' cannot run: .*cpu tensor"):
            dmol_log_prob(x, params, backend="triton")
    ref = dmol_log_prob(x, params)  # "auto" on a CPU tensor is the eager reference
    assert torch.equal(dmol_log_prob(x, params, backend="auto"), ref)


@requires_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_on_gpu(dtype):
    x, params = _kernel_inputs(3, 10, 8, 4, 16, 16, device="cuda")
    p = params.detach().to(dtype).requires_grad_(True)
    out = dmol_log_prob(x.float(), p, backend="triton")
    (grad,) = torch.autograd.grad(out.sum(), p)
    ref = dmol_log_prob_eager(x.double(), p.double())
    (ref_grad,) = torch.autograd.grad(ref.sum(), p)  # float64 reference on the same (rounded) params
    assert torch.allclose(out.double(), ref, rtol=1e-5)
    assert ((grad.double() - ref_grad).norm() / ref_grad.norm()).item() < (1e-5 if dtype == torch.float32 else 1e-2)
