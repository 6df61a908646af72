"""Hugging Face datasets: ``hf:FOLDER`` (what ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
wrote; read offline) or ``hf:OWNER/NAME`` (a dataset on the Hub, such as ``uoft-cs/cifar10``;
needs the machine to be online, and downloads into the Hub's own cache). Needs the optional extra
``pip install 'cpixelcnn[hf]'`` (the ``datasets`` library).

The image column is the one named ``img`` or ``image``, else the first column of images; the label
column ``label`` or ``labels``, else the first class-label column (none: unlabelled). Name them
yourself after a ``?``: ``hf:uoft-cs/cifar100?label=coarse_label``, ``hf:FOLDER?image=photo&label=none``.
Class names come from the label column's ClassLabel feature (else the label values). A
DatasetDict's splits are ``train``, ``validation`` (also called ``valid`` or ``val``) and ``test``;
a single saved Dataset is the train split. The images' encoded bytes are decoded once, by every
core, into the data cache (keyed by the dataset's Arrow files).
"""

from __future__ import annotations

import dataclasses
import io
import urllib.parse
from pathlib import Path

import numpy as np
import torch

from cpixelcnn.data.images import decode_image, probe_images
from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import SPLITS, DataError, Dataset
from cpixelcnn.notices import first_line

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "valid", "val"), "test": ("test",)}
IMAGE_COLUMNS, LABEL_COLUMNS = ("img", "image"), ("label", "labels")
READER_VERSION = 1
PART_ROWS = 1024


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("--data hf:… needs the datasets library (pip install 'cpixelcnn[hf]')") from None
    return datasets


def _parse(source: str) -> tuple[str, dict[str, str]]:
    """(the folder or Hub name, the columns named after ``?``)."""
    where, _, query = source.partition("?")
    named = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if key not in ("image", "label"):
            raise DataError(f"--data hf:{source}: unknown option {key!r} after '?' (image=COLUMN, label=COLUMN or label=none)")
        named[key] = value
    if not where:
        raise DataError("--data hf: names no folder or Hub dataset (hf:FOLDER or hf:OWNER/NAME)")
    return where, named


def _open_split(where: str, split: str):
    """The ``split`` of a saved folder or a Hub dataset, as a datasets.Dataset."""
    datasets = _datasets()
    if Path(where).exists():
        try:
            saved = datasets.load_from_disk(where)
        except Exception as err:  # noqa: BLE001 - whatever datasets raises for a folder it cannot read
            raise DataError(f"cannot read the saved Hugging Face dataset {where}: {type(err).__name__}: {first_line(err)}") from None
        if isinstance(saved, datasets.DatasetDict):
            name = next((n for n in SPLIT_NAMES[split] if n in saved), None)
            if name is None:
                raise DataError(f"{where} has no {split} split (it has {', '.join(saved)})")
            return saved[name]
        if split != "train":
            raise DataError(f"{where} is a single saved dataset: it is the train split (hold images out with --val-split N)")
        return saved
    names = _hub_splits(where)
    name = next((n for n in SPLIT_NAMES[split] if n in names), None)
    if name is None:
        raise DataError(f"the Hub dataset {where} has no {split} split (it has {', '.join(names)})")
    try:
        return datasets.load_dataset(where, split=name)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot load the Hub dataset {where} ({name}): {type(err).__name__}: {first_line(err)}") from None


def _hub_splits(where: str) -> list[str]:
    try:
        return list(_datasets().get_dataset_split_names(where))
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - offline, unknown name, ...
        raise DataError(
            f"--data hf:{where}: no such folder, and the Hub dataset cannot be reached ({type(err).__name__}: {first_line(err)})"
        ) from None


def _columns(ds, named: dict[str, str], where: str) -> tuple[str, str | None]:
    """(image column, label column or None) of ``ds``: named, else found by name or by feature type."""
    datasets = _datasets()
    features = ds.features
    image = named.get("image") or next((c for c in IMAGE_COLUMNS if c in features), None)
    image = image or next((c for c, f in features.items() if isinstance(f, datasets.Image)), None)
    if image is None or image not in features:
        raise DataError(
            f"{where}: no image column {image!r}"
            if image
            else f"{where}: no column of images (columns: {', '.join(features)}); name one with ?image=COLUMN"
        )
    label = named.get("label")
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in features), None) or next(
            (c for c, f in features.items() if isinstance(f, datasets.ClassLabel)), None
        )
    elif label.lower() == "none":
        label = None
    elif label not in features:
        raise DataError(f"{where}: no label column {label!r} (columns: {', '.join(features)})")
    return image, label


