"""The data cache on a shared cluster (cpixelcnn.data.cache, cpixelcnn.data.cache_files): correct
without a lock that excludes, or any lock at all; content checked by checksums; source rewrites
that keep size and modification time seen; other users' files not trusted; a bound that evicts
what no process maps; and ``cpixelcnn cache list | verify | clear``."""

import errno
import gc
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import cpixelcnn.data.cache as cache
import cpixelcnn.data.cache_files as files
from cpixelcnn.cli import main
from cpixelcnn.data import load_dataset


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_LOCATION, str(folder))
    monkeypatch.delenv(files.ENV_GROUP, raising=False)
    monkeypatch.delenv(files.ENV_LIMIT, raising=False)
    monkeypatch.setattr("cpixelcnn.notices._SAID", set())
    return folder


def _folders(root, n=6, size=8, classes=("a", "b"), suffix=".png", seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i}{suffix}")
    return root


def _entries(folder):
    return sorted(p for p in folder.glob("cpixelcnn-*.npy") if ".partial" not in p.name)


def _in_memory(root, size=8):
    """The images as decoded without any cache (the reference)."""
    return load_dataset(str(root), "train", size, cache=cache.CacheSetting(enabled=False)).images.clone()


# -- racing builders ----------------------------------------------------------------------------------

_RACER = """
import errno, fcntl, sys, time
import cpixelcnn.data.images as m
mode = sys.argv[1]
if mode == "noop":
    fcntl.flock = lambda fd, op: None  # node-local locks: flock excludes nothing across the racers
else:
    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")
    fcntl.flock = refuse
real = m.ImageFiles.__call__
def slow(self, out):
    time.sleep(0.05)
    real(self, out)
m.ImageFiles.__call__ = slow
from cpixelcnn.data import load_dataset
ds = load_dataset(sys.argv[2], "train", 6)
print("sum", int(ds.images.long().sum()), ds.images.numpy().tobytes().hex()[:64], flush=True)
"""


@pytest.mark.parametrize("mode", ["noop", "enolck"])
def test_two_builders_without_a_lock_that_excludes_both_serve_the_right_pixels(tmp_path, cache_dir, mode):
    root = _folders(tmp_path / "data", n=1100, size=6)  # decoded in parts on a pool: the racers overlap
    expected = _in_memory(root, 6)
    env = dict(os.environ, CPIXELCNN_DATA_WORKERS="2")
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, mode, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    want = f"sum {int(expected.long().sum())} {expected.numpy().tobytes().hex()[:64]}"
    assert [o.strip() for o, _ in outs] == [want, want]
    if mode == "enolck":
        said = [e.count("cannot be locked (OSError: No locks available)") for _, e in outs]
        assert max(said) == 1 and sum(said) >= 1, outs  # once by each process that tried (one may find the other's entry built)
    (entry,) = _entries(cache_dir)
    assert files.Entry(cache_dir, entry.name[len("cpixelcnn-") : -4]).verify() is None
    assert not list(cache_dir.glob("*.partial*"))
    assert torch.equal(load_dataset(str(root), "train", 6).images, expected)


def test_a_builder_that_waited_past_the_bound_builds_its_own_copy(tmp_path, cache_dir, monkeypatch):
    """A lock held for ever (a planted or hung holder) does not block a load: the wait is bounded and names the holder."""
    root = _folders(tmp_path / "data")
    # learn the entry's name from a first build, then remove it and hold its lock from another open file
    load_dataset(str(root), "train", 8)
    (entry,) = _entries(cache_dir)
    digest = entry.name[len("cpixelcnn-") : -4]
    files.Entry(cache_dir, digest).remove()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time, json\n"
         f"fd = os.open({str(cache_dir / f'cpixelcnn-{digest}.lock')!r}, os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0); os.pwrite(fd, json.dumps({'host': 'elsewhere', 'pid': 4242, 'since': time.time()}).encode(), 0)\n"
         "print('held', flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        errors = subprocess.run(
            [sys.executable, "-c", f"from cpixelcnn.data import load_dataset; print(len(load_dataset({str(root)!r}, 'train', 8)))"],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, **{cache.ENV_WAIT: "1"}),
        )  # fmt: skip
        assert time.monotonic() - start < 30
    finally:
        holder.kill()
        holder.wait()
    assert errors.returncode == 0 and errors.stdout.strip() == "12", errors.stderr
    assert "waiting for process 4242 on elsewhere" in errors.stderr and "building them here too" in errors.stderr
    assert len(_entries(cache_dir)) == 1  # built by the waiter


