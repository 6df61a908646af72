"""An image-folder tree: ``root/<class name>/*.png|jpg`` (classes sorted by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cpixelcnn.data.images import IMAGE_SUFFIXES, load_image
from cpixelcnn.data.registry import DataFormat, register
from cpixelcnn.data.types import DataError, Dataset


def load_image_folder(root: str | Path, size: int = 32, channels: int = 3, class_names: list[str] | None = None) -> Dataset:
    """``root/<class name>/*.png|jpg``; classes sorted by name, or ``class_names`` (a trained
    model's) — then a folder naming an unknown class is an error."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root} has no class folders (expected {root}/<class name>/*.png or the course layout with <split>.csv)")
    found = [p.name for p in folders]
    if class_names is None:
        class_names = found
    else:
        unknown = [name for name in found if name not in class_names]
        if unknown:
            raise DataError(f"{root}: class folder {unknown[0]!r} is not a class of this model ({', '.join(class_names)})")
    images, labels, files = [], [], []
    for folder in folders:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        for path in paths:
            images.append(load_image(path, size, channels))
            labels.append(class_names.index(folder.name))
            files.append(f"{folder.name}/{path.name}")
    return Dataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), list(class_names), files, layout="folders")


register(DataFormat("folders", "folder", "an image-folder FOLDER (<class>/*.png)", "one sub-folder of images per class; the whole tree is one split",
                    lambda r: load_image_folder(r.source, r.size, r.channels, r.class_names),
                    lambda source, split: False, recognises=lambda root: True, partial_classes=True, fallback=True))  # fmt: skip
