"""Real images that ship inside installed packages (nothing is downloaded), as data sets:

- ``digits``: scikit-learn's handwritten digits — 1,797 grey 8×8 images, 10 classes, 17 grey
  levels (0–16, stored as round(v·255/16)). Split 70/15/15 by a fixed permutation.
- ``textures``: patches of scikit-image's grey photographs ``brick``, ``grass``, ``gravel``
  (class = source photograph).
- ``micrographs``: patches of scikit-image's colour images ``hubble_deep_field``,
  ``immunohistochemistry``, ``retina``.

Patches are non-overlapping ``size``×``size`` tiles; training tiles come from the top 70 % of
each photograph's rows, validation and test tiles from two disjoint bands below it, so held-out
patches never overlap a training patch. Every class gets the same number of tiles per split (the
smallest photograph's count), chosen by a fixed random draw. Needs ``pip install 'cpixelcnn[real-data]'``.
"""

from __future__ import annotations

import numpy as np
import torch

from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import SPLITS, DataError, Dataset, to_grey

PACKAGED = ("digits", "textures", "micrographs")
SOURCES = {"textures": ("brick", "grass", "gravel"), "micrographs": ("hubble_deep_field", "immunohistochemistry", "retina")}
BANDS = {"train": (0.0, 0.7), "validation": (0.7, 0.85), "test": (0.85, 1.0)}


def load_packaged(name: str, split: str, size: int, channels: int, seed: int = 0):
    """(images uint8 (N, C, size, size), labels (N,), class names) of a packaged data set's split."""
    if name == "digits":
        images, labels, names = _digits(split, size)
    else:
        images, labels, names = _patches(name, split, size, seed)
    images = torch.from_numpy(images)
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    elif images.shape[1] == 3 and channels == 1:
        images = to_grey(images)
    if images.shape[0] == 0:
        raise DataError(f"{name}: no {size}x{size} patches in the {split} split; use a smaller --image-size")
    return images, torch.from_numpy(labels).long(), names


def _digits(split: str, size: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn (pip install 'cpixelcnn[real-data]')") from None
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    n = len(order)
    start, stop = (int(round(f * n)) for f in BANDS[split])
    pick = order[start:stop]
    images = np.round(digits.images[pick] * (255 / 16)).astype(np.uint8)[:, None]
    if size != 8:  # asked for: resized as an image file of 8x8 would be (bicubic)
        from cpixelcnn.data.images import fit_pixels

        images = fit_pixels(np.repeat(images, 3, axis=1), size, 1)
    return images, digits.target[pick].astype(np.int64), [str(d) for d in range(10)]


def _patches(name: str, split: str, size: int, seed: int):
    try:
        from skimage import data as skdata
    except ImportError:
        raise DataError(f"--data {name} needs scikit-image (pip install 'cpixelcnn[real-data]')") from None
    per_class = []
    for source in SOURCES[name]:
        photo = getattr(skdata, source)()
        photo = photo[None] if photo.ndim == 2 else photo.transpose(2, 0, 1)
        per_class.append(_tiles(photo, split, size))
    count = min(len(t) for t in per_class)
    rng = np.random.default_rng(seed + 1)
    images, labels = [], []
    for label, tiles in enumerate(per_class):
        keep = np.sort(rng.permutation(len(tiles))[:count])
        images.append(tiles[keep])
        labels.append(np.full(count, label, dtype=np.int64))
    order = np.argsort(np.tile(np.arange(count), len(per_class)), kind="stable")  # classes interleaved
    return np.concatenate(images)[order], np.concatenate(labels)[order], list(SOURCES[name])


def _tiles(photo: np.ndarray, split: str, size: int) -> np.ndarray:
    """Non-overlapping size×size tiles (N, C, size, size) whose rows lie inside the split's band."""
    c, h, w = photo.shape
    top, bottom = (int(f * h) for f in BANDS[split])
    rows = range(top, bottom - size + 1, size)
    cols = range(0, w - size + 1, size)
    tiles = [photo[:, r : r + size, q : q + size] for r in rows for q in cols]
    return np.stack(tiles) if tiles else np.zeros((0, c, size, size), dtype=np.uint8)


NATIVE = {  # patches are cut at any size; the photographs' own channels
    "digits": Native(8, 1, [str(d) for d in range(10)], tuple(SPLITS)),
    "textures": Native(None, 1, list(SOURCES["textures"]), tuple(SPLITS)),
    "micrographs": Native(None, 3, list(SOURCES["micrographs"]), tuple(SPLITS)),
}
HELP = {
    "digits": "scikit-learn's handwritten digits: 1,797 grey 8x8 images, 10 classes",
    "textures": "patches of scikit-image's brick, grass and gravel photographs: 3 classes",
    "micrographs": "patches of scikit-image's hubble_deep_field, immunohistochemistry and retina images: 3 classes",
}


def _load(name: str, request: Request) -> Dataset:
    images, labels, names = load_packaged(name, request.split, request.size, request.channels)
    return Dataset(images, labels, names, layout="packaged")


for _name in PACKAGED:
    register(
        DataFormat(
            _name,
            "builtin",
            _name,
            HELP[_name],
            lambda r, name=_name: _load(name, r),
            lambda source, split: split in SPLITS,
            lambda source, name=_name: NATIVE[name],
        )
    )
