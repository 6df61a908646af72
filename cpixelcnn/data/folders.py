"""Folders of image files: an image-folder tree ``root/<class name>/*.png|jpg`` (classes sorted by
name), and a folder of images with no class sub-folders (unlabelled: ``root/*.png|jpg``)."""

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
        raise DataError(f"{root} has no class folders and no images (expected {root}/<class name>/*.png, {root}/*.png or the course layout "
                        "with <split>.csv)")  # fmt: skip
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


def _image_paths(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def load_unlabelled_folder(root: str | Path, size: int = 32, channels: int = 3, class_names: list[str] | None = None) -> Dataset:
    """``root/*.png|jpg``: images without labels (label -1), the classes ``class_names`` (a trained model's) or none."""
    root = Path(root)
    paths = _image_paths(root)
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = np.stack([load_image(path, size, channels) for path in paths])
    return Dataset(torch.from_numpy(images), torch.full((len(paths),), -1, dtype=torch.long), list(class_names or []), [p.name for p in paths],
                   layout="images")  # fmt: skip


def _unlabelled(root: Path) -> bool:
    """Images directly in the folder and no visible sub-folder (a tree of classes is the other format)."""
    return not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()) and bool(_image_paths(root))


register(DataFormat("images", "folder", "a FOLDER of images without class sub-folders (unlabelled)", "images without labels; one split",
                    lambda r: load_unlabelled_folder(r.source, r.size, r.channels, r.class_names),
                    lambda source, split: False, recognises=_unlabelled, partial_classes=True))  # fmt: skip

register(DataFormat("folders", "folder", "an image-folder FOLDER (<class>/*.png)", "one sub-folder of images per class; the whole tree is one split",
                    lambda r: load_image_folder(r.source, r.size, r.channels, r.class_names),
                    lambda source, split: False, recognises=lambda root: True, partial_classes=True, fallback=True))  # fmt: skip
