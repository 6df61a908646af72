"""The whole model through the Triton kernels equals the eager reference (interpreter on CPU)."""

import pytest
import torch

from cpixelcnn import ConditionalPixelCNN, dmol_log_prob

from helpers import KERNEL_DEVICE, random_grid_images, requires_cuda, tiny_model


@pytest.mark.parametrize("conditioning,channels", [("film", 3), ("additive", 1)])
def test_model_forward_backward_triton_equals_eager(conditioning, channels):
    model = tiny_model(in_channels=channels, conditioning=conditioning, nr_filters=4, nr_logistic_mix=3).to(KERNEL_DEVICE)
    x, y = random_grid_images(2, channels, 5, 6).to(KERNEL_DEVICE), torch.tensor([1, 3], device=KERNEL_DEVICE)

    def run(backend):
        model.backend = backend
        model.zero_grad()
        loss = -dmol_log_prob(x, model(x, y), backend=backend).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref_loss, ref_grads = run("eager")
    loss, grads = run("triton")
    assert torch.allclose(loss, ref_loss, rtol=1e-12)
    assert len(grads) == len(ref_grads)
    for g, rg in zip(grads, ref_grads):
        assert torch.allclose(g, rg, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_training_loss_curves_agree_step_by_step():
    """20 Adam steps from the same seed and data: eager and Triton losses agree at float32 precision."""
    data = random_grid_images(16, 3, 8, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(1)).to(KERNEL_DEVICE)
    labels = (torch.arange(16) % 4).to(KERNEL_DEVICE)

    def train(backend):
        torch.manual_seed(42)
        model = ConditionalPixelCNN(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, dropout=0.0, backend=backend).to(KERNEL_DEVICE)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        losses = []
        for step in range(20):
            idx = torch.arange(4, device=KERNEL_DEVICE) + 4 * (step % 4)
            loss = -dmol_log_prob(data[idx], model(data[idx], labels[idx]), backend=backend).mean() / (3 * 64)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return torch.tensor(losses)

    eager, triton = train("eager"), train("triton")
    assert eager[-1] < eager[0]  # it learns
    assert torch.allclose(triton, eager, rtol=1e-4, atol=1e-5), (eager, triton)


def test_torch_compile_without_graph_breaks():
    """fullgraph=True fails on any graph break: the custom ops trace through their fake impls."""
    model = tiny_model(nr_filters=4, backend="triton", dtype=torch.float32).to(KERNEL_DEVICE)
    x, y = random_grid_images(2, 3, 4, 4, dtype=torch.float32).to(KERNEL_DEVICE), torch.tensor([0, 2], device=KERNEL_DEVICE)

    def loss_fn(x, y):
        return -dmol_log_prob(x, model(x, y), backend="triton").sum()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    ref = loss_fn(x, y)
    out = compiled(x, y)
    out.backward()
    assert torch.allclose(out, ref, rtol=1e-6)
    assert model.nin_out.conv.parametrizations.weight.original1.grad is not None


def test_backend_switch_at_run_time_and_auto_on_cpu():
    model = tiny_model().to(KERNEL_DEVICE)
    x, y = random_grid_images(1, 3, 4, 4).to(KERNEL_DEVICE), torch.tensor([1], device=KERNEL_DEVICE)
    ref = model(x, y)
    model.backend = "triton"
    assert torch.allclose(model(x, y), ref, rtol=1e-12)
    model.backend = "auto"  # Triton on a GPU tensor, the eager path on a CPU tensor
    assert torch.allclose(model(x, y), ref, rtol=1e-12)


@requires_cuda
@pytest.mark.gpu
def test_bf16_training_converges_like_eager_on_gpu():
    data = random_grid_images(64, 3, 16, 16, dtype=torch.float32, generator=torch.Generator().manual_seed(1)).cuda()
    labels = (torch.arange(64) % 4).cuda()

    def train(backend):
        torch.manual_seed(0)
        model = ConditionalPixelCNN(nr_resnet=2, nr_filters=32, nr_logistic_mix=5, dropout=0.0, backend=backend).cuda()
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        losses = []
        for step in range(60):
            idx = torch.arange(16, device="cuda") + 16 * (step % 4)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                params = model(data[idx], labels[idx])
            loss = -dmol_log_prob(data[idx], params, backend=backend).mean() / (3 * 256)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return torch.tensor(losses)

    eager, triton = train("eager"), train("triton")
    assert triton[-10:].mean() < triton[:5].mean()
    assert abs(triton[-10:].mean() - eager[-10:].mean()) < 0.05 * eager[-10:].mean()
