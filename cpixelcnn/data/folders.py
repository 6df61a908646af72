"""Folders of image files: an image-folder tree ``root/<class name>/*.png|jpg`` (classes sorted by
name), and a folder of images with no class sub-folders (unlabelled: ``root/*.png|jpg``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cpixelcnn.data.cache import CacheSetting
from cpixelcnn.data.images import IMAGE_SUFFIXES, decode_files, probe_files
from cpixelcnn.data.registry import DataFormat, Native, register
from cpixelcnn.data.types import DataError, Dataset


def load_image_folder(
    root: str | Path, size: int = 32, channels: int = 3, class_names: list[str] | None = None, cache: CacheSetting | None = None
) -> Dataset:
    """``root/<class name>/*.png|jpg``; classes sorted by name, or ``class_names`` (a trained
    model's) — then a folder naming an unknown class is an error."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(
            f"{root} has no class folders and no images (expected {root}/<class name>/*.png, {root}/*.png or the course layout with <split>.csv)"
        )
    found = [p.name for p in folders]
    if class_names is None:
        class_names = found
    else:
        unknown = [name for name in found if name not in class_names]
        if unknown:
            raise DataError(f"{root}: class folder {unknown[0]!r} is not a class of this model ({', '.join(class_names)})")
    files, counts = [], []
    for folder in folders:
        found = _image_names(folder)
        if not found:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files += [f"{folder.name}/{name}" for name in found]
        counts.append(len(found))
    images = decode_files(root, files, f"the image folders in {root}", "folders", size, channels, cache or CacheSetting())
    labels = torch.repeat_interleave(torch.tensor([class_names.index(folder.name) for folder in folders]), torch.tensor(counts))
    return Dataset(torch.from_numpy(images), labels, list(class_names), files, layout="folders")


def _image_names(root: Path) -> list[str]:
    """The names of the image files directly in ``root``, sorted (hidden files left out)."""
    with os.scandir(root) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())


def load_unlabelled_folder(
    root: str | Path, size: int = 32, channels: int = 3, class_names: list[str] | None = None, cache: CacheSetting | None = None
) -> Dataset:
    """``root/*.png|jpg``: images without labels (label -1), the classes ``class_names`` (a trained model's) or none."""
    root = Path(root)
    names = _image_names(root)
    if not names:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = decode_files(root, names, f"the images in {root}", "images", size, channels, cache or CacheSetting())
    return Dataset(torch.from_numpy(images), torch.full((len(names),), -1, dtype=torch.long), list(class_names or []), names, layout="images")


def _describe_tree(root: Path) -> Native:
    """The class folders, and the size and channels a few images of each share; no named splits."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [f"{folder.name}/{name}" for folder in folders for name in _image_names(folder)[:4]]
    return Native(*probe_files(root, files), [p.name for p in folders], ())


def _unlabelled(root: Path) -> bool:
    """Images directly in the folder and no visible sub-folder (a tree of classes is the other format)."""
    return not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()) and bool(_image_names(root))


register(
    DataFormat(
        "images",
        "folder",
        "a FOLDER of images without class sub-folders (unlabelled)",
        "images without labels; one split",
        lambda r: load_unlabelled_folder(r.source, r.size, r.channels, r.class_names, r.cache),
        lambda source, split: False,
        lambda source: Native(*probe_files(Path(source), _image_names(Path(source))), None, ()),
        recognises=_unlabelled,
        partial_classes=True,
        precedence=20,
    )
)

register(
    DataFormat(
        "folders",
        "folder",
        "an image-folder FOLDER (<class>/*.png)",
        "one sub-folder of images per class; the whole tree is one split",
        lambda r: load_image_folder(r.source, r.size, r.channels, r.class_names, r.cache),
        lambda source, split: False,
        lambda source: _describe_tree(Path(source)),
        recognises=lambda root: True,
        partial_classes=True,
        precedence=1000,  # the catch-all: any folder is a tree of class folders
    )
)
