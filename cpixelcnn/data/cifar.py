"""CIFAR-10 and CIFAR-100 read from the files users already have, in either published format.

- python version: ``cifar-10-batches-py/`` (``data_batch_1``…``5``, ``test_batch``,
  ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``): Python 2 pickles of
  dicts with bytes keys. A pickle can run code, so they are read by :class:`SafeUnpickler`, which
  admits numpy's array reconstruction and plain containers and refuses every other global.
- binary version: ``cifar-10-batches-bin/`` (records of 1 label byte + 3072 pixel bytes,
  ``batches.meta.txt``) and ``cifar-100-binary/`` (coarse and fine label bytes + 3072).

3072 pixel bytes are 1024 red, 1024 green, 1024 blue values, each a 32×32 image in row-major
order. Splits, labels and class names are the published ones (CIFAR-100: fine labels, or the 20
coarse superclasses with ``cifar100-coarse:``). Nothing is downloaded.
"""

from __future__ import annotations

import codecs
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch

from cpixelcnn.data.registry import DataFormat, Native, Request, register
from cpixelcnn.data.types import DataError, Dataset, fit

KINDS = ("cifar10", "cifar100", "cifar100-coarse")
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
SIDE = 32
RECORD_PIXELS = 3 * SIDE * SIDE

# Per data set: the python and binary folders, their archives, the files of each split and the
# class-name file. The binary CIFAR-100 records hold (coarse, fine) label bytes.
_FORMATS = {
    "cifar10": dict(
        python=(
            "cifar-10-batches-py",
            "cifar-10-python.tar.gz",
            {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
            "batches.meta",
        ),
        binary=(
            "cifar-10-batches-bin",
            "cifar-10-binary.tar.gz",
            {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
            "batches.meta.txt",
        ),
    ),
    "cifar100": dict(
        python=("cifar-100-python", "cifar-100-python.tar.gz", {"train": ["train"], "test": ["test"]}, "meta"),
        binary=("cifar-100-binary", "cifar-100-binary.tar.gz", {"train": ["train.bin"], "test": ["test.bin"]}, None),
    ),
}


class SafeUnpickler(pickle.Unpickler):
    """Admits only the globals a pickled numpy array needs (``_reconstruct``, ``ndarray``,
    ``dtype``, and ``_codecs.encode`` that Python 3 protocol-2 pickles use for bytes); anything
    else — ``os.system``, ``builtins.eval``, any class — is refused before it is looked up."""

    _RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array reconstructor, whichever module it lives in
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refuses {module}.{name} (only numpy arrays and plain containers are admitted)")


def _unpickle(path: Path) -> dict:
    """A CIFAR python-version file as a dict with str keys (bytes keys decoded)."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataError(
            f"{path} is not a plain CIFAR pickle: it {err}" if "refuses" in str(err) else f"{path} is not a CIFAR pickle: {err}"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OverflowError) as err:
        raise DataError(f"{path} is not a CIFAR pickle: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR pickle: it holds a {type(obj).__name__}, not a dict")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path):
    if key not in batch:
        raise DataError(f"{path} has no {key!r} entry (keys: {', '.join(sorted(map(str, batch)))})")
    return batch[key]


def _names(values, path: Path) -> list[str]:
    if not isinstance(values, (list, tuple)) or not values:
        raise DataError(f"{path}: the class names are not a list of names")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _pixels(data, path: Path) -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_PIXELS:
        what = f"{data.dtype} {tuple(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {RECORD_PIXELS}), got {what}")
    return data


def _read_python(folder: Path, files: list[str], meta: str, label_key: str, names_key: str):
    names = _names(_field(_unpickle(folder / meta), names_key, folder / meta), folder / meta)
    pixels, labels = [], []
    for name in files:
        batch = _unpickle(folder / name)
        data = _pixels(_field(batch, "data", folder / name), folder / name)
        batch_labels = np.asarray(_field(batch, label_key, folder / name))
        if batch_labels.shape != (data.shape[0],) or batch_labels.dtype.kind not in "iu":
            raise DataError(f"{folder / name}: {label_key!r} must be {data.shape[0]} integer labels, one per image")
        pixels.append(data)
        labels.append(batch_labels.astype(np.int64))
    return np.concatenate(pixels), np.concatenate(labels), names


def _read_binary(folder: Path, files: list[str], label_bytes: int, label_index: int, names: list[str]):
    record = label_bytes + RECORD_PIXELS
    pixels, labels = [], []
    for name in files:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{folder / name} is {raw.size} bytes, not a whole number of {record}-byte CIFAR records")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_index].astype(np.int64))
        pixels.append(rows[:, label_bytes:])
    return np.concatenate(pixels), np.concatenate(labels), names


def _names_file(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} is missing (the class names of the binary version)")
    names = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path} lists no class names")
    return names


def _base(kind: str) -> str:
    """The published data set a kind reads: cifar100-coarse is CIFAR-100's files with other labels."""
    return "cifar100" if kind.startswith("cifar100") else kind


def _locate(kind: str, root: Path) -> tuple[str, Path]:
    """("python" | "binary", folder): ``root`` itself or the published folder inside it."""
    base = _base(kind)
    for fmt, (folder, _, splits, _) in _FORMATS[base].items():
        for candidate in (root, root / folder):
            if all((candidate / f).is_file() for f in splits["train"] + splits["test"]):
                return fmt, candidate
    wanted = "; ".join(
        f"{folder}/ ({', '.join(splits['train'] + splits['test'])}) from {archive}" for folder, archive, splits, _ in _FORMATS[base].values()
    )
    raise DataError(
        f"no {base.upper().replace('CIFAR', 'CIFAR-')} files in {root}; nothing is downloaded: fetch and unpack either {wanted} from {URL}"
    )


def load_cifar(kind: str, root: str | Path, split: str, only_check: bool = False):
    """(images uint8 (N, 3, 32, 32), labels int64 (N,), class names) of the published ``split``
    (``train`` or ``test``) of ``kind`` (:data:`KINDS`) found in ``root`` (``only_check``: the
    request checked, nothing read)."""
    root = Path(root)
    if kind not in KINDS:
        raise DataError(f"unknown CIFAR data set {kind!r} (one of {', '.join(KINDS)})")
    if not root.is_dir():
        raise DataError(f"--data {kind}:{root}: folder {root} does not exist")
    if split not in ("train", "test"):
        raise DataError(f"{kind} has no {split} split (published: train, test); hold training images out with --val-split N")
    return None if only_check else _read_split(kind, root, split)


def _read_split(kind: str, root: Path, split: str, only: str | None = None):
    """:func:`load_cifar` of a checked request; ``only`` reads that one file of the split."""
    fmt, folder = _locate(kind, root)
    base = _base(kind)
    files, meta = _FORMATS[base][fmt][2][split], _FORMATS[base][fmt][3]
    files = [only] if only is not None else files
    coarse = kind == "cifar100-coarse"
    if fmt == "python":
        label_key = "labels" if base == "cifar10" else ("coarse_labels" if coarse else "fine_labels")
        names_key = "label_names" if base == "cifar10" else ("coarse_label_names" if coarse else "fine_label_names")
        pixels, labels, names = _read_python(folder, files, meta, label_key, names_key)
    elif base == "cifar10":
        pixels, labels, names = _read_binary(folder, files, 1, 0, _names_file(folder / meta))
    else:
        names = _names_file(folder / ("coarse_label_names.txt" if coarse else "fine_label_names.txt"))
        pixels, labels, names = _read_binary(folder, files, 2, 0 if coarse else 1, names)
    bad = (labels < 0) | (labels >= len(names))
    if bad.any():
        raise DataError(f"{folder}: label {int(labels[bad][0])} is outside 0..{len(names) - 1} (the {len(names)} class names)")
    images = torch.from_numpy(np.ascontiguousarray(pixels).reshape(-1, 3, SIDE, SIDE))
    return images, torch.from_numpy(labels), names


READER_VERSION = 1  # of what _CifarFile makes of a file (it names the data cache's entries)


@dataclasses.dataclass(frozen=True)
class _CifarFile:
    """A part of a decode job: one published file's images, fitted to the size and channels asked for."""

    kind: str
    root: str
    split: str
    name: str
    rows: int
    size: int
    channels: int

    def __call__(self, out: np.ndarray) -> None:
        images, _, _ = _read_split(self.kind, Path(self.root), self.split, only=self.name)
        out[:] = fit(images, self.size, self.channels).numpy()


def _load(kind: str, request: Request) -> Dataset:
    from cpixelcnn.data.cache import DecodeJob, fingerprint, materialise

    root = Path(request.source)
    load_cifar(kind, root, request.split, only_check=True)
    fmt, folder = _locate(kind, root)
    files = _FORMATS[_base(kind)][fmt][2][request.split]
    read = [_read_split(kind, root, request.split, only=name) for name in files]  # the labels (the images are the cache's)
    labels, names, counts = torch.cat([r[1] for r in read]), read[0][2], [len(r[1]) for r in read]
    del read
    size, channels = request.size, request.channels
    key = {
        "reader": f"{kind}/{fmt}",
        "version": READER_VERSION,
        "root": str(folder.resolve()),
        "split": request.split,
        "size": size,
        "channels": channels,
        "files": fingerprint(folder, files, "file"),
    }
    parts = [_CifarFile(kind, str(root), request.split, name, count, size, channels) for name, count in zip(files, counts)]
    images = materialise(DecodeJob(f"the {request.split} split of {kind}:{root}", key, (channels, size, size), parts, parallel=False), request.cache)
    return Dataset(torch.from_numpy(images), labels, names, layout=kind)


def _describe(kind: str, source: str) -> Native:
    """32x32 RGB, the published classes (read from the meta file alone), train and test."""
    root = Path(source)
    fmt, folder = _locate(kind, root)
    base, coarse = _base(kind), kind.endswith("coarse")
    if fmt == "python":
        meta = "batches.meta" if base == "cifar10" else "meta"
        key = "label_names" if base == "cifar10" else ("coarse_label_names" if coarse else "fine_label_names")
        names = _names(_field(_unpickle(folder / meta), key, folder / meta), folder / meta)
    elif base == "cifar10":
        names = _names_file(folder / "batches.meta.txt")
    else:
        names = _names_file(folder / ("coarse_label_names.txt" if coarse else "fine_label_names.txt"))
    return Native(32, 3, names, ("train", "test"))


HELP = {
    "cifar10": "CIFAR-10's published files (python or binary version) in DIR: 10 classes, train/test",
    "cifar100": "CIFAR-100's published files in DIR: the 100 fine classes, train/test",
    "cifar100-coarse": "CIFAR-100's published files in DIR: the 20 coarse superclasses, train/test",
}
for _kind in KINDS:
    register(
        DataFormat(
            _kind,
            "prefix",
            f"{_kind}:DIR",
            HELP[_kind],
            lambda r, kind=_kind: _load(kind, r),
            lambda source, split: split in ("train", "test"),
            lambda source, kind=_kind: _describe(kind, source),
        )
    )
