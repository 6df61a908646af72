"""Small CIFAR files written byte for byte in the published formats.

The python version was written by Python 2's cPickle (protocol 2) with numpy 1.x: str keys and
values are SHORT_BINSTRING/BINSTRING opcodes (bytes under ``encoding="bytes"``), and the array is
``numpy.core.multiarray._reconstruct`` + ``ndarray.__setstate__`` with the raw pixel bytes. Python 3's
pickle cannot write that (it writes bytes through ``_codecs.encode``), so the opcodes are emitted here.
"""

import struct
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_COARSE = [f"superclass_{i}" for i in range(20)]
CIFAR100_FINE = [f"fine_{i}" for i in range(100)]


def _py2(obj) -> bytes:
    """One object as Python 2 cPickle protocol 2 opcodes (dicts, lists, str as bytes, ints, uint8 arrays)."""
    if isinstance(obj, str):
        obj = obj.encode("latin1")
    if isinstance(obj, bytes):
        return (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    if obj is None:
        return b"N"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, tuple):
        return b"(" + b"".join(map(_py2, obj)) + b"t"
    if isinstance(obj, list):
        return b"]" + (b"(" + b"".join(map(_py2, obj)) + b"e" if obj else b"")
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, np.ndarray):
        assert obj.dtype == np.uint8
        dtype = b"cnumpy\ndtype\n" + _py2(("u1", 0, 1)) + b"R" + _py2((3, "|", None, None, None, -1, -1, 0)) + b"b"
        state = b"(" + _py2(1) + _py2(tuple(obj.shape)) + dtype + _py2(False) + _py2(obj.tobytes()) + b"t"
        return b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2((0,)) + _py2("b") + b"\x87R" + state + b"b"
    raise TypeError(type(obj))


def py2_pickle(obj) -> bytes:
    return b"\x80\x02" + _py2(obj) + b"."


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows of random pixels (so a layout mistake changes the images)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10_python(root: Path, per_batch: int = 4, n_test: int = 3) -> dict:
    """``root/cifar-10-batches-py`` with 5 training batches and a test batch; returns what was written."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    for i, name in enumerate([f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data, labels = cifar_images(n, seed=i), [(i * 3 + j) % 10 for j in range(n)]
        batch = {"batch_label": f"batch {i + 1} of 5", "labels": labels, "data": data, "filenames": [f"img_{i}_{j}.png" for j in range(n)]}
        (folder / name).write_bytes(py2_pickle(batch))
        split = "test" if name == "test_batch" else "train"
        written[split][0].append(data)
        written[split][1].extend(labels)
    (folder / "batches.meta").write_bytes(py2_pickle({"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072}))
    return {k: (np.concatenate(d), np.array(lbl)) for k, (d, lbl) in written.items()}


def write_cifar100_python(root: Path, n_train: int = 6, n_test: int = 3) -> dict:
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        data = cifar_images(n, seed=10 + i)
        fine = [(7 * j + i) % 100 for j in range(n)]
        coarse = [f // 5 for f in fine]
        batch = {"filenames": [f"f{j}.png" for j in range(n)], "batch_label": f"{split}ing batch 1 of 1", "fine_labels": fine,
                 "coarse_labels": coarse, "data": data}  # fmt: skip
        (folder / split).write_bytes(py2_pickle(batch))
        written[split] = (data, np.array(fine), np.array(coarse))
    (folder / "meta").write_bytes(py2_pickle({"fine_label_names": CIFAR100_FINE, "coarse_label_names": CIFAR100_COARSE}))
    return written


def write_cifar10_binary(root: Path, per_batch: int = 4, n_test: int = 3) -> dict:
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    written = {"train": ([], []), "test": ([], [])}
    for i, name in enumerate([f"data_batch_{b}.bin" for b in range(1, 6)] + ["test_batch.bin"]):
        n = n_test if name == "test_batch.bin" else per_batch
        data, labels = cifar_images(n, seed=20 + i), np.array([(i + 2 * j) % 10 for j in range(n)], dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], data], axis=1).tobytes())
        split = "test" if name == "test_batch.bin" else "train"
        written[split][0].append(data)
        written[split][1].extend(labels.tolist())
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_NAMES) + "\n\n")
    return {k: (np.concatenate(d), np.array(lbl)) for k, (d, lbl) in written.items()}


def write_cifar100_binary(root: Path, n_train: int = 6, n_test: int = 3) -> dict:
    folder = Path(root) / "cifar-100-binary"
    folder.mkdir(parents=True)
    written = {}
    for i, (name, split, n) in enumerate((("train.bin", "train", n_train), ("test.bin", "test", n_test))):
        data = cifar_images(n, seed=30 + i)
        fine = np.array([(11 * j + i) % 100 for j in range(n)], dtype=np.uint8)
        coarse = fine // 5
        (folder / name).write_bytes(np.concatenate([coarse[:, None], fine[:, None], data], axis=1).tobytes())
        written[split] = (data, fine.astype(np.int64), coarse.astype(np.int64))
    (folder / "fine_label_names.txt").write_text("\n".join(CIFAR100_FINE) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(CIFAR100_COARSE) + "\n")
    return written