def _cell_bytes(cell) -> bytes | None:
    """The encoded image of an undecoded Image cell: its bytes, or its file's; None if it has neither."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if data is None and isinstance(cell, dict) and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    return data


@dataclasses.dataclass(frozen=True)
class _Rows:
    """A part of a decode job: the encoded images of rows [start, stop) of a dataset (inherited by forked workers)."""

    dataset: object
    column: str
    start: int
    stop: int
    size: int
    channels: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def __call__(self, out: np.ndarray) -> None:
        for i, cell in enumerate(self.dataset[self.start : self.stop][self.column]):
            name = f"row {self.start + i} of column {self.column}"
            data = _cell_bytes(cell)
            if data is None:
                raise DataError(f"{name} holds no image")
            decode_image(data, name, self.size, self.channels, out[i])


def load_hf(request: Request) -> Dataset:
    """The ``request.split`` of ``hf:`` ``request.source`` (module docstring)."""
    from cpixelcnn.data.cache import DecodeJob, fingerprint, materialise

    datasets = _datasets()
    where, named = _parse(request.source)
    ds = _open_split(where, request.split)
    image, label = _columns(ds, named, where)
    if label is not None:
        labels = np.asarray(ds.select_columns([label]).with_format("numpy")[0 : len(ds)][label])
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{where}: the label column {label!r} holds {labels.dtype} values, not class indices")
        feature = ds.features[label]
        names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else [str(i) for i in range(int(labels.max(initial=-1)) + 1)]
        labels = labels.astype(np.int64)
        if ((labels < -1) | (labels >= len(names))).any():
            raise DataError(f"{where}: a label of column {label!r} is outside 0..{len(names) - 1}")
    else:
        labels, names = np.full(len(ds), -1, dtype=np.int64), list(request.class_names or [])
    files = sorted(f["filename"] for f in ds.cache_files)
    key = {
        "reader": "hf",
        "version": READER_VERSION,
        "source": where,
        "split": request.split,
        "column": image,
        "size": request.size,
        "channels": request.channels,
        "files": fingerprint(Path("/"), [f.lstrip("/") for f in files], "file") if files else getattr(ds, "_fingerprint", ""),
    }
    raw = ds.cast_column(image, datasets.Image(decode=False)).select_columns([image])
    parts = [_Rows(raw, image, i, min(i + PART_ROWS, len(ds)), request.size, request.channels) for i in range(0, len(ds), PART_ROWS)]
    images = materialise(
        DecodeJob(f"the {request.split} split of hf:{where}", key, (request.channels, request.size, request.size), parts), request.cache
    )
    return Dataset(torch.from_numpy(images), torch.from_numpy(labels), names, layout="hf")


def _has_split(source: str, split: str) -> bool:
    where, _ = _parse(source)
    path = Path(where)
    if path.is_dir():
        listed = path / "dataset_dict.json"
        if not listed.is_file():
            return split == "train"
        return any((path / name).is_dir() for name in SPLIT_NAMES[split])
    try:
        return any(name in _hub_splits(where) for name in SPLIT_NAMES[split])
    except DataError:
        return False


def _describe(source: str) -> Native:
    """The training split's (else the first split's) image size and channels from its first rows,
    its classes (a ClassLabel column's names), and the splits present."""
    datasets = _datasets()
    where, named = _parse(source)
    splits = tuple(split for split in SPLITS if _has_split(source, split))
    ds = _open_split(where, splits[0] if splits and "train" not in splits else "train")
    image, label = _columns(ds, named, where)
    cells = ds.cast_column(image, datasets.Image(decode=False)).select(range(min(8, len(ds))))[image]
    side, channels = probe_images(io.BytesIO(_cell_bytes(cell) or b"") for cell in cells)
    feature = ds.features[label] if label is not None else None
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if label is not None and names is None:
        names = [str(i) for i in range(int(np.asarray(ds[label]).max(initial=-1)) + 1)]
    return Native(side, channels, names, splits)


register(
    DataFormat(
        "hf",
        "prefix",
        "hf:FOLDER or hf:OWNER/NAME",
        "a Hugging Face dataset: a save_to_disk FOLDER, or a Hub name where the machine is online (needs cpixelcnn[hf]); "
        "columns found, or named as hf:SOURCE?image=COL&label=COL",
        load_hf,
        _has_split,
        _describe,
        partial_classes=False,
    )
)
