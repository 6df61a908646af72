"""Sampling temperature: mixture logits / T and logistic scales × T, sampled exactly on the bit grid;
T = 1 is the untempered sampler bit for bit; naive, cached CPU and the emulated CUDA kernels agree
at any T, for sampling and for completion."""

import math

import pytest
import torch

import cpixelcnn
from cpixelcnn import sample
from cpixelcnn.cli import main
from cpixelcnn.dmol_layout import LOG_SCALE_MIN
from cpixelcnn.ops.dmol import dmol_log_prob
from cpixelcnn.sampling import draw_noise, sample_pixel
from cpixelcnn.sampling.cached_sampler import cached_sample

from helpers import random_grid_images, tiny_model

needs_extension = pytest.mark.skipif(not cpixelcnn.extension_available(), reason="compiled extension not built")


def untempered_pixel(params, noise, channels, bits):
    """The pixel rule as it was before temperature existed (component by inverse CDF, then per colour
    m + s·logit(u) rounded to the grid), written out per row."""
    levels, k = 2**bits, params.shape[1] // (1 + channels * (3 if channels == 3 else 2))
    roles = 3 if channels == 3 else 2
    half = (levels - 1) / 2
    out = torch.empty(params.shape[0], channels, dtype=torch.float64)
    for r in range(params.shape[0]):
        p, u = params[r], noise[r]
        w = torch.exp(p[:k] - p[:k].max())
        cdf = torch.cumsum(w, 0)
        comp = min(int((cdf <= u[0] * cdf[-1]).sum()), k - 1)
        chosen = p[k:].view(channels, roles, k)[:, :, comp]
        for c in range(channels):
            mean = chosen[c, 0]
            if c == 1:
                mean = mean + torch.tanh(chosen[0, 2]) * out[r, 0]
            if c == 2:
                mean = mean + torch.tanh(chosen[1, 2]) * out[r, 0] + torch.tanh(chosen[2, 2]) * out[r, 1]
            draw = mean + torch.exp(chosen[c, 1].clamp(min=LOG_SCALE_MIN)) * (torch.log(u[1 + c]) - torch.log1p(-u[1 + c]))
            out[r, c] = torch.clamp(torch.round((draw + 1) * half), 0, levels - 1) / half - 1
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_temperature_one_is_the_untempered_rule_bit_for_bit(channels):
    g = torch.Generator().manual_seed(0)
    params = torch.randn(300, (1 + channels * (3 if channels == 3 else 2)) * 4, generator=g, dtype=torch.float64) * 2
    noise = torch.rand(300, 1 + channels, generator=g, dtype=torch.float64)
    assert torch.equal(sample_pixel(params, noise, channels, 8, temperature=1.0), untempered_pixel(params, noise, channels, 8))
    if cpixelcnn.extension_available():
        from cpixelcnn import _C

        assert torch.equal(_C.sample_pixel(params, noise, channels, 8), untempered_pixel(params, noise, channels, 8))
        for t in (1.0, 0.37, 2.5):  # the C++ rule (used by every cached engine) equals the Python one at any T
            assert torch.equal(_C.sample_pixel(params, noise, channels, 8, t), sample_pixel(params, noise, channels, 8, temperature=t))


