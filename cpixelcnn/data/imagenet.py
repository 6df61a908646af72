"""Downsampled ImageNet in the two layouts it is published in. Nothing is downloaded.

- ``imagenet8:DIR``, ``imagenet16:DIR``, ``imagenet32:DIR``, ``imagenet64:DIR``: the npz batches of
  Chrabaszcz, Loshchilov and Hutter (2017) — ``train_data_batch_1.npz`` … ``_10.npz`` and
  ``val_data.npz``, in DIR or in folders directly inside it (the 64 px training batches come in
  two archives). Each holds ``data``, uint8 (N, 3·S·S) with all red values of an image first, then
  green, then blue, and ``labels`` 1..1000 in the release's own class order (``mean`` is not an
  image and is not read). Labels become 0-based; the class names are the release's ids "1".."1000".
  Splits: train, validation (``val_data.npz``). An npz cannot be mapped, so its rows are streamed
  (a chunk at a time, never a whole batch in memory) into the data cache once, by every core.
- van den Oord et al.'s (2016) small ImageNet, as openai/pixel-cnn reads it: a folder holding
  ``train_32x32/`` and ``valid_32x32/`` (or ``_64x64``) of unlabelled PNGs. Splits: train,
  validation. Bits/dim are not comparable between the two versions.
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from cpixelcnn.data.images import IMAGE_SUFFIXES, decode_files, fit_pixels
from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import DataError, Dataset
from cpixelcnn.notices import first_line

SIDES = (8, 16, 32, 64)
TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
VALIDATION_FILE = "val_data.npz"
CLASSES = 1000
READER_VERSION = 1  # of what _NpzBatch makes of a file (it names the data cache's entries)
CHUNK = 4096  # images read from an npz at a time
URL = "https://image-net.org/download-images.php (Downsampled ImageNet, npz format)"


def _files(side: int, root: Path, split: str) -> list[Path]:
    """The split's npz files, in DIR or in the folders directly inside it (each found once)."""
    if not root.is_dir():
        raise DataError(f"--data imagenet{side}:{root}: folder {root} does not exist")
    if split not in ("train", "validation"):
        raise DataError(f"imagenet{side} has no {split} split (published: train, validation): use --split validation")
    wanted = TRAIN_FILES if split == "train" else (VALIDATION_FILE,)
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    found: dict[str, Path] = {}
    for name in wanted:
        places = [folder / name for folder in folders if (folder / name).is_file()]
        if len(places) > 1:
            raise DataError(f"{name} is in {places[0].parent} and in {places[1].parent}: keep one")
        if places:
            found[name] = places[0]
    missing = [name for name in wanted if name not in found]
    if missing:
        raise DataError(
            f"imagenet{side}:{root}: {', '.join(missing)} not found in {root} or the folders in it; nothing is downloaded: "
            f"unpack the Imagenet{side} {'training' if split == 'train' else 'validation'} archive(s) from {URL} there"
        )
    return [found[name] for name in wanted]


def _read_labels(path: Path) -> np.ndarray:
    """The ``labels`` of one npz batch, 0-based (N,) int64; a file that is not such a batch is a one-line DataError."""
    try:
        with np.load(path, allow_pickle=False) as batch:
            if "labels" not in batch.files or "data" not in batch.files:
                raise DataError(f"{path} is not a downsampled-ImageNet batch: it holds {', '.join(batch.files) or 'nothing'} (expected data, labels)")
            labels = batch["labels"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"cannot read {path} (truncated or not an npz file?): {type(err).__name__}: {first_line(err)}") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be integers, one per image, got {labels.dtype} {labels.shape}")
    bad = (labels < 1) | (labels > CLASSES)
    if bad.any():
        raise DataError(f"{path}: label {int(labels[bad][0])} of image {int(np.argmax(bad))} is outside 1..{CLASSES}")
    return labels.astype(np.int64) - 1


