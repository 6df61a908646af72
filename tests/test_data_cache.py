"""Decoded once, mapped after: every image source goes through the data cache (cpixelcnn.data.cache).
A changed, added or removed file is a new entry, a half-written entry is never read, two builders
do not collide, a cache that cannot be written falls back to memory (said once), and the fast PNG
decoder gives exactly the pixels of the general one."""

import gc
import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import cpixelcnn.data.cache as cache
import cpixelcnn.data.cache_files as cache_files
import cpixelcnn.data.images as images_module
from cpixelcnn.cli import main
from cpixelcnn.data import DataError, load_dataset
from cpixelcnn.data.images import _decode, _plain_png, decode_image

from helpers import make_course_layout


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_LOCATION, str(folder))
    return folder


def _folders(root, n=6, size=8, classes=("a", "b")):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _entries(folder):
    return sorted(p.name for p in folder.glob("cpixelcnn-*.npy") if ".partial" not in p.name)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _count_decodes(monkeypatch):
    calls = {"n": 0}
    real = images_module.load_image

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(images_module, "load_image", counting)
    return calls


def test_the_second_read_maps_the_first_ones_images(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data")
    calls = _count_decodes(monkeypatch)
    first = load_dataset(str(root), "train", 8)
    assert calls["n"] == 12 and len(_entries(cache_dir)) == 1
    second = load_dataset(str(root), "train", 8)
    assert calls["n"] == 12  # nothing decoded again
    assert torch.equal(first.images, second.images) and first.files == second.files and first.labels.tolist() == second.labels.tolist()
    assert _is_mapped(second)
    marker = json.loads(next(cache_dir.glob("cpixelcnn-*.json")).read_text())
    assert marker["shape"] == [12, 3, 8, 8] and marker["key"]["reader"] == "folders"


def _is_mapped(ds) -> bool:
    """The dataset's storage lies in a file mapping (its address is inside a mapped cache file)."""
    address = ds.stored.data_ptr()
    for line in open(f"/proc/{os.getpid()}/maps"):
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            return "cpixelcnn-" in line
    return False


def test_images_are_read_through_a_file_mapping(tmp_path, cache_dir):
    ds = load_dataset(str(_folders(tmp_path / "data")), "train", 8)
    assert _is_mapped(ds)
    ds.stored[0, 0, 0, 0] = 255 - int(ds.stored[0, 0, 0, 0])  # copy-on-write: a stray write never reaches the cache file
    again = load_dataset(str(tmp_path / "data"), "train", 8)
    assert int(again.stored[0, 0, 0, 0]) != int(ds.stored[0, 0, 0, 0])


@pytest.mark.parametrize("change", ["modified", "added", "removed"])
def test_a_changed_added_or_removed_file_is_decoded_afresh(tmp_path, cache_dir, change):
    root = _folders(tmp_path / "data")
    before = load_dataset(str(root), "train", 8)
    target = root / "a" / "0.png"
    if change == "modified":
        Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(target)
        os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new time even on coarse clocks
    elif change == "added":
        Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(root / "a" / "9.png")
    else:
        target.unlink()
    old = before.images[0].clone()
    del before  # no process maps the old entry any more: it can go
    gc.collect()
    after = load_dataset(str(root), "train", 8)
    expected = {"modified": 12, "added": 13, "removed": 11}[change]
    assert len(after) == expected
    if change == "modified":
        assert (after.images[0] == 7).all() and not torch.equal(after.images[0], old)
    assert len(_entries(cache_dir)) == 1  # the superseded entry went


def test_other_sizes_and_channels_are_other_entries(tmp_path, cache_dir):
    root = _folders(tmp_path / "data")
    load_dataset(str(root), "train", 8)
    grey = load_dataset(str(root), "train", 8, channels=1)
    small = load_dataset(str(root), "train", 4)
    assert grey.images.shape == (12, 1, 8, 8) and small.images.shape == (12, 3, 4, 4) and len(_entries(cache_dir)) == 3


@pytest.mark.parametrize("damage", ["truncated", "no marker", "partial left over", "marker of another size"])
def test_a_half_written_entry_is_never_read(tmp_path, cache_dir, damage, monkeypatch):
    root = _folders(tmp_path / "data")
    good = load_dataset(str(root), "train", 8).images.clone()
    (npy,) = [cache_dir / n for n in _entries(cache_dir)]
    marker = npy.with_suffix(".json")
    if damage == "truncated":
        with open(npy, "r+b") as f:
            f.truncate(npy.stat().st_size - 100)
    elif damage == "no marker":
        marker.unlink()
        npy.write_bytes(npy.read_bytes()[:-300] + bytes(300))  # zeros where images were: it must not be read
    elif damage == "partial left over":  # by a builder of this host that is gone
        marker.unlink()
        os.rename(npy, npy.with_name(f"{npy.stem}.partial-{cache_files.host()}-{_dead_pid()}-0a1b2c3d.npy"))
    else:
        marker.write_text(json.dumps(json.loads(marker.read_text()) | {"bytes": 5}))
    calls = _count_decodes(monkeypatch)
    again = load_dataset(str(root), "train", 8)
    assert calls["n"] == 12 and torch.equal(again.images, good)
    assert not list(cache_dir.glob("*.partial*"))


def test_an_entry_killed_while_it_was_written_is_rebuilt(tmp_path, cache_dir):
    """kill -9 in the middle of the build: the next read finds no marker, removes the partial file and decodes again."""
    root = _folders(tmp_path / "data", n=1200)
    script = (
        "import time, sys\n"
        "import cpixelcnn.data.images as m\n"
        "real = m.ImageFiles.__call__\n"
        "def slow(self, out):\n"
        "    real(self, out); print('part', flush=True); time.sleep(60)\n"
        "m.ImageFiles.__call__ = slow\n"
        "from cpixelcnn.data import load_dataset\n"
        f"load_dataset({str(root)!r}, 'train', 8)\n"
    )
    env = dict(os.environ, CPIXELCNN_DATA_WORKERS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "part"
        assert list(cache_dir.glob("*.partial-*.npy")) and not list(cache_dir.glob("*.json"))
    finally:
        proc.kill()
        proc.wait()
    ds = load_dataset(str(root), "train", 8)
    assert len(ds) == 2400 and len(_entries(cache_dir)) == 1 and not list(cache_dir.glob("*.partial*"))
    assert torch.equal(ds.images[-1], torch.from_numpy(images_module.load_image(root / "b" / "999.png", 8, 3)))


def test_two_processes_building_one_entry_build_it_once(tmp_path, cache_dir):
    root = _folders(tmp_path / "data", n=30)
    script = (
        "import time, sys\n"
        "import cpixelcnn.data.cache as c\n"
        "real = c.build\n"
        "def build(*args):\n"
        "    print('building', flush=True); time.sleep(1.5); return real(*args)\n"
        "c.build = build\n"
        "from cpixelcnn.data import load_dataset\n"
        f"ds = load_dataset({str(root)!r}, 'train', 8)\n"
        "print('sum', int(ds.images.sum()), flush=True)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    stdout = "".join(o for o, _ in outs)
    assert stdout.count("building") == 1 and len({line for line in stdout.splitlines() if line.startswith("sum")}) == 1
    assert "waiting for process" in "".join(e for _, e in outs)  # the holder named: its pid, host and since when
    assert len(_entries(cache_dir)) == 1


def test_a_cache_folder_that_cannot_be_written_decodes_in_memory_and_says_so_once(tmp_path, monkeypatch, recwarn):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.ENV_LOCATION, str(blocker / "cache"))
    monkeypatch.setattr("cpixelcnn.notices._SAID", set())
    root = _folders(tmp_path / "data")
    for _ in range(2):
        ds = load_dataset(str(root), "train", 8)
        assert len(ds) == 12 and not _is_mapped(ds)
    said = [str(w.message) for w in recwarn if "cannot be written" in str(w.message)]
    assert len(said) == 1 and " in memory" in said[0] and str(blocker) in said[0]
    assert blocker.read_text() == "not a folder"


def test_a_full_disk_while_building_leaves_no_partial_file_and_decodes_in_memory(tmp_path, cache_dir, monkeypatch, recwarn):
    import errno

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr("cpixelcnn.notices._SAID", set())
    ds = load_dataset(str(_folders(tmp_path / "data")), "train", 8)
    assert len(ds) == 12 and not list(cache_dir.glob("*.npy")) and not list(cache_dir.glob("*.json"))
    assert any("No space left" in str(w.message) for w in recwarn)


def test_no_cache_and_data_cache_on_the_command_line(tmp_path, capsys, cache_dir):
    make_course_layout(tmp_path / "course")
    run = tmp_path / "run"
    common = [
        "--image-size",
        "8",
        "--nr-resnet",
        "1",
        "--nr-filters",
        "4",
        "--nr-mix",
        "2",
        "--batch-size",
        "4",
        "--max-steps",
        "1",
        "--device",
        "cpu",
    ]
    assert main(["train", "--data", str(tmp_path / "course"), "--out", str(run), "--no-cache", *common]) == 0
    assert not cache_dir.exists() or not list(cache_dir.iterdir())
    chosen = tmp_path / "chosen"
    assert main(["classify", "--checkpoint", str(run), "--data", str(tmp_path / "course"), "--split", "validation", "--data-cache", str(chosen)]) == 0
    assert len(_entries(chosen)) == 1
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(tmp_path / "course"), "--no-cache", "--data-cache", str(chosen)]) == 2
    assert "contradict" in capsys.readouterr().err
    # nothing stays set for the process: the next load without options uses $CPIXELCNN_DATA_CACHE again
    assert main(["classify", "--checkpoint", str(run), "--data", str(tmp_path / "course"), "--split", "validation"]) == 0
    assert len(_entries(cache_dir)) == 1 and len(_entries(chosen)) == 1