@pytest.mark.parametrize("temperature", [0.5, 1.7])
def test_tempered_draws_follow_the_tempered_distribution_exactly(temperature):
    """Logits / T and log-scales + log T, fed to the likelihood, give each level's probability; the
    sampler's level frequencies match it (3 bits, 200k draws: total variation well under 1 %)."""
    n, bits = 200_000, 3
    logits, means, log_scales = torch.tensor([0.3, -0.8, 1.1]), torch.tensor([-0.5, 0.1, 0.6]), torch.tensor([-1.2, -0.7, -1.6])
    params = torch.cat([logits, means, log_scales]).double()
    draws = sample_pixel(params.expand(n, -1), torch.rand(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1, bits,
                         temperature=temperature)  # fmt: skip
    grid = torch.linspace(-1, 1, 2**bits, dtype=torch.float64)
    tempered = torch.cat([logits / temperature, means, log_scales + math.log(temperature)]).double()
    exact = dmol_log_prob(grid.view(-1, 1, 1, 1), tempered.view(1, -1, 1, 1).expand(2**bits, -1, 1, 1), bits=bits).exp()
    assert abs(float(exact.sum()) - 1) < 1e-12
    index = torch.round((draws[:, 0] + 1) * (2**bits - 1) / 2).long()
    freq = torch.bincount(index, minlength=2**bits).double() / n
    assert 0.5 * float((freq - exact).abs().sum()) < 0.006


def test_low_temperature_picks_the_likeliest_component_and_its_mean():
    params = torch.tensor([[0.1, 2.0, -1.0, 0.5, -0.3, 0.9, -2.0, -2.5, -3.0]], dtype=torch.float64)  # K=3, grey
    for u in torch.rand(20, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64).clamp(0.01, 0.99):
        value = sample_pixel(params, u[None], 1, 8, temperature=1e-6)
        assert float(value) == round((-0.3 + 1) * 127.5) / 127.5 - 1


@needs_extension
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.4])
@pytest.mark.parametrize("channels", [1, 3])
def test_naive_cached_and_emulated_cuda_agree_at_any_temperature(channels, temperature):
    model = tiny_model(in_channels=channels, nr_resnet=1, nr_logistic_mix=3)
    labels = torch.tensor([0, 3])
    naive = sample(model, labels, image_size=(6, 7), method="naive", generator=torch.Generator().manual_seed(2), temperature=temperature)
    cached = sample(model, labels, image_size=(6, 7), method="cached", generator=torch.Generator().manual_seed(2), temperature=temperature)
    noise = draw_noise(2, channels, 6, 7, torch.Generator().manual_seed(2))
    emulated = cached_sample(model, labels, 2, 6, 7, noise, engine="cuda-emulated", temperature=temperature)
    assert torch.equal(naive, cached) and torch.equal(naive, emulated)
    if temperature == 1.0:
        assert torch.equal(naive, sample(model, labels, image_size=(6, 7), generator=torch.Generator().manual_seed(2)))
    else:
        assert not torch.equal(naive, sample(model, labels, image_size=(6, 7), generator=torch.Generator().manual_seed(2)))


@needs_extension
def test_completion_at_a_temperature_agrees_across_engines_and_keeps_the_prefix():
    model = tiny_model(in_channels=3, nr_resnet=1, nr_logistic_mix=3)
    labels, n = torch.tensor([1, 2]), 20
    prefix = random_grid_images(2, 3, 6, 7, generator=torch.Generator().manual_seed(5))
    kw = dict(image_size=(6, 7), prefix=prefix, prefix_pixels=n, temperature=0.8)
    naive = sample(model, labels, method="naive", generator=torch.Generator().manual_seed(9), **kw)
    cached = sample(model, labels, method="cached", generator=torch.Generator().manual_seed(9), **kw)
    emulated = cached_sample(model, labels, 2, 6, 7, draw_noise(2, 3, 6, 7, torch.Generator().manual_seed(9)), engine="cuda-emulated", prefix=prefix,
                             prefix_pixels=n, temperature=0.8)  # fmt: skip
    assert torch.equal(naive, cached) and torch.equal(naive, emulated)
    assert torch.equal(naive.flatten(2)[:, :, :n], prefix.flatten(2)[:, :, :n])


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), 101.0, True, "1"])
def test_a_bad_temperature_is_one_line(bad):
    with pytest.raises(ValueError, match=r"temperature must be a number in \(0, 100\]"):
        sample(tiny_model(), torch.tensor([0]), image_size=(2, 2), temperature=bad)


def test_the_sample_and_complete_commands_take_a_temperature(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "demo", "--out", str(run), "--image-size", "8", "--nr-resnet", "1", "--nr-filters", "4", "--nr-mix", "2",
                 "--batch-size", "8", "--max-steps", "1"]) == 0  # fmt: skip
    assert main(["sample", "--checkpoint", str(run), "--n", "1", "--temperature", "0.7", "--out", str(tmp_path / "s.png")]) == 0
    assert (
        main(
            [
                "complete",
                "--checkpoint",
                str(run),
                "--data",
                "demo",
                "--rows",
                "4",
                "--n",
                "1",
                "--temperature",
                "0.7",
                "--out",
                str(tmp_path / "c.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "s.png").stat().st_size > 0 and (tmp_path / "c.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--temperature", "0", "--out", str(tmp_path / "z.png")]) == 2
    assert "temperature must be a number in (0, 100]" in capsys.readouterr().err and not (tmp_path / "z.png").exists()
