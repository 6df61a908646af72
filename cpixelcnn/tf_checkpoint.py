"""TensorFlow V2 checkpoints read without TensorFlow: the tensor bundle that ``tf.train.Saver``
writes as ``PREFIX.index`` + ``PREFIX.data-00000-of-0000N``.

- ``PREFIX.index`` is a LevelDB-format table (data blocks, an index block, a 48-byte footer ending
  in the table magic): the empty key holds a ``BundleHeaderProto`` (shards, endianness), every
  other key is a tensor's name and holds its ``BundleEntryProto`` (dtype, shape, shard, offset,
  size, the CRC-32C of its bytes).
- ``PREFIX.data-SSSSS-of-NNNNN`` holds the raw little-endian tensors at those offsets.

The few protobuf fields needed are decoded here by hand (varints and length-delimited fields), so
neither TensorFlow nor protobuf is needed; every read is bounds-checked and every tensor's CRC is
verified, so a truncated or damaged file is a one-line :class:`CheckpointError` naming the file.
No public library reads this format without TensorFlow (rosinality's and others' converters
import it), hence this small reader.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER = 48
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64, 10: np.bool_, 19: np.float16, 17: np.uint16}


class CheckpointError(ValueError):
    """A file that is not a readable TensorFlow V2 checkpoint (the message names it and what is wrong)."""


# -- CRC-32C ----------------------------------------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data, value: int = 0) -> int:
    """CRC-32C of ``data`` (the compiled extension's, else a byte-at-a-time Python loop)."""
    from cpixelcnn._extension import _C

    if _C is not None and hasattr(_C, "crc32c"):
        return _C.crc32c(data, value)
    crc, table = value ^ 0xFFFFFFFF, _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def unmask(masked: int) -> int:
    """LevelDB's and TensorFlow's stored CRCs are masked (rotated and offset); this undoes it."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# -- protobuf and table primitives --------------------------------------------------------------------


def _varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CheckpointError(f"{what}: a number runs past the end of its record")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, what: str):
    """(field number, wire type, value) of a serialised protobuf message."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, what)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, what)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise CheckpointError(f"{what}: not a protobuf record (wire type {wire})")
        if pos > len(buf):
            raise CheckpointError(f"{what}: a field runs past the end of its record")
        yield number, wire, value


def _block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    """A table block's contents, its trailer (compression byte, masked CRC-32C) checked."""
    if offset + size + 5 > len(data):
        raise CheckpointError(f"{path}: truncated (a block at byte {offset:,} runs past the end)")
    contents, kind = data[offset : offset + size], data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if crc32c(data[offset : offset + size + 1]) != unmask(stored):
        raise CheckpointError(f"{path}: damaged (the block at byte {offset:,} fails its checksum)")
    if kind != 0:
        raise CheckpointError(f"{path}: a compressed table block (type {kind}); TensorFlow's bundles are uncompressed")
    return contents


def _entries(block: bytes, path: Path):
    """(key, value) of a table block (keys prefix-compressed against the previous one)."""
    if len(block) < 4:
        raise CheckpointError(f"{path}: damaged (a block too short for its restart array)")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise CheckpointError(f"{path}: damaged (a block's restart array is longer than the block)")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, str(path))
        unshared, pos = _varint(block, pos, str(path))
        length, pos = _varint(block, pos, str(path))
        if shared > len(key) or pos + unshared + length > end:
            raise CheckpointError(f"{path}: damaged (a key or value runs past its block)")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _handle(buf: bytes, pos: int, path: Path) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, str(path))
    size, pos = _varint(buf, pos, str(path))
    return offset, size, pos


# -- the bundle -------------------------------------------------------------------------------------


def index_file(prefix: str | os.PathLike) -> Path:
    """The index file of a checkpoint named by its prefix (``params_cifar.ckpt``; the ``.index``,
    ``.meta`` or a ``.data-…`` file's own name works too). One line for what is missing."""
    text = str(prefix)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if ".data-" in Path(text).name:
        text = text[: text.rindex(".data-")]
    base = Path(text)
    index = base.with_name(base.name + ".index")
    if not index.is_file():
        if base.is_file():
            raise CheckpointError(
                f"{base} is a single-file (V1) TensorFlow checkpoint; this reads the V2 format (PREFIX.index + PREFIX.data-*): "
                "re-save it with tf.compat.v1.train.Saver() on TensorFlow 1.x or 2.x"
            )
        if base.with_name(base.name + ".meta").is_file():
            raise CheckpointError(
                f"{base}.meta is a graph without weights: the weights are in {base}.index and {base}.data-00000-of-0000N, which are missing"
            )
        raise CheckpointError(f"{index} does not exist (a TensorFlow checkpoint is PREFIX.index + PREFIX.data-00000-of-0000N; give PREFIX)")
    return index


