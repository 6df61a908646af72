import pytest
import torch

from cpixelcnn.ops.gated_film import gated_film


def _inputs(b=2, f=3, h=4, w=5):
    return torch.randn(b, f, h, w, dtype=torch.float64), torch.randn(b, 2 * f, h, w, dtype=torch.float64), torch.randn(b, 2 * f, dtype=torch.float64), torch.randn(b, 2 * f, dtype=torch.float64)


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
