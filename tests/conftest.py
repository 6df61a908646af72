import os

import torch

if not torch.cuda.is_available():  # run the Triton kernels on CPU tensors (must precede their import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from cpixelcnn import ConditionalPixelCNN  # noqa: E402

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Triton kernel tests run on real GPU kernels when there is a GPU, else in the interpreter on CPU
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tiny_model(in_channels=3, num_classes=4, conditioning="film", fusion="middle", embedding="onehot", nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dtype=torch.float64, perturb=True, **kw):
    """A small model in float64 with dropout off; ``perturb`` makes the conditioning heads
    non-zero so the label actually changes the output."""
    model = ConditionalPixelCNN(
        in_channels=in_channels, num_classes=num_classes, nr_resnet=nr_resnet, nr_filters=nr_filters,
        nr_logistic_mix=nr_logistic_mix, conditioning=conditioning, fusion=fusion, embedding=embedding,
        dropout=0.0, **kw,
    ).to(dtype)  # fmt: skip
    if perturb:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "cond_head" in name:
                    p.normal_(0.0, 0.5)
    return model.eval()


def random_grid_images(b, c, h, w, bits=8, dtype=torch.float64, generator=None):
    levels = 2**bits
    idx = torch.randint(0, levels, (b, c, h, w), generator=generator)
    return (idx.to(dtype) * 2 / (levels - 1) - 1)
