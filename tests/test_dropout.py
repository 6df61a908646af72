"""Element-wise dropout with the cheap CPU mask: keep rate, independence, exact scaling and
gradient, reproducibility, and the eager reference (torch's dropout)."""

import pytest
import torch
import torch.nn.functional as F

from cpixelcnn.ops.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.73, 0.95])
def test_keep_rate_and_independence(p):
    torch.manual_seed(3)
    mask = keep_mask((257, 63, 65), p)  # odd sizes: the last 64-bit word is partly used
    assert mask.dtype == torch.bool and mask.shape == (257, 63, 65)
    n = mask.numel()
    rate = mask.double().mean().item()
    expected = 1 - round(p * 65536) / 65536
    assert abs(rate - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    flat = mask.flatten().double()
    for lag in (1, 2, 3, 4, 5, 64):  # neighbours share a 64-bit word (lags 1-3) or not: no correlation
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
        assert abs(corr) < 5 / n**0.5, (lag, corr)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 3, 5, 7), (4, 80, 8, 8)])
def test_output_and_gradient_are_the_masked_scaled_input(shape):
    torch.manual_seed(0)
    x = (torch.rand(shape, dtype=torch.float64) + 0.5).requires_grad_()  # nonzero: a zero output means dropped
    p = 0.3
    y = dropout(x, p, training=True, backend="auto")
    kept = y != 0
    assert torch.equal(y[kept], x[kept] / 0.7) or torch.allclose(y[kept], x.detach()[kept] * (1 / 0.7), rtol=0, atol=1e-15)
    g = torch.randn(shape, dtype=torch.float64)
    y.backward(g)
    assert torch.allclose(x.grad, g * kept * (1 / 0.7), rtol=0, atol=1e-15)


def test_identity_when_off_reproducible_with_a_seed_and_the_eager_reference():
    x = torch.randn(2, 6, 9, 9)
    module = Dropout(0.5)
    assert module.eval()(x) is x and dropout(x, 0.0) is x
    module.train()
    torch.manual_seed(7)
    a = module(x)
    torch.manual_seed(7)
    assert torch.equal(module(x), a)
    torch.manual_seed(7)
    ref = dropout(x, 0.5, backend="eager")
    torch.manual_seed(7)
    assert torch.equal(ref, F.dropout(x, 0.5, True))
    big = torch.ones(400_000)
    assert abs(dropout(big, 0.5).mean().item() - 1.0) < 0.01  # unbiased: E[dropout(x)] = x


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_probability(p):
    with pytest.raises(ValueError, match=r"dropout .* in \[0, 1\)"):
        Dropout(p)
    with pytest.raises(ValueError, match="dropout probability must be in"):
        dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="unknown backend"):
        dropout(torch.ones(3), 0.5, backend="cuda")