class _Member:
    """A streamed ``.npy`` member of an npz: ``shape``, ``dtype``, and :meth:`read` of whole rows."""

    def __init__(self, path: Path, key: str):
        self.path = path
        self.archive = zipfile.ZipFile(path)
        self.file = self.archive.open(f"{key}.npy")
        version = np.lib.format.read_magic(self.file)
        if version == (1, 0):
            self.shape, fortran, self.dtype = np.lib.format.read_array_header_1_0(self.file)
        elif version == (2, 0):
            self.shape, fortran, self.dtype = np.lib.format.read_array_header_2_0(self.file)
        else:
            raise ValueError(f"npy format version {version} is not read here")
        if fortran or self.dtype.hasobject:
            raise ValueError("the array is stored column-major or holds Python objects")

    def read(self, rows: int) -> np.ndarray:
        width = int(np.prod(self.shape[1:]))
        data = self.file.read(rows * width * self.dtype.itemsize)
        if len(data) != rows * width * self.dtype.itemsize:
            raise EOFError(f"the data end after {len(data)} of {rows * width * self.dtype.itemsize} bytes")
        return np.frombuffer(data, dtype=self.dtype).reshape(rows, width)

    def check_end(self) -> None:
        if self.file.read(1):  # reading to the end also checks the member's CRC
            raise ValueError("more data than the array's header says")

    def close(self) -> None:
        self.file.close()
        self.archive.close()


def _data_header(path: Path, side: int, count: int) -> None:
    """``data`` must be uint8 (count, 3·side·side); the message names the size it does hold."""
    try:
        member = _Member(path, "data")
        shape, dtype = member.shape, member.dtype
        member.close()
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"cannot read the data of {path} (truncated or not an npz file?): {type(err).__name__}: {first_line(err)}") from None
    width = 3 * side * side
    if dtype != np.uint8 or len(shape) != 2 or shape[1] != width:
        held = next((f" (it holds imagenet{s}: use --data imagenet{s}:DIR)" for s in SIDES if len(shape) == 2 and shape[1] == 3 * s * s), "")
        raise DataError(f"{path}: 'data' must be uint8 of shape (N, {width}) for imagenet{side}, got {dtype} {tuple(shape)}{held}")
    if shape[0] != count:
        raise DataError(f"{path}: 'data' holds {shape[0]} images but 'labels' {count}")


@dataclasses.dataclass(frozen=True)
class _NpzBatch:
    """A part of a decode job: one npz batch's images, streamed a chunk at a time into ``out``."""

    path: str
    rows: int
    side: int
    size: int
    channels: int

    def __call__(self, out: np.ndarray) -> None:
        path = Path(self.path)
        try:
            member = _Member(path, "data")
            try:
                for start in range(0, self.rows, CHUNK):
                    n = min(CHUNK, self.rows - start)
                    out[start : start + n] = fit_pixels(member.read(n).reshape(n, 3, self.side, self.side), self.size, self.channels)
                member.check_end()
            finally:
                member.close()
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"cannot read the data of {path} (truncated or corrupt?): {type(err).__name__}: {first_line(err)}") from None


def load_imagenet_npz(side: int, request: Request) -> Dataset:
    """The ``request.split`` of the npz batches for ``side`` px in ``request.source``."""
    from cpixelcnn.data.cache import DecodeJob, fingerprint, materialise

    root = Path(request.source)
    paths = _files(side, root, request.split)
    labels = [_read_labels(path) for path in paths]
    for path, batch_labels in zip(paths, labels):
        _data_header(path, side, len(batch_labels))
    size, channels = request.size, request.channels
    key = {
        "reader": f"imagenet{side}-npz",
        "version": READER_VERSION,
        "root": str(root.resolve()),
        "split": request.split,
        "size": size,
        "channels": channels,
        "files": fingerprint(root, [str(p.relative_to(root)) for p in paths], "file"),
    }
    parts = [_NpzBatch(str(path), len(batch_labels), side, size, channels) for path, batch_labels in zip(paths, labels)]
    images = materialise(DecodeJob(f"the {request.split} split of imagenet{side}:{root}", key, (channels, size, size), parts), request.cache)
    return Dataset(
        torch.from_numpy(images), torch.from_numpy(np.concatenate(labels)), [str(i) for i in range(1, CLASSES + 1)], layout=f"imagenet{side}"
    )