# -- folders that cannot be used ------------------------------------------------------------------------


def test_a_read_only_cache_folder_with_a_missing_entry_is_one_line_and_the_right_pixels(tmp_path, cache_dir, monkeypatch, recwarn):
    """A read-only mount: the entry that exists is mapped, the missing one decoded in memory (said once), no traceback."""
    train_root, other_root = _folders(tmp_path / "data"), _folders(tmp_path / "other", seed=1)
    mapped = load_dataset(str(train_root), "train", 8)
    folder = str(cache_dir)
    real_open, real_mkdir = os.open, os.mkdir

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).startswith(folder) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(
        os,
        "mkdir",
        lambda path, *a, **k: (
            real_mkdir(path, *a, **k) if not str(path).startswith(folder) else (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only file system"))
        ),
    )
    import numpy.lib.format as npformat

    real_memmap = npformat.open_memmap

    def read_only_memmap(filename, mode="r+", *args, **kwargs):
        if str(filename).startswith(folder) and mode != "r":
            raise OSError(errno.EROFS, "Read-only file system", str(filename))
        return real_memmap(filename, mode, *args, **kwargs)

    monkeypatch.setattr(npformat, "open_memmap", read_only_memmap)
    for _ in range(2):
        other = load_dataset(str(other_root), "train", 8)
        assert torch.equal(other.images, _in_memory(other_root))
    again = load_dataset(str(train_root), "train", 8)
    assert torch.equal(again.images, mapped.images)
    said = [str(w.message) for w in recwarn if "cannot be" in str(w.message)]
    assert len(said) == 1 and "Read-only file system" in said[0] and "in memory" in said[0], said


def test_images_that_do_not_fit_in_memory_go_to_a_private_folder(tmp_path, cache_dir, monkeypatch, recwarn):
    import cpixelcnn.host as host

    root = _folders(tmp_path / "data")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.ENV_LOCATION, str(blocker / "cache"))
    monkeypatch.setattr(host, "host_memory_free", lambda: (100.0, "a tiny test"))
    (tmp_path / "local").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "local"))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    ds = load_dataset(str(root), "train", 8)
    private = cache.private_location()
    assert str(private).startswith(str(tmp_path / "local")) and len(_entries(private)) == 1
    assert oct(private.stat().st_mode & 0o777) == "0o700"
    said = [str(w.message) for w in recwarn if "cannot be used" in str(w.message)]
    assert len(said) == 1 and str(private) in said[0] and "2.3 KB" in said[0]
    assert torch.equal(ds.images, _in_memory(root))


# -- what the fingerprint and the checksums notice --------------------------------------------------------


def test_a_rewrite_that_keeps_size_and_modification_time_is_seen(tmp_path, cache_dir):
    """cp -p, rsync -t, tar x: same size, same mtime, other pixels."""
    root = _folders(tmp_path / "data", suffix=".bmp")  # BMP: the same size whatever the pixels
    before = load_dataset(str(root), "train", 8).images.clone()
    target = root / "a" / "0.bmp"
    st = target.stat()
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    after = load_dataset(str(root), "train", 8).images
    assert (after[0] == 200).all() and not torch.equal(after, before)


