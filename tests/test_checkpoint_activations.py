"""--checkpoint-activations: recomputing the gated resnets in the backward pass gives the same loss
and gradients (float64, dropout on: the masks are redrawn identically) and keeps fewer activations."""

import pytest
import torch

from cpixelcnn import ConditionalPixelCNN
from cpixelcnn.ops.dmol import dmol_log_prob

from helpers import random_grid_images


def loss_and_grads(model, x, y, recompute: bool, seed: int = 3):
    model.checkpoint_activations = recompute
    model.zero_grad()
    torch.manual_seed(seed)  # the dropout masks
    loss = -dmol_log_prob(x, model(x, y)).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("channels, conditioning, dropout_backend", [(3, "film", "auto"), (1, "additive", "eager"), (3, "film", "eager")])
def test_same_loss_and_gradients_in_float64(channels, conditioning, dropout_backend):
    torch.manual_seed(0)
    model = ConditionalPixelCNN(in_channels=channels, num_classes=3, nr_resnet=2, nr_filters=6, nr_logistic_mix=2, conditioning=conditioning,
                                dropout=0.5).double().train()  # fmt: skip
    for module in model.modules():
        if hasattr(module, "backend") and module is not model:
            module.backend = dropout_backend
    x = random_grid_images(3, channels, 7, 9, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 2, 1])
    plain_loss, plain = loss_and_grads(model, x, y, recompute=False)
    ckpt_loss, ckpt = loss_and_grads(model, x, y, recompute=True)
    assert torch.equal(plain_loss, ckpt_loss)
    for name in plain:
        assert torch.equal(ckpt[name], plain[name]), name
    other_loss, _ = loss_and_grads(model, x, y, recompute=True, seed=4)
    assert not torch.equal(other_loss, plain_loss)  # dropout is really on: another seed, another loss


def test_no_effect_in_eval_mode_or_without_gradients():
    model = ConditionalPixelCNN(in_channels=3, num_classes=2, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, checkpoint_activations=True).eval()
    x = random_grid_images(2, 3, 4, 4, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([0, 1])), ConditionalPixelCNN.forward(model, x, torch.tensor([0, 1])))


def saved_activation_bytes(model, x, y) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        -dmol_log_prob(x, model(x, y)).mean()
    return sum(seen.values())


def test_activation_memory_is_at_most_half():
    torch.manual_seed(0)
    model = ConditionalPixelCNN(in_channels=3, num_classes=4, nr_resnet=2, nr_filters=16, nr_logistic_mix=3).train()
    x, y = random_grid_images(2, 3, 16, 16, dtype=torch.float32), torch.tensor([0, 3])
    model.checkpoint_activations = False
    plain = saved_activation_bytes(model, x, y)
    model.checkpoint_activations = True
    kept = saved_activation_bytes(model, x, y)
    assert kept <= plain / 2, (kept, plain)


def test_the_training_flag_reaches_the_model(tmp_path):
    from cpixelcnn.training import TrainConfig, train
    from cpixelcnn.training.objectives import likelihood_loss

    seen = []

    def loss(forward, model, x, y, discriminative, backend):
        seen.append(model.checkpoint_activations)
        return likelihood_loss(forward, model, x, y, discriminative, backend)

    cfg = TrainConfig(data="demo", out=str(tmp_path / "run"), image_size=8, nr_resnet=1, nr_filters=4, nr_logistic_mix=2, batch_size=8, max_steps=1,
                      checkpoint_activations=True)  # fmt: skip
    train(cfg, log=lambda *a: None, loss=loss)
    assert seen == [True]
