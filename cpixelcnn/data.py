"""Built-in procedural data set: 4 classes of 32×32 RGB images, generated deterministically.

No download, no files: the demo and the tests train on it. Classes differ in structure (what a
PixelCNN must model) and draw their two colours from one shared palette of 8, so a Bayes
classifier has to use shape, not colour statistics:

- ``stripes``: horizontal bands of two colours
- ``checker``: a checkerboard of two colours
- ``disc``: a filled disc on a background
- ``diagonal``: a two-colour split along a diagonal
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cpixelcnn.packaged_data import PACKAGED, load_packaged

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


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [-1, 1] on the 8-bit grid."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] → uint8."""
    return torch.round((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).to(torch.uint8)


# -- data on disk ---------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SPLITS = ("train", "validation", "test")
NAMES_FILES = ("classes.txt", "names.txt")


class DataError(ValueError):
    """A data set that cannot be read as asked (one line, naming the file or folder)."""


class Dataset:
    """Images in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,) with -1 for unknown,
    ``files`` the source names (for prediction CSVs), ``class_names``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], files: list[str] | None = None, layout: str = "builtin"):
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.files = files if files is not None else [f"{i:07d}" for i in range(len(labels))]
        self.layout = layout

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).all()) and len(self) > 0


def _load_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (size, size):  # shorter side to `size`, then a centred square crop
                scale = size / min(img.size)
                img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
                left, top = (img.width - size) // 2, (img.height - size) // 2
                img = img.crop((left, top, left + size, top + size))
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_names_file(root: Path) -> list[str] | None:
    for name in NAMES_FILES:
        path = root / name
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if not names:
                raise DataError(f"{path} lists no class names")
            return names
    return None


def load_course_split(root: str | Path, split: str, size: int = 32, channels: int = 3) -> Dataset:
    """The CPEN 455 layout: ``root/<split>.csv`` (no header; rows ``0000000.jpg,1``) and images in
    ``root/<split>/``. A missing label, or -1, means unknown (the test split). Class names are
    ``Class0``… unless ``root/classes.txt`` lists them, one per line."""
    root = Path(root)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} does not exist (splits: {', '.join(s for s in SPLITS if (root / f'{s}.csv').is_file()) or 'none'})")
    rows = []
    for lineno, line in enumerate(csv_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        label = -1
        if len(parts) > 1 and parts[1] not in ("", "-1"):
            try:
                label = int(parts[1])
            except ValueError:
                raise DataError(f"{csv_path}:{lineno}: label {parts[1]!r} is not an integer") from None
        rows.append((parts[0], label))
    if not rows:
        raise DataError(f"{csv_path} lists no images")
    names = _read_names_file(root)
    n_classes = len(names) if names else max(4, max(lbl for _, lbl in rows) + 1)
    names = names or [f"Class{i}" for i in range(n_classes)]
    for name, label in rows:
        if label >= n_classes or label < -1:
            raise DataError(f"{csv_path}: {name} has label {label}, outside 0..{n_classes - 1}")
    images = [_load_image(root / split / name, size, channels) for name, _ in rows]
    labels = torch.tensor([lbl for _, lbl in rows], dtype=torch.long)
    return Dataset(torch.from_numpy(np.stack(images)), labels, names, [n for n, _ in rows], layout="course")


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
            images.append(_load_image(path, size, channels))
            labels.append(class_names.index(folder.name))
            files.append(f"{folder.name}/{path.name}")
    return Dataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), list(class_names), files, layout="folders")


def load_dataset(data: str, split: str = "train", size: int = 32, channels: int = 3, class_names: list[str] | None = None, seed: int = 0) -> Dataset:
    """``data`` is ``"demo"`` (the built-in set; split train/validation/test), a packaged real-image
    set (``digits``, ``textures``, ``micrographs``: see :mod:`cpixelcnn.packaged_data`), a
    course-layout folder (``<split>.csv`` inside) or an image-folder tree."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if data in PACKAGED:
        images, labels, names = load_packaged(data, split, size, channels, seed=0)
        if class_names is not None and list(class_names) != names:
            raise DataError(f"--data {data} has classes ({', '.join(names)}) but the model has ({', '.join(class_names)})")
        return Dataset(images, labels, names, layout="packaged")
    if data == "demo":
        n = {"train": 300, "validation": 25, "test": 25}[split]
        images, labels, names = builtin_dataset(n, size=size, seed=seed + SPLITS.index(split) * 1000)
        if channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        return Dataset(images, labels, names, layout="builtin")
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if any((root / f"{s}.csv").is_file() for s in SPLITS):
        ds = load_course_split(root, split, size, channels)
        if class_names is not None and len(ds.class_names) != len(class_names):
            raise DataError(f"{root} has {len(ds.class_names)} classes but the model has {len(class_names)}")
        if class_names is not None:
            ds.class_names = list(class_names)
        return ds
    return load_image_folder(root, size, channels, class_names)


def augment(images: torch.Tensor, generator: torch.Generator, flip: bool = True, jitter: int = 16) -> torch.Tensor:
    """Training augmentation on uint8 (B, C, H, W): random horizontal flips and a per-image,
    per-channel brightness shift of up to ±jitter levels; results stay on the 8-bit grid."""
    out = images
    if flip:
        flips = torch.rand(images.shape[0], generator=generator) < 0.5
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    if jitter:
        shift = torch.randint(-jitter, jitter + 1, (images.shape[0], images.shape[1], 1, 1), generator=generator)
        out = (out.to(torch.int16) + shift).clamp(0, 255).to(torch.uint8)
    return out
