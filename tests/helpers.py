"""Helpers shared by the tests (fixtures are in conftest.py): small models and images, data
layouts written to disk, and losses that misbehave on cue (injected through the Trainer)."""

import numpy as np
import pytest
import torch
from PIL import Image

from cpixelcnn import ConditionalPixelCNN
from cpixelcnn.data import builtin_dataset
from cpixelcnn.training.objectives import likelihood_loss

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Triton kernel tests run on real GPU kernels when there is a GPU, else in the interpreter on CPU
KERNEL_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def tiny_model(
    in_channels=3,
    num_classes=4,
    conditioning="film",
    fusion="middle",
    embedding="onehot",
    nr_resnet=1,
    nr_filters=4,
    nr_logistic_mix=2,
    dtype=torch.float64,
    perturb=True,
    **kw,
):
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
    return idx.to(dtype) * 2 / (levels - 1) - 1


def make_course_layout(root, n_per_split=(8, 4, 4), size=12):
    """A small copy of the CPEN 455 layout from built-in images (test labels unknown)."""
    images, labels, _ = builtin_dataset(sum(n_per_split), size=size)
    start = 0
    for split, n in zip(("train", "validation", "test"), n_per_split):
        (root / split).mkdir(parents=True)
        rows = []
        for i in range(start, start + n):
            name = f"{i:07d}.jpg"
            Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(root / split / name, quality=95)
            rows.append(f"{name},{int(labels[i])}" if split != "test" else f"{name},-1")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
        start += n
    return root


def make_folders(root, classes=("cats", "dogs"), n=3, size=10):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((size + c, size, 3), 40 * c + i, dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def loss_that(nan_at=(), interrupt_at=(), before=None):
    """The training loss, misbehaving on the given 1-based calls: NaN (``nan_at``) or Ctrl-C
    (``interrupt_at``); ``before(n)`` runs before call n (e.g. to fill a disk)."""
    calls = {"n": 0}

    def loss(*args, **kwargs):
        calls["n"] += 1
        if before is not None:
            before(calls["n"])
        if calls["n"] in interrupt_at:
            raise KeyboardInterrupt
        out = likelihood_loss(*args, **kwargs)
        return out * float("nan") if calls["n"] in nan_at else out

    loss.calls = calls
    return loss