def test_decoding_on_every_core_gives_the_images_of_one_process(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data", n=1100, size=6)  # 2,200 images: past the size where a pool starts
    monkeypatch.setenv(cache.ENV_WORKERS, "2")
    pooled = load_dataset(str(root), "train", 6).images.clone()
    monkeypatch.setenv(cache.ENV_LOCATION, "off")
    monkeypatch.setenv(cache.ENV_WORKERS, "1")
    serial = load_dataset(str(root), "train", 6).images
    assert torch.equal(pooled, serial)
    monkeypatch.setenv(cache.ENV_WORKERS, "2")
    assert torch.equal(load_dataset(str(root), "train", 6).images, serial)  # in memory, on two processes


def test_a_corrupt_image_in_a_pooled_decode_is_one_line_naming_it(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data", n=1100, size=6)
    (root / "b" / "500.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    monkeypatch.setenv(cache.ENV_WORKERS, "2")
    with pytest.raises(DataError, match=r"cannot read image .*b/500.png"):
        load_dataset(str(root), "train", 6)
    assert not list(cache_dir.glob("*.json")) and not list(cache_dir.glob("*.npy"))


def test_subsets_copy_no_images_and_gather_what_they_hold(tmp_path, cache_dir):
    ds = load_dataset(str(_folders(tmp_path / "data")), "train", 8)
    keep = torch.tensor([5, 1, 7])
    sub = ds.subset(keep)
    assert sub.stored is ds.stored and torch.equal(sub.images, ds.images[keep]) and list(sub.files) == [ds.files[i] for i in (5, 1, 7)]
    again = sub.subset(torch.tensor([2, 0]))
    assert torch.equal(again.gather(torch.tensor([1])), ds.images[[5]]) and list(again.files) == [ds.files[7], ds.files[5]]


# -- the fast PNG decoder -------------------------------------------------------------------------


def _png(array, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save)
    return buf.getvalue()


RNG = np.random.default_rng(1)
RGB = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, (8, 8), dtype=np.uint8)


def _variant(name: str) -> bytes:
    if name == "interlaced":  # PIL writes no interlaced PNG: the header says so, with its CRC mended (the data are not Adam7)
        data = bytearray(_png(RGB))
        data[28] = 1
        data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
        return bytes(data)
    if name == "palette":
        buf = io.BytesIO()
        Image.fromarray(RGB).convert("P", palette=Image.ADAPTIVE).save(buf, format="PNG")
        return buf.getvalue()
    if name == "rgba":
        return _png(RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    if name == "16-bit grey":
        return _png(RNG.integers(0, 65536, (8, 8), dtype=np.uint16))
    if name == "other size":
        return _png(RNG.integers(0, 256, (9, 8, 3), dtype=np.uint8))
    if name == "uncompressed":
        return _png(RGB, compress_level=0)
    return _png(GREY if name.startswith("grey") else RGB)


@pytest.mark.parametrize("name,channels,fast", [
    ("rgb", 3, True), ("grey", 1, True), ("uncompressed", 3, True),
    ("rgb read as grey", 1, False), ("grey read as rgb", 3, False), ("other size", 3, False), ("interlaced", 3, False),
    ("palette", 3, False), ("rgba", 3, False), ("16-bit grey", 1, False),
])  # fmt: skip
def test_the_fast_png_decoder_gives_the_general_decoders_pixels(name, channels, fast):
    data = _variant(name)
    assert _plain_png(data, 8, channels, np.empty((channels, 8, 8), dtype=np.uint8)) == fast
    if name != "interlaced":
        assert np.array_equal(decode_image(data, name, 8, channels), _decode(data, name, 8, channels))


@pytest.mark.parametrize("damage", ["truncated", "bad crc", "flipped data"])
def test_a_damaged_png_is_left_to_the_general_decoder(damage):
    data = bytearray(_png(RGB))
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "bad crc":
        data[33 + 8 + 2] ^= 0xFF  # a byte inside the first IDAT chunk: its CRC no longer matches
    else:
        start = data.index(b"IDAT") + 4
        body = (
            bytes(data[start : start + 10])
            + bytes([data[start + 10] ^ 0xFF])
            + bytes(data[start + 11 : start + int.from_bytes(data[start - 8 : start - 4], "big")])
        )
        data[start : start + len(body)] = body
        crc = zlib.crc32(b"IDAT" + body).to_bytes(4, "big")  # a valid CRC over corrupt deflate data
        data[start + len(body) : start + len(body) + 4] = crc
    assert not _plain_png(bytes(data), 8, 3, np.empty((3, 8, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="cannot read image"):
        decode_image(bytes(data), "x.png", 8, 3)


def test_the_course_layout_and_cifar_are_cached_too(tmp_path, cache_dir):
    from cifar_files import write_cifar10_binary

    make_course_layout(tmp_path / "course")
    write_cifar10_binary(tmp_path / "cifar")
    course = load_dataset(str(tmp_path / "course"), "train", 8)
    cifar = load_dataset(f"cifar10:{tmp_path / 'cifar'}", "test", 16, channels=1)
    assert _is_mapped(course) and _is_mapped(cifar) and len(_entries(cache_dir)) == 2
    assert torch.equal(load_dataset(f"cifar10:{tmp_path / 'cifar'}", "test", 16, channels=1).images, cifar.images)


def test_a_decoding_process_that_dies_ends_the_read_with_one_line(tmp_path, cache_dir, monkeypatch):
    """The kernel's out-of-memory killer, say: the pool notices the dead process instead of waiting for its part for ever."""
    import signal

    root = _folders(tmp_path / "data", n=1100, size=6)
    real = images_module.ImageFiles.__call__

    def dies(self, out):
        if any(p.endswith("b/500.png") for p in self.paths):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, out)

    monkeypatch.setattr(images_module.ImageFiles, "__call__", dies)
    monkeypatch.setenv(cache.ENV_WORKERS, "2")
    with pytest.raises(DataError, match=r"a process decoding the image folders in .* died \(out of memory\?"):
        load_dataset(str(root), "train", 6)
    assert not list(cache_dir.glob("*.npy")) and not list(cache_dir.glob("*.json"))


def test_batches_are_read_from_the_cache_file_not_mapped_in(tmp_path, cache_dir):
    """A training gather reads its images with preadv: the same images, and no pages of the cache
    file become this process's resident memory (a mapping's fault would bring neighbours along)."""
    ds = load_dataset(str(_folders(tmp_path / "data", n=300)), "train", 8)
    index = torch.tensor([5, 599, 0, 321])
    assert torch.equal(ds.gather(index), ds.stored.clone()[index])
    sub = ds.subset(torch.arange(100, 600))
    assert torch.equal(sub.gather(torch.tensor([0, 499])), ds.images[[100, 599]])
    in_memory = torch.arange(2 * 3 * 2 * 2, dtype=torch.uint8).view(2, 3, 2, 2)
    from cpixelcnn.data.mapped import gather

    assert torch.equal(gather(in_memory, torch.tensor([1])), in_memory[[1]])


def test_the_splits_of_one_layout_are_entries_of_their_own(tmp_path, cache_dir):
    """The course layout's train and validation splits share a root: reading one never takes the other's entry away."""
    make_course_layout(tmp_path / "course")
    train = load_dataset(str(tmp_path / "course"), "train", 8)
    load_dataset(str(tmp_path / "course"), "validation", 8)
    assert len(_entries(cache_dir)) == 2
    assert torch.equal(train.gather(torch.tensor([0, 1])), train.images[:2])


def test_a_superseded_entry_stays_while_mapped_and_its_readers_keep_reading(tmp_path, cache_dir):
    """A newer entry of the same source keeps the old one while a process maps it (on a network
    filesystem another node's mapping would break), and removes it at the next build once none does."""
    root = _folders(tmp_path / "data")
    ds = load_dataset(str(root), "train", 8)
    expected = ds.images[[3, 7]].clone()
    Image.fromarray(np.full((8, 8, 3), 1, dtype=np.uint8)).save(root / "a" / "new.png")
    load_dataset(str(root), "train", 8)
    assert len(_entries(cache_dir)) == 2 and torch.equal(ds.gather(torch.tensor([3, 7])), expected)
    del ds
    gc.collect()
    Image.fromarray(np.full((8, 8, 3), 2, dtype=np.uint8)).save(root / "a" / "newer.png")
    assert len(load_dataset(str(root), "train", 8)) == 14
    assert len(_entries(cache_dir)) == 1


def test_a_batch_reads_from_an_entry_whose_file_was_replaced(tmp_path, cache_dir):
    """A racing builder renames its own copy over the entry while a process reads it: the open file stays readable."""
    root = _folders(tmp_path / "data")
    ds = load_dataset(str(root), "train", 8)
    expected = ds.images[[3, 7]].clone()
    entry = cache_dir / _entries(cache_dir)[0]
    copy = cache_dir / "copy.npy"
    copy.write_bytes(entry.read_bytes())
    os.replace(copy, entry)
    assert torch.equal(ds.gather(torch.tensor([3, 7])), expected)


def _filtered_png(pixels: np.ndarray, filters: list[int], extra: bytes = b"") -> bytes:
    """A PNG of uint8 pixels (H, W) or (H, W, 3) whose row y is stored with PNG filter type filters[y]
    (0 none, 1 sub, 2 up, 3 average, 4 Paeth), written by hand: PIL's encoder picks its own."""
    height, width = pixels.shape[:2]
    bpp = 1 if pixels.ndim == 2 else 3
    rows = pixels.reshape(height, width * bpp).astype(np.int64)
    raw = bytearray()
    for y, kind in enumerate(filters):
        line, prior = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        p = left + prior - upper_left
        pa, pb, pc = abs(p - left), abs(p - prior), abs(p - upper_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upper_left))
        predictor = [0 * line, left, prior, (left + prior) // 2, paeth][kind]
        raw += bytes([kind]) + ((line - predictor) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if bpp == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw) + extra)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [1, 7, 16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("filters", ["none", "sub", "up", "average", "paeth", "mixed"])
@pytest.mark.parametrize("reconstruction", ["compiled", "PIL"])
def test_every_png_filter_type_decodes_to_pils_pixels(size, channels, filters, reconstruction, monkeypatch):
    from cpixelcnn.data import images

    if reconstruction == "compiled" and images._png_unfilter() is None:
        pytest.skip("the compiled extension is not built")
    if reconstruction == "PIL":
        monkeypatch.setattr(images, "_png_unfilter", lambda: None)
    rng = np.random.default_rng(size * 10 + channels)
    pixels = rng.integers(0, 256, (size, size, 3) if channels == 3 else (size, size), dtype=np.uint8)
    kinds = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
    per_row = [int(k) for k in rng.integers(0, 5, size)] if filters == "mixed" else [kinds[filters]] * size
    data = _filtered_png(pixels, per_row)
    out = np.full((channels, size, size), 77, dtype=np.uint8)
    assert _plain_png(data, size, channels, out)
    expected = pixels.transpose(2, 0, 1) if channels == 3 else pixels[None]
    assert np.array_equal(out, expected)
    assert np.array_equal(out, _decode(data, "x.png", size, channels))


def test_a_png_the_compiled_reconstruction_does_not_accept_goes_to_pil():
    from cpixelcnn.data import images

    if images._png_unfilter() is None:
        pytest.skip("the compiled extension is not built")
    out = np.empty((3, 8, 8), dtype=np.uint8)
    bad_filter = bytearray(zlib.decompress(_filtered_png(RGB, [0] * 8)[41:-16]))
    bad_filter[0] = 5
    assert not images._png_unfilter()(bytes(bad_filter), out, 8, 3)
    assert not _plain_png(_filtered_png(RGB, [0] * 8, extra=b"\0" * 100), 8, 3, out)  # more data than the image: PIL decides
    assert not images._png_unfilter()(b"\0" * 10, out, 8, 3)
    assert not images._png_unfilter()(bytes(8 * 25), np.empty((3, 8, 16), dtype=np.uint8)[:, :, ::2], 8, 3)  # not contiguous


def test_an_entry_is_named_by_the_cache_version_and_the_readers_each(monkeypatch):
    """A reader's key holds its own "version": a new cache format and a new reader each name a new entry
    (the reader's field once overrode the cache's); the identity, which finds superseded entries, holds neither."""
    from cpixelcnn.data import cache

    def job(reader_version):
        return cache.DecodeJob("x", {"reader": "cifar10/binary", "version": reader_version, "files": "f"}, (3, 8, 8), [])

    first, identity = job(1).digest, job(1).identity
    assert job(2).digest != first
    monkeypatch.setattr(cache, "VERSION", cache.VERSION + 1)
    assert job(1).digest != first and job(1).identity == identity  # the new entry replaces the old one
