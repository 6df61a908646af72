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


MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused before decoding (PIL's decompression-bomb guard)


def _to_8bit(img):
    """16-bit grey (PIL modes I;16*, I) → 8-bit L, scaled (not clipped): v·255/65535 rounded. The
    data pipeline is 8-bit; models of fewer bits quantize further when they read it."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "I" or values.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8), mode="L")
    return img


def _flatten_alpha(img):
    """Transparent pixels are composited onto white (as image viewers show them)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img


def _load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (C, size, size): EXIF orientation applied, 16-bit grey scaled to 8 bits,
    alpha composited onto white, the centred square cropped first and then resized (so a very
    long image never becomes a huge intermediate)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise DataError(f"image {path} is {img.width}x{img.height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed (a decompression bomb?)")
                img = ImageOps.exif_transpose(img)
                img = _flatten_alpha(_to_8bit(img))
                img = img.convert("RGB" if channels == 3 else "L")
                side = min(img.size)
                if side < 1:
                    raise DataError(f"image {path} is empty ({img.width}x{img.height})")
                left, top = (img.width - side) // 2, (img.height - side) // 2
                img = img.crop((left, top, left + side, top + side))
                if side != size:
                    img = img.resize((size, size), Image.BICUBIC)
                arr = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_names_file(root: Path) -> list[str] | None:
    for name in NAMES_FILES:
        path = root / name
        if path.is_file():
            try:
                names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            except UnicodeDecodeError:
                raise DataError(f"{path} is not UTF-8 text") from None
            if not names:
                raise DataError(f"{path} lists no class names")
            if len(set(names)) != len(names):
                raise DataError(f"{path} lists a class name twice")
            if len(names) > MAX_CLASSES:
                raise DataError(f"{path} lists {len(names)} classes, more than {MAX_CLASSES}")
            return names
    return None


MAX_CLASSES = 10_000


def _read_course_csv(csv_path: Path, split: str) -> list[tuple[str, int]]:
    """Rows (file name, label) of ``<split>.csv``: UTF-8 (a BOM is tolerated); every name a plain
    file name inside ``<split>/`` (no folders, no ``..``, no absolute paths), none listed twice."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{csv_path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        name, label = parts[0], -1
        if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise DataError(f"{csv_path}:{lineno}: {name!r} is not a file name inside {split}/ (no folders, '..' or absolute paths)")
        if name in seen:
            raise DataError(f"{csv_path}:{lineno}: {name} is listed twice (first on line {seen[name]})")
        seen[name] = lineno
        if len(parts) > 1 and parts[1] not in ("", "-1"):
            try:
                label = int(parts[1])
            except ValueError:
                raise DataError(f"{csv_path}:{lineno}: label {parts[1]!r} is not an integer") from None
            if not 0 <= label < MAX_CLASSES:
                raise DataError(f"{csv_path}:{lineno}: label {label} is outside 0..{MAX_CLASSES - 1} (-1 or empty means unknown)")
        rows.append((name, label))
    if not rows:
        raise DataError(f"{csv_path} lists no images")
    return rows


def course_class_names(root: str | Path, model_classes: list[str] | None = None) -> list[str]:
    """The course layout's classes: ``classes.txt`` (one name per line), else ``Class0``…``ClassK-1``
    with K = 1 + the largest label of the *training* split — the same for every split; a folder
    with neither (e.g. only the test split) takes ``model_classes``, the classes of the model reading it."""
    root = Path(root)
    names = _read_names_file(root)
    if names:
        return names
    train_csv = root / "train.csv"
    labels = [lbl for _, lbl in _read_course_csv(train_csv, "train") if lbl >= 0] if train_csv.is_file() else []
    if labels:
        return [f"Class{i}" for i in range(max(labels) + 1)]
    if model_classes is not None:
        return list(model_classes)
    raise DataError(f"{root}: no classes.txt and no labelled train.csv to count the classes from; add classes.txt (one class name per line)")


def load_course_split(root: str | Path, split: str, size: int = 32, channels: int = 3, class_names: list[str] | None = None) -> Dataset:
    """The CPEN 455 layout: ``root/<split>.csv`` (no header; rows ``0000000.jpg,1``) and images in
    ``root/<split>/``. A missing label, or -1, means unknown (the test split). Class names come from
    :func:`course_class_names` (``classes.txt``, else counted on the training split)."""
    root = Path(root)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path} does not exist (splits: {', '.join(s for s in SPLITS if (root / f'{s}.csv').is_file()) or 'none'})")
    rows = _read_course_csv(csv_path, split)
    names = course_class_names(root, class_names)
    for name, label in rows:
        if label >= len(names):
            raise DataError(f"{csv_path}: {name} has label {label}, outside 0..{len(names) - 1} (the classes: {', '.join(names[:8])}{'…' if len(names) > 8 else ''})")
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


HOLDOUT_SEED = 0  # held-out images are the same for every training seed


def load_dataset(data: str, split: str = "train", size: int = 32, channels: int = 3, class_names: list[str] | None = None, seed: int = 0,
                 holdout: int = 0) -> Dataset:  # fmt: skip
    """``data`` is ``"demo"`` (the built-in set; split train/validation/test), a packaged real-image
    set (``digits``, ``textures``, ``micrographs``: see :mod:`cpixelcnn.packaged_data`), CIFAR
    (``cifar10:DIR``, ``cifar100:DIR``, ``cifar100-coarse:DIR``: see :mod:`cpixelcnn.cifar`), a
    course-layout folder (``<split>.csv`` inside) or an image-folder tree.

    ``holdout`` N > 0 carves N images out of the training split, reproducibly (a permutation with a
    fixed seed): ``"validation"`` is then those N and ``"train"`` the rest; ``"test"`` is unchanged."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not holdout or split == "test":
        return _load_split(data, split, size, channels, class_names, seed)
    full = _load_split(data, "train", size, channels, class_names, seed)
    if not 0 < holdout < len(full):
        raise DataError(f"--val-split {holdout}: the training split of {data} has {len(full)} images; hold out fewer")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    keep = (order[:holdout] if split == "validation" else order[holdout:]).sort().values
    return Dataset(full.images[keep], full.labels[keep], full.class_names, [full.files[i] for i in keep.tolist()], layout=full.layout)


def _fit(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) → (N, channels, size, size): luma grey, bicubic (antialiased) resize on the 8-bit grid."""
    from cpixelcnn.packaged_data import _grey

    if channels == 1:
        images = _grey(images)
    if images.shape[-1] != size:
        resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images


def _load_split(data: str, split: str, size: int, channels: int, class_names: list[str] | None, seed: int) -> Dataset:
    from cpixelcnn.cifar import KINDS, load_cifar

    builtin = data.removeprefix("builtin:")
    kind, colon, folder = data.partition(":")
    if data == builtin and builtin in ("demo", *PACKAGED) and Path(data).is_dir():
        raise DataError(f"--data {data} is both a built-in data set and a folder here: write ./{data} for the folder or builtin:{data} for the built-in set")
    if colon and kind in KINDS:
        images, labels, names = load_cifar(kind, folder, split)
        ds = Dataset(_fit(images, size, channels), labels, names, layout=kind)
    elif builtin in PACKAGED:
        images, labels, names = load_packaged(builtin, split, size, channels, seed=0)
        ds = Dataset(images, labels, names, layout="packaged")
    elif builtin == "demo":
        n = {"train": 300, "validation": 25, "test": 25}[split]
        images, labels, names = builtin_dataset(n, size=size, seed=seed + SPLITS.index(split) * 1000)
        if channels == 1:
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
        ds = Dataset(images, labels, names, layout="builtin")
    elif data != builtin:
        raise DataError(f"--data {data}: no such built-in data set (builtin:demo, {', '.join('builtin:' + p for p in PACKAGED)})")
    else:
        root = Path(data)
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist")
        if not any((root / f"{s}.csv").is_file() for s in SPLITS):
            return load_image_folder(root, size, channels, class_names)
        ds = load_course_split(root, split, size, channels, class_names)
    if class_names is not None and list(class_names) != list(ds.class_names):
        raise DataError(f"--data {data} has classes ({', '.join(ds.class_names[:8])}) but the model has ({', '.join(list(class_names)[:8])})")
    return ds


def mutate(images: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each value of uint8 images (B, C, H, W) with probability ``rate`` by a uniformly
    random level 0..255 — the perturbation Ren et al. (2019) train a likelihood-ratio background
    model with, so that it learns generic statistics rather than the data's semantics."""
    if not rate:
        return images
    hit = torch.rand(images.shape, generator=generator) < rate
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(hit, noise, images)


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