def read_index(prefix: str | os.PathLike) -> tuple[Path, dict[str, dict]]:
    """(the index file, {tensor name: its entry: dtype, shape, shard, offset, size, crc, and the
    path of its data shard}), every shard file it names checked to exist."""
    index = index_file(prefix)
    data = index.read_bytes()
    if len(data) < FOOTER:
        raise CheckpointError(f"{index}: truncated ({len(data)} bytes; a table ends in a {FOOTER}-byte footer)")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"{index} is not a TensorFlow checkpoint index (no table magic at its end)")
    footer = data[len(data) - FOOTER :]
    _, _, pos = _handle(footer, 0, index)  # the meta-index (unused)
    offset, size, _ = _handle(footer, pos, index)
    header, entries = None, {}
    for _, value in _entries(_block(data, offset, size, index), index):
        block_offset, block_size, _ = _handle(value, 0, index)
        for key, record in _entries(_block(data, block_offset, block_size, index), index):
            if key == b"":
                header = _header(record, index)
            else:
                entries[key.decode("utf-8", errors="replace")] = _entry(record, key, index)
    if header is None:
        raise CheckpointError(f"{index} holds no bundle header (not a TensorFlow V2 checkpoint)")
    shards = header["shards"]
    for entry in entries.values():
        if not 0 <= entry["shard"] < shards:
            raise CheckpointError(f"{index}: tensor {entry['name']!r} names shard {entry['shard']} of {shards}")
    base = index.with_suffix("")
    paths = [base.with_name(f"{base.name}.data-{shard:05d}-of-{shards:05d}") for shard in range(shards)]
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist (the checkpoint's data; {index} names {shards} shard(s))")
    for entry in entries.values():
        entry["path"] = paths[entry["shard"]]
    return index, entries


def _header(record: bytes, index: Path) -> dict:
    shards, endianness = 1, 0
    for number, _, value in _fields(record, str(index)):
        if number == 1:
            shards = value
        elif number == 2:
            endianness = value
    if endianness != 0:
        raise CheckpointError(f"{index}: a big-endian checkpoint (only little-endian ones are read)")
    return {"shards": shards}


def _entry(record: bytes, key: bytes, index: Path) -> dict:
    name = key.decode("utf-8", errors="replace")
    entry = {"name": name, "dtype": 0, "shape": [], "shard": 0, "offset": 0, "size": 0, "crc": None, "sliced": False}
    for number, _, value in _fields(record, f"{index} ({name})"):
        if number == 1:
            entry["dtype"] = value
        elif number == 2:
            entry["shape"] = [size for dim in _fields(value, str(index)) if dim[0] == 2 for n, _, size in _fields(dim[2], str(index)) if n == 1]
        elif number in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[number]] = value
        elif number == 6:
            (entry["crc"],) = struct.unpack("<I", value)
        elif number == 7:
            entry["sliced"] = True
    return entry


def read_tensors(prefix: str | os.PathLike, names=None, verify: bool = True) -> dict[str, np.ndarray]:
    """{name: array} of the checkpoint's tensors (``names``: only these), each checked against its
    recorded size and CRC-32C. Non-numeric (string) tensors are left out."""
    index, entries = read_index(prefix)
    wanted = entries if names is None else {n: entries[n] for n in names if n in entries}
    shards: dict[Path, np.ndarray] = {}
    out = {}
    for name, entry in wanted.items():
        if entry["dtype"] not in DTYPES or entry["sliced"]:
            continue
        path = entry["path"]
        if path not in shards:
            shards[path] = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        data = shards[path]
        start, size = entry["offset"], entry["size"]
        if start + size > len(data):
            raise CheckpointError(f"{path}: truncated ({len(data):,} bytes; tensor {name!r} ends at byte {start + size:,})")
        raw = data[start : start + size]
        if verify and entry["crc"] is not None and crc32c(raw) != unmask(entry["crc"]):
            raise CheckpointError(f"{path}: damaged (tensor {name!r} fails its checksum)")
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        count = int(np.prod(entry["shape"])) if entry["shape"] else 1
        if size != count * dtype.itemsize:
            raise CheckpointError(f"{index}: tensor {name!r} has {size} bytes for shape {entry['shape']} of {dtype}")
        out[name] = np.asarray(raw).view(dtype).reshape(entry["shape"]).astype(dtype.newbyteorder("="))  # one copy, out of the mapping
    return out
