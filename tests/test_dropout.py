"""Element-wise dropout with the cheap CPU mask: keep rate, independence, exact scaling and
gradient, reproducibility, and the eager reference (torch's dropout)."""

import pytest
import torch
import torch.nn.functional as F

from cpixelcnn.ops.dropout import Dropout, bits_per_element, dropout, keep_mask


@pytest.mark.parametrize("shape", [(257, 63, 65), (5, 63, 17, 19)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.25, 3 / 16, 154 / 256, 0.73, 0.95])  # 16, 1, 2, 4, 8, 16, 16 bits an element
def test_keep_rate_and_independence(p, shape):
    torch.manual_seed(3)
    mask = keep_mask(shape, p)  # odd sizes: the last 64-bit word is partly used
    assert mask.dtype == torch.bool and mask.shape == shape and mask.is_contiguous()
    n = mask.numel()
    rate = mask.double().mean().item()
    expected = 1 - round(p * 65536) / 65536
    assert abs(rate - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    # in the order of the draws (channels last for 4-D shapes), neighbours share a byte, a 64-bit
    # word or neither: no correlation either way
    flat = (mask.permute(0, 2, 3, 1) if len(shape) == 4 else mask).flatten().double()
    for lag in (1, 2, 3, 4, 5, 7, 8, 63, 64):
        corr = torch.corrcoef(torch.stack([flat[:-lag], flat[lag:]]))[0, 1].item()
        assert abs(corr) < 5 / n**0.5, (lag, corr)


def test_bits_per_element_are_the_fewest_that_make_p_exact():
    assert [bits_per_element(p) for p in (0.0, 0.5, 0.25, 0.75, 3 / 16, 154 / 256, 0.1, 0.73)] == [1, 1, 2, 2, 4, 8, 16, 16]
    torch.manual_seed(0)
    assert keep_mask((64,), 0.0).all()  # a threshold of 0 keeps everything


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


def _traced_ops(fn):
    """fn under torch.compile through AOT autograd with inductor's partitioner (which merges common
    subexpressions), and the list the operators of its forward graph will be recorded in."""
    import torch._dynamo as dynamo
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    ops = []

    def record(graph_module, example_inputs):
        ops.extend(str(node.target) for node in graph_module.graph.nodes if node.op == "call_function")
        return make_boxed_func(graph_module.forward)

    dynamo.reset()
    return torch.compile(fn, backend=aot_autograd(fw_compiler=record, partition_fn=min_cut_rematerialization_partition)), ops


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 80, 8, 8)])
def test_under_torch_compile_the_mask_is_the_eager_one_drawn_by_one_traced_operator(shape):
    """Compiled, the cheap mask comes from cpixelcnn::dropout_keep_mask (not the compiler's own
    per-element Philox draws): the same masks, in the same order, from the same seed, as eager."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    g = torch.randn(shape, dtype=torch.float64)

    def two_dropouts(x):  # two masks of one shape: two draws, never merged into one
        return dropout(torch.tanh(dropout(x, 0.5)), 0.5)

    torch.manual_seed(11)
    eager = two_dropouts(x)
    (eager_grad,) = torch.autograd.grad(eager, x, g)
    compiled_fn, ops = _traced_ops(two_dropouts)
    torch.manual_seed(11)
    compiled = compiled_fn(x)
    (compiled_grad,) = torch.autograd.grad(compiled, x, g)
    assert torch.equal(compiled, eager) and torch.equal(compiled_grad, eager_grad)
    assert ops.count("cpixelcnn.dropout_keep_mask.default") == 2, ops
    assert not [op for op in ops if any(word in op for word in ("rand", "bernoulli", "dropout.default", "native_dropout"))], ops
    assert torch.ops.cpixelcnn.dropout_keep_mask.default.tags == [torch.Tag.nondeterministic_seeded]  # never merged or recomputed