# -- van den Oord's small ImageNet: train_32x32/ and valid_32x32/ ---------------------------------

_FOLDER = re.compile(r"(train|valid)_(\d+)x(\d+)$")
_SPLIT_FOLDER = {"train": "train", "validation": "valid"}


def _small_imagenet_folders(root: Path) -> dict[tuple[str, int], Path]:
    """{(train|valid, side): folder} of the square ``<split>_<S>x<S>`` folders in ``root``."""
    found = {}
    for p in root.iterdir():
        match = _FOLDER.match(p.name)
        if match and match.group(2) == match.group(3) and p.is_dir():
            found[(match.group(1), int(match.group(2)))] = p
    return found


def load_small_imagenet(request: Request) -> Dataset:
    """The ``train_SxS`` or ``valid_SxS`` PNGs of ``request.source``: S the image size asked for when
    that folder exists, else the largest there is (resized). Unlabelled."""
    root = Path(request.source)
    if request.split not in _SPLIT_FOLDER:
        raise DataError(f"{root} has no {request.split} split (train_SxS/ and valid_SxS/: train, validation)")
    prefix = _SPLIT_FOLDER[request.split]
    sides = sorted(side for kind, side in _small_imagenet_folders(root) if kind == prefix)
    if not sides:
        raise DataError(f"{root} has no {prefix}_SxS folder for the {request.split} split")
    side = request.size if request.size in sides else sides[-1]
    folder = root / f"{prefix}_{side}x{side}"
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not names:
        raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images = decode_files(folder, names, f"{folder}", "small-imagenet", request.size, request.channels, request.cache)
    return Dataset(
        torch.from_numpy(images), torch.full((len(names),), -1, dtype=torch.long), list(request.class_names or []), names, layout="small-imagenet"
    )


def _describe_small(root: Path) -> Native:
    """The largest SxS of the training folders (or validation's), RGB, unlabelled, the splits present."""
    found = _small_imagenet_folders(root)
    splits = tuple(split for split, prefix in _SPLIT_FOLDER.items() if any(kind == prefix for kind, _ in found))
    sides = sorted(side for kind, side in found if kind == "train") or sorted(side for _, side in found)
    return Native(sides[-1], 3, None, splits)


for _side in SIDES:
    register(
        DataFormat(
            f"imagenet{_side}",
            "prefix",
            f"imagenet{_side}:DIR",
            f"downsampled ImageNet's {_side}x{_side} npz batches in DIR (train_data_batch_1..10.npz, val_data.npz): 1000 classes, train/validation",
            lambda r, side=_side: load_imagenet_npz(side, r),
            lambda source, split: split in ("train", "validation"),
            lambda source, side=_side: Native(side, 3, [str(i) for i in range(1, CLASSES + 1)], ("train", "validation")),
        )
    )

register(
    DataFormat(
        "small-imagenet",
        "folder",
        "a FOLDER with train_32x32/ and valid_32x32/ (van den Oord's small ImageNet)",
        "unlabelled PNG folders train_SxS/ and valid_SxS/ (S = 32 or 64): train/validation",
        load_small_imagenet,
        lambda source, split: split in _SPLIT_FOLDER and any(kind == _SPLIT_FOLDER[split] for kind, _ in _small_imagenet_folders(Path(source))),
        lambda source: _describe_small(Path(source)),
        recognises=lambda root: bool(_small_imagenet_folders(root)),
        partial_classes=True,
        precedence=30,
    )
)
