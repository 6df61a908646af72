"""``--data demo``, the built-in procedural data set: 4 classes of 32×32 RGB images, generated deterministically.

No download, no files: the demo and the tests train on it. Classes differ in structure (what a
PixelCNN must model) and draw their two colours from one shared palette of 8, so a Bayes
classifier has to use shape, not colour statistics:

- ``stripes``: horizontal bands of two colours
- ``checker``: a checkerboard of two colours
- ``disc``: a filled disc on a background
- ``diagonal``: a two-colour split along a diagonal
"""

from __future__ import annotations

import numpy as np
import torch

from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import SPLITS, Dataset

BUILTIN_CLASSES = ("stripes", "checker", "disc", "diagonal")


PALETTE = np.array(
    [[230, 60, 50], [250, 200, 40], [60, 170, 80], [40, 110, 220], [240, 240, 235], [30, 30, 35], [150, 80, 190], [250, 140, 30]],
    dtype=np.uint8,
)


def _image(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    fg, bg = PALETTE[rng.choice(len(PALETTE), size=2, replace=False)]
    rows, cols = np.mgrid[0:size, 0:size]
    if kind == 0:
        period = int(rng.integers(4, 9))
        mask = ((rows + int(rng.integers(0, period))) // (period // 2 or 1)) % 2 == 0
    elif kind == 1:
        cell = int(rng.integers(3, 7))
        mask = ((rows // cell) + (cols // cell)) % 2 == 0
    elif kind == 2:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, size=2)
        radius = rng.uniform(size * 0.15, size * 0.35)
        mask = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    else:
        offset = int(rng.integers(-size // 3, size // 3 + 1))
        mask = (rows - cols) > offset if rng.random() < 0.5 else (rows + cols) > size + offset
    img = np.where(mask[None], fg[:, None, None], bg[:, None, None])
    return img.astype(np.uint8)


def builtin_dataset(n_per_class: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Make ``n_per_class`` images of every class.

    Returns (images uint8 (N, 3, size, size), labels int64 (N,), class names), N = 4·n_per_class,
    classes interleaved. The same (n_per_class, size, seed) always gives the same data.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be a positive integer, got {n_per_class!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n_per_class):
        for kind in range(len(BUILTIN_CLASSES)):
            images.append(_image(kind, rng, size))
            labels.append(kind)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), list(BUILTIN_CLASSES)


SPLIT_SIZES = {"train": 300, "validation": 25, "test": 25}  # images per class


def _load(request: Request) -> Dataset:
    """Each split is its own deterministic draw (seed + 1000 · split index): no image is shared."""
    images, labels, names = builtin_dataset(SPLIT_SIZES[request.split], size=request.size, seed=request.seed + SPLITS.index(request.split) * 1000)
    if request.channels == 1:
        images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    return Dataset(images, labels, names, layout="builtin")


register(
    DataFormat(
        "demo",
        "builtin",
        "demo",
        "the built-in shapes: 4 classes (stripes, checker, disc, diagonal), 300/25/25 per class",
        _load,
        lambda source, split: split in SPLITS,
        lambda source: Native(None, 3, list(BUILTIN_CLASSES), tuple(SPLITS)),  # drawn at any size
    )
)
