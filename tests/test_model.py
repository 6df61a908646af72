import itertools

import pytest
import torch

from cpixelcnn import ConditionalPixelCNN

from helpers import random_grid_images, tiny_model

CONDITIONAL_CONFIGS = list(itertools.product(["additive", "film"], ["early", "middle", "late"]))


def _dependency_mask(model, x, labels, i, j):
    """Which input pixels (any channel) the output params at (i, j) depend on: (H, W) bool."""
    x = x.clone().requires_grad_(True)
    out = model(x, labels)
    weights = torch.randn(out.shape[1], dtype=out.dtype)
    (grad,) = torch.autograd.grad((out[0, :, i, j] * weights).sum(), x)
    return grad[0].abs().sum(0) > 0


def _assert_causal(model, channels, h, w, labels):
    x = random_grid_images(1, channels, h, w)
    for i in range(h):
        for j in range(w):
            dep = _dependency_mask(model, x, labels, i, j)
            before = torch.zeros(h, w, dtype=torch.bool)
            before[:i] = True
            before[i, :j] = True
            leaked = dep & ~before
            assert not leaked.any(), f"params at ({i},{j}) depend on pixels {leaked.nonzero().tolist()}"
            # not vacuous: the left, upper and upper-right neighbours are always in view
            for di, dj in ((0, -1), (-1, 0), (-1, 1)):
                if 0 <= i + di < h and 0 <= j + dj < w:
                    assert dep[i + di, j + dj], f"params at ({i},{j}) ignore pixel ({i + di},{j + dj})"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("conditioning,fusion", CONDITIONAL_CONFIGS)
def test_strictly_autoregressive_conditional(channels, conditioning, fusion):
    model = tiny_model(in_channels=channels, conditioning=conditioning, fusion=fusion)
    _assert_causal(model, channels, 5, 7, torch.tensor([2]))


@pytest.mark.parametrize("channels,h,w", [(1, 6, 3), (3, 4, 4), (3, 9, 2)])
def test_strictly_autoregressive_unconditional(channels, h, w):
    model = tiny_model(in_channels=channels, num_classes=0, nr_resnet=2)
    _assert_causal(model, channels, h, w, None)


@pytest.mark.parametrize("channels,k", [(1, 1), (1, 3), (3, 1), (3, 10)])
@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (8, 8), (13, 6)])
def test_output_shape(channels, k, h, w):
    model = tiny_model(in_channels=channels, nr_logistic_mix=k)
    out = model(random_grid_images(2, channels, h, w), torch.tensor([0, 3]))
    assert out.shape == (2, (10 if channels == 3 else 3) * k, h, w)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("conditioning", ["film", "additive"])
@pytest.mark.parametrize("embedding", ["onehot", "learned"])
def test_neutral_init_then_label_dependence(conditioning, embedding):
    model = tiny_model(conditioning=conditioning, embedding=embedding, perturb=False)
    x = random_grid_images(1, 3, 5, 5).expand(4, -1, -1, -1)
    out = model(x, torch.arange(4))
    assert torch.equal(out, out[:1].expand_as(out)), "an untrained model must not depend on the label"
    for block in model.modules():
        if getattr(block, "cond_head", None) is not None:
            gamma, beta = block.film_params(model.class_vector(torch.arange(4), torch.float64))
            assert beta is not None and torch.equal(beta, torch.zeros_like(beta))
            if conditioning == "film":
                assert torch.equal(gamma, torch.ones_like(gamma))
            else:
                assert gamma is None
    # one optimisation step on class-specific images moves the heads: the label now matters
    loss = model(random_grid_images(4, 3, 5, 5), torch.arange(4)).square().sum()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    out = model(x, torch.arange(4))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("fusion,conditioned", [("early", "up0"), ("middle", "all"), ("late", "down2")])
def test_fusion_selects_blocks(fusion, conditioned):
    model = tiny_model(fusion=fusion, nr_resnet=1)
    stages = {f"up{s}": st for s, st in enumerate(model.up_stages)} | {f"down{s}": st for s, st in enumerate(model.down_stages)}
    for name, stage in stages.items():
        has = [blk.cond_head is not None for blk in [*stage.u_stream, *stage.ul_stream]]
        expected = conditioned == "all" or conditioned == name
        assert all(h == expected for h in has), (name, has)


def test_layer_counts_follow_the_paper():
    model = tiny_model(num_classes=0, nr_resnet=3)
    assert [len(s.u_stream) for s in model.up_stages] == [3, 3, 3]
    assert [len(s.u_stream) for s in model.down_stages] == [3, 4, 4]


def test_eval_is_deterministic_and_dropout_only_in_training():
    model = ConditionalPixelCNN(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dropout=0.5).double()
    x, y = random_grid_images(2, 3, 4, 4), torch.tensor([0, 1])
    model.eval()
    assert torch.equal(model(x, y), model(x, y))
    model.train()
    assert not torch.equal(model(x, y), model(x, y))


def test_float32_matches_float64():
    model = tiny_model(nr_filters=8, nr_resnet=2)
    x, y = random_grid_images(2, 3, 8, 8), torch.tensor([1, 2])
    ref = model(x, y)
    out32 = model.float()(x.float(), y)
    assert (out32.double() - ref).norm() / ref.norm() < 1e-5


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(in_channels=2), "in_channels"),
        (dict(nr_resnet=0), "nr_resnet"),
        (dict(nr_filters=-1), "nr_filters"),
        (dict(conditioning="concat"), "conditioning"),
        (dict(fusion="everywhere"), "fusion"),
        (dict(embedding="bert"), "embedding"),
        (dict(embedding="onehot", embedding_dim=7), "embedding_dim"),
        (dict(dropout=1.0), "dropout"),
        (dict(bits=0), "bits"),
        (dict(backend="cuda"), "backend"),
        (dict(num_classes=-1), "num_classes"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConditionalPixelCNN(**kwargs)


def test_backend_is_a_checked_runtime_attribute():
    model = tiny_model()
    assert model.backend == "eager"
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        model.backend = "fast"
    assert model.backend == "eager"


@pytest.mark.parametrize(
    "x,labels,error,message",
    [
        (torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ValueError, "channels"),
        (torch.zeros(2, 3, 4), torch.tensor([0, 1]), ValueError, r"\(B, C, H, W\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.long), torch.tensor([0, 1]), TypeError, "floating point"),
        (torch.zeros(2, 3, 4, 4), torch.tensor([0, 4]), ValueError, r"labels must lie in \[0, 3\]"),
        (torch.zeros(2, 3, 4, 4), torch.tensor([-1, 0]), ValueError, "labels must lie"),
        (torch.zeros(2, 3, 4, 4), torch.tensor([0.0, 1.0]), TypeError, "integer"),
        (torch.zeros(2, 3, 4, 4), torch.tensor([0, 1, 2]), ValueError, r"shape \(B,\)"),
        (torch.zeros(2, 3, 4, 4), None, ValueError, "labels are required"),
    ],
)
def test_forward_input_errors(x, labels, error, message):
    model = tiny_model(dtype=torch.float32)
    with pytest.raises(error, match=message):
        model(x, labels)


def test_unconditional_rejects_labels():
    model = tiny_model(num_classes=0)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.zeros(1, 3, 4, 4, dtype=torch.float64), torch.tensor([0]))
