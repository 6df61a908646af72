"""Image completion: the first n pixels given, the rest sampled — naive, cached and the emulated
CUDA kernels agree, given pixels are kept exactly, and bad input is refused clearly."""

import pytest
import torch

import cpixelcnn
from cpixelcnn import sample
from cpixelcnn.sampling import draw_noise
from cpixelcnn.sampling.cached_sampler import cached_sample

from helpers import random_grid_images, tiny_model

needs_extension = pytest.mark.skipif(not cpixelcnn.extension_available(), reason="compiled extension not built")


@needs_extension
@pytest.mark.parametrize("channels,conditioning", [(3, "film"), (1, "additive")])
@pytest.mark.parametrize("n", [0, 1, 23, 63])
def test_naive_cached_and_emulated_cuda_complete_identically(channels, conditioning, n):
    model = tiny_model(in_channels=channels, conditioning=conditioning, nr_resnet=2, nr_logistic_mix=3)
    labels = torch.tensor([0, 3])
    prefix = random_grid_images(2, channels, 7, 9, generator=torch.Generator().manual_seed(5))
    naive = sample(model, labels, image_size=(7, 9), method="naive", generator=torch.Generator().manual_seed(1), prefix=prefix, prefix_pixels=n)
    cached = sample(model, labels, image_size=(7, 9), method="cached", generator=torch.Generator().manual_seed(1), prefix=prefix, prefix_pixels=n)
    noise = draw_noise(2, channels, 7, 9, torch.Generator().manual_seed(1))
    emulated = cached_sample(model, labels, 2, 7, 9, noise, engine="cuda-emulated", prefix=prefix, prefix_pixels=n)
    assert torch.equal(naive, cached) and torch.equal(naive, emulated)
    flat = naive.flatten(2)
    assert torch.equal(flat[:, :, :n], prefix.flatten(2)[:, :, :n])  # given pixels kept exactly
    if n < 63:
        assert not torch.equal(flat[:, :, n:], prefix.flatten(2)[:, :, n:])  # the rest is sampled, not copied


@pytest.mark.parametrize("method", ["naive", pytest.param("cached", marks=needs_extension)])
def test_completing_a_sample_from_its_own_start_reproduces_it(method):
    """Same generator: the given pixels are the ones it would have drawn, the rest use the same noise."""
    model = tiny_model(nr_resnet=1, nr_logistic_mix=2)
    labels = torch.tensor([1, 2, 0])
    full = sample(model, labels, image_size=(5, 6), method=method, generator=torch.Generator().manual_seed(9))
    for n in (1, 14, 30):
        again = sample(model, labels, image_size=(5, 6), method=method, generator=torch.Generator().manual_seed(9), prefix=full, prefix_pixels=n)
        assert torch.equal(again, full)


def test_all_pixels_given_returns_the_prefix_and_prefix_changes_the_rest():
    model = tiny_model(nr_resnet=1)
    labels = torch.tensor([0, 1])
    prefix = random_grid_images(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(sample(model, labels, image_size=(4, 4), prefix=prefix, prefix_pixels=16), prefix)
    other = random_grid_images(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    a = sample(model, labels, image_size=(4, 4), generator=torch.Generator().manual_seed(0), prefix=prefix, prefix_pixels=8)
    b = sample(model, labels, image_size=(4, 4), generator=torch.Generator().manual_seed(0), prefix=other, prefix_pixels=8)
    assert not torch.equal(a.flatten(2)[:, :, 8:], b.flatten(2)[:, :, 8:])  # the model conditions on the given pixels


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(prefix_pixels=-1), r"prefix_pixels must be an integer in \[0, H·W\] = \[0, 12\], got -1"),
        (dict(prefix_pixels=13), r"prefix_pixels must be an integer in \[0, H·W\] = \[0, 12\], got 13"),
        (dict(prefix_pixels=True), r"prefix_pixels must be an integer"),
        (dict(prefix_pixels=3), r"prefix_pixels=3 needs the prefix images"),
        (dict(prefix=torch.zeros(2, 3, 4, 4), prefix_pixels=3), r"prefix must be a \(B, C, H, W\) = \(2, 3, 3, 4\) tensor, got \(2, 3, 4, 4\)"),
        (dict(prefix=torch.full((2, 3, 3, 4), 0.001), prefix_pixels=3), r"prefix: has values off the 8-bit grid"),
        (dict(prefix=torch.full((2, 3, 3, 4), 2.0), prefix_pixels=3), r"prefix: has values outside \[-1, 1\]"),
    ],
)
def test_bad_completion_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample(tiny_model(), torch.tensor([0, 1]), image_size=(3, 4), **kwargs)