def test_the_content_fingerprint_sees_a_rewrite_that_keeps_every_stamp(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data", suffix=".bmp")
    monkeypatch.setenv(cache.ENV_FINGERPRINT, "content")
    first = cache.fingerprint(root, ["a/0.bmp", "b/1.bmp"])
    Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(root / "a" / "0.bmp")
    assert cache.fingerprint(root, ["a/0.bmp", "b/1.bmp"]) != first
    assert (load_dataset(str(root), "train", 8).images[0] == 9).all()
    monkeypatch.setenv(cache.ENV_FINGERPRINT, "sizes")
    with pytest.raises(Exception, match="CPIXELCNN_DATA_FINGERPRINT=sizes: must be one of stat, content"):
        cache.fingerprint(root, ["a/0.bmp"])


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def test_a_flipped_byte_is_found_by_verify_and_by_the_open_check_where_it_samples(tmp_path, cache_dir, monkeypatch, recwarn, capsys):
    root = _folders(tmp_path / "data")
    good = load_dataset(str(root), "train", 8).images.clone()
    gc.collect()
    (entry,) = _entries(cache_dir)
    _flip(entry, entry.stat().st_size - 5)  # in the first chunk (the file is smaller than one), which every open checks
    assert main(["cache", "verify", "--data-cache", str(cache_dir)]) == 1
    out, err = capsys.readouterr()
    assert "CORRUPT: chunk 1 of 1" in out and f"cache entry {entry.name[10:22]} is corrupt" in err
    again = load_dataset(str(root), "train", 8)
    assert torch.equal(again.images, good)
    assert any("failed its checksum (chunk 1 of 1): decoding it afresh" in str(w.message) for w in recwarn)
    assert main(["cache", "verify", "--data-cache", str(cache_dir)]) == 0


def test_the_open_check_reads_the_first_and_last_chunk_and_a_few_others(monkeypatch):
    monkeypatch.setattr(files, "CHECKED_AT_OPEN", 3)
    for count in (1, 2, 3, 50, 2000):
        chosen = files.sampled_chunks(count)
        assert {0, count - 1} <= chosen and len(chosen) == min(count, 4) and all(0 <= c < count for c in chosen)


def test_checksums_cover_every_chunk_of_a_large_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 4096)
    path = tmp_path / "f.npy"
    data = np.random.default_rng(0).integers(0, 256, 4096 * 5 + 123, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    sums = files.chunk_checksums(path, len(data), threads=2)
    assert len(sums) == 6 and sums == files.chunk_checksums(path, len(data), threads=1)
    assert files.first_bad_chunk(path, sums) is None
    _flip(path, 4096 * 3 + 7)
    assert files.first_bad_chunk(path, sums) == 3 and files.first_bad_chunk(path, sums, {0, 5}) is None


# -- other users ----------------------------------------------------------------------------------------


def test_an_entry_planted_by_another_user_is_not_used(tmp_path, cache_dir, monkeypatch, recwarn):
    """Another user places their own pixels under the digest, with a marker whose checksums match: not served."""
    root = _folders(tmp_path / "data")
    good = load_dataset(str(root), "train", 8).images.clone()
    gc.collect()
    (entry,) = _entries(cache_dir)
    marker = entry.with_suffix(".json")
    planted = np.load(entry)
    planted[:] = 0
    np.save(entry, planted)
    record = json.loads(marker.read_text())
    record["checksums"] = files.chunk_checksums(entry, entry.stat().st_size)
    marker.write_text(json.dumps(record))
    for path in (entry, marker):
        os.chown(path, 54321, 54321)
    again = load_dataset(str(root), "train", 8)
    assert torch.equal(again.images, good)
    said = [str(w.message) for w in recwarn if "cannot be used" in str(w.message)]
    assert len(said) == 1 and "owned by uid 54321" in said[0]
    assert (np.load(entry) == 0).all()  # their file is left as it is
    # a team that shares the folder trusts its group's entries
    monkeypatch.setenv(files.ENV_GROUP, "54321")
    assert (load_dataset(str(root), "train", 8).images == 0).all()


def test_a_cache_folder_writable_by_every_user_is_not_trusted(tmp_path, cache_dir, recwarn):
    root = _folders(tmp_path / "data")
    cache_dir.mkdir()
    os.chmod(cache_dir, 0o777)
    ds = load_dataset(str(root), "train", 8)
    assert torch.equal(ds.images, _in_memory(root)) and not _entries(cache_dir)
    assert any("writable by every user" in str(w.message) for w in recwarn)


def test_new_cache_folders_and_entries_are_private_or_the_teams(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data")
    load_dataset(str(root), "train", 8)
    (entry,) = _entries(cache_dir)
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700" and oct(entry.stat().st_mode & 0o777) == "0o644"
    team = tmp_path / "team"
    monkeypatch.setenv(cache.ENV_LOCATION, str(team))
    monkeypatch.setenv(files.ENV_GROUP, str(os.getgid()))
    load_dataset(str(root), "train", 8)
    (entry,) = _entries(team)
    assert oct(team.stat().st_mode & 0o7777) == "0o2770" and oct(entry.stat().st_mode & 0o777) == "0o640"


# -- a bound, eviction and housekeeping ----------------------------------------------------------------


def test_eviction_under_a_bound_keeps_an_entry_in_use(tmp_path, cache_dir, monkeypatch):
    roots = [_folders(tmp_path / f"data{i}", seed=i) for i in range(3)]
    in_use = load_dataset(str(roots[0]), "train", 8)  # mapped by this process for the whole test
    load_dataset(str(roots[1]), "train", 8)
    gc.collect()
    time.sleep(0.05)
    monkeypatch.setenv(files.ENV_LIMIT, "1K")
    newest = load_dataset(str(roots[2]), "train", 8)
    kept = {json.loads(p.with_suffix(".json").read_text())["what"] for p in _entries(cache_dir)}
    assert len(kept) == 2 and any(str(roots[0]) in w for w in kept) and any(str(roots[2]) in w for w in kept)
    assert torch.equal(in_use.images, _in_memory(roots[0])) and len(newest) == 12


def test_an_entry_mapped_by_another_process_is_in_use(tmp_path, cache_dir):
    root = _folders(tmp_path / "data")
    load_dataset(str(root), "train", 8)
    gc.collect()
    (entry,) = _entries(cache_dir)
    reader = subprocess.Popen(
        [sys.executable, "-c", f"from cpixelcnn.data import load_dataset; ds = load_dataset({str(root)!r}, 'train', 8); print('mapped', flush=True)\n"
         "import time; time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, **{cache.ENV_LOCATION: str(cache_dir)}),
    )  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "mapped"
        assert files.Entry(cache_dir, entry.name[10:-4]).in_use()
        assert main(["cache", "clear", "--data-cache", str(cache_dir)]) == 0 and entry.exists()
    finally:
        reader.kill()
        reader.wait()
    assert not files.Entry(cache_dir, entry.name[10:-4]).in_use()
    assert main(["cache", "clear", "--data-cache", str(cache_dir)]) == 0 and not entry.exists()


def test_leftovers_of_killed_builds_are_found_and_others_builds_are_not(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here, now = files.host(), time.time()
    names = {
        "mine-dead": f"cpixelcnn-abc.partial-{here}-{dead.pid}-00aa11bb.npy",
        "mine-alive": f"cpixelcnn-abc.partial-{here}-{os.getpid()}-00aa11bb.npy",
        "elsewhere-fresh": "cpixelcnn-abc.partial-node7-123-00aa11bb.npy",
        "elsewhere-stale": "cpixelcnn-abc.partial-node8-123-00aa11bb.npy",
    }
    for name in names.values():
        (folder / name).write_bytes(b"x")
    old = now - files.LEFTOVER_AFTER - 10
    os.utime(folder / names["elsewhere-stale"], (old, old))
    found = {p.name for p in files.leftovers(folder)}
    assert found == {names["mine-dead"], names["elsewhere-stale"]}


def test_cache_list_verify_and_clear_on_the_command_line(tmp_path, cache_dir, capsys):
    roots = [_folders(tmp_path / f"data{i}", seed=i) for i in range(2)]
    for root in roots:
        load_dataset(str(root), "train", 8)
    gc.collect()
    assert main(["cache", "list", "--data-cache", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 entries" in out and str(roots[0]) in out and "last used" in out
    assert main(["cache", "list", "--json", "--data-cache", str(cache_dir)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed["entries"]) == 2 and listed["total_bytes"] > 2 * 12 * 3 * 64
    first = listed["entries"][0]["entry"]
    assert main(["cache", "verify", first[:8], "--data-cache", str(cache_dir)]) == 0
    assert main(["cache", "clear", "--older-than", "1d", "--data-cache", str(cache_dir)]) == 0
    assert len(_entries(cache_dir)) == 2
    assert main(["cache", "clear", first[:8], "--data-cache", str(cache_dir)]) == 0
    assert len(_entries(cache_dir)) == 1
    assert main(["cache", "clear", "ffffffff", "--data-cache", str(cache_dir)]) == 2
    assert "no cache entry starts with 'ffffffff'" in capsys.readouterr().err
    assert main(["cache", "clear", "--older-than", "soon", "--data-cache", str(cache_dir)]) == 2
    assert main(["cache", "list", "--data-cache", str(tmp_path / "nowhere")]) == 0
    assert "no data cache there yet" in capsys.readouterr().out


def test_a_size_bound_or_group_that_is_not_one_is_one_line(tmp_path, cache_dir, monkeypatch):
    root = _folders(tmp_path / "data")
    monkeypatch.setenv(files.ENV_LIMIT, "lots")
    with pytest.raises(Exception, match="CPIXELCNN_DATA_CACHE_LIMIT=lots: not a size"):
        files.size_limit()
    monkeypatch.delenv(files.ENV_LIMIT)
    monkeypatch.setenv(files.ENV_GROUP, "no-such-group-here")
    with pytest.raises(Exception, match="CPIXELCNN_DATA_CACHE_GROUP=no-such-group-here: no such group"):
        load_dataset(str(root), "train", 8)
