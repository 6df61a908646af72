import pytest
import torch

from cpixelcnn.ops.gated_film import gated_film


def _inputs(b=2, f=3, h=4, w=5):
    return (
        torch.randn(b, f, h, w, dtype=torch.float64),
        torch.randn(b, 2 * f, h, w, dtype=torch.float64),
        torch.randn(b, 2 * f, dtype=torch.float64),
        torch.randn(b, 2 * f, dtype=torch.float64),
    )


def test_formula():
    x, h, gamma, beta = _inputs()
    f = x.shape[1]
    a, b = h[:, :f], h[:, f:]
    ga, gb = gamma[:, :f, None, None], gamma[:, f:, None, None]
    ba, bb = beta[:, :f, None, None], beta[:, f:, None, None]
    expected = x + (ga * a + ba) * torch.sigmoid(gb * b + bb)
    assert torch.allclose(gated_film(x, h, gamma, beta), expected, rtol=1e-14)


def test_additive_and_unconditional_are_the_neutral_cases():
    x, h, _, beta = _inputs()
    ones = torch.ones_like(beta)
    assert torch.equal(gated_film(x, h, None, beta), gated_film(x, h, ones, beta))
    assert torch.equal(gated_film(x, h), gated_film(x, h, ones, torch.zeros_like(beta)))


def test_shape_errors():
    x, h, gamma, beta = _inputs()
    with pytest.raises(ValueError, match=r"h must have shape"):
        gated_film(x, h[:, :-1])
    with pytest.raises(ValueError, match="gamma must have shape"):
        gated_film(x, h, gamma[:, :-1])
    with pytest.raises(ValueError, match="unknown backend"):
        gated_film(x, h, backend="magic")


# -- Triton kernel -------------------------------------------------------------------------------

from cpixelcnn.ops.gated_film import gated_film_eager, gated_film_triton  # noqa: E402

from helpers import KERNEL_DEVICE, requires_cuda  # noqa: E402

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (3, 5, 33, 40), (1, 2, 17, 1)]


def _grads(fn, x, h, gamma, beta, weights):
    inputs = [t for t in (x, h, gamma, beta) if t is not None]
    out = fn(x, h, gamma, beta)
    return out, torch.autograd.grad((out * weights).sum(), inputs)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["film", "additive", "unconditional"])
def test_triton_matches_eager_float64(shape, mode):
    b, f, height, width = shape
    opts = dict(dtype=torch.float64, device=KERNEL_DEVICE)
    x = torch.randn(b, f, height, width, **opts, requires_grad=True)
    h = torch.randn(b, 2 * f, height, width, **opts, requires_grad=True)
    gamma = torch.randn(b, 2 * f, **opts, requires_grad=True) if mode == "film" else None
    beta = torch.randn(b, 2 * f, **opts, requires_grad=True) if mode != "unconditional" else None
    weights = torch.randn(b, f, height, width, **opts)
    ref, ref_grads = _grads(gated_film_eager, x, h, gamma, beta, weights)
    out, grads = _grads(gated_film_triton, x, h, gamma, beta, weights)
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-14)
    for g, rg in zip(grads, ref_grads):
        assert torch.allclose(g, rg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_triton_low_precision(dtype, tol):
    x = torch.randn(2, 4, 6, 6, dtype=dtype, device=KERNEL_DEVICE)
    h = torch.randn(2, 8, 6, 6, dtype=dtype, device=KERNEL_DEVICE)
    gamma, beta = torch.randn(2, 8, device=KERNEL_DEVICE), torch.randn(2, 8, device=KERNEL_DEVICE)  # float32 FiLM params, as in autocast
    out = gated_film_triton(x, h, gamma, beta)
    ref = gated_film_eager(x.double(), h.double(), gamma.double(), beta.double())
    assert out.dtype == gated_film_eager(x, h, gamma, beta).dtype
    assert ((out.double() - ref).norm() / ref.norm()).item() < tol


def test_gated_film_custom_ops_pass_opcheck():
    x, h, gamma, beta = (t.to(KERNEL_DEVICE).requires_grad_(True) for t in _inputs())
    torch.library.opcheck(torch.ops.cpixelcnn.gated_film.default, (x, h, gamma, beta))
    torch.library.opcheck(torch.ops.cpixelcnn.gated_film.default, (x, h, None, beta))
    torch.library.opcheck(torch.ops.cpixelcnn.gated_film_backward.default, (torch.randn_like(x), h.detach(), None, None))


@requires_cuda
@pytest.mark.gpu
def test_triton_on_gpu_bf16():
    x = torch.randn(8, 160, 32, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    h = torch.randn(8, 320, 32, 32, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    gamma = torch.randn(8, 320, device="cuda", requires_grad=True)
    beta = torch.randn(8, 320, device="cuda", requires_grad=True)
    w = torch.randn(8, 160, 32, 32, device="cuda")
    ref, ref_grads = _grads(gated_film_eager, x, h, gamma, beta, w)
    out, grads = _grads(gated_film_triton, x, h, gamma, beta, w)
    assert ((out.float() - ref.float()).norm() / ref.float().norm()).item() < 1e-2
    for g, rg in zip(grads, ref_grads):
        assert ((g.float() - rg.float()).norm() / rg.float().norm()).item() < 2e-2
