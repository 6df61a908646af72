"""Decoded once: the first read of an image source decodes it, on every core, straight into a uint8
array on disk; every later read — any command, any torchrun rank, any run, any node of a shared
filesystem — maps that file, so the operating system keeps one copy of its pages for all of them.

A cache entry is named by a digest of what its images were read from (:attr:`DecodeJob.key`: the
format and its reader's version, the source, the split, the image size and channels, and the
source files' :func:`fingerprint`), so a changed, added or removed source file names another
entry. The folder is ``--data-cache DIR``, else ``$CPIXELCNN_DATA_CACHE``, else
``$XDG_CACHE_HOME/cpixelcnn/data`` (``~/.cache/cpixelcnn/data``); its files are described in
:mod:`cpixelcnn.data.cache_files`.

What a shared cluster does not promise, this does not assume:

- **No lock is needed for correctness.** Each builder decodes into a partial file of its own and
  renames only that into place, the marker last; racing builders (where ``flock`` does not exclude,
  or fails: read-only folders, NFS without lockd) waste work, never each other's pixels. The lock
  only saves the work; any error taking it is said once and the build goes on without it. A wait
  names the holder, ends when that holder is seen dead on this host, and is bounded
  (``$CPIXELCNN_DATA_CACHE_WAIT`` seconds, default 1800): the waiter then builds its own copy.
- **Content is checked.** The marker holds a CRC-32 per 8 MiB chunk; every open checks the first
  chunk, the last and two random others (a few MB read); ``cpixelcnn cache verify`` checks all.
  An entry that fails is said once and decoded afresh.
- **Source files are fingerprinted** by name, size, modification time, change time and inode (a
  rewrite that keeps size and modification time — ``cp -p``, ``rsync -t``, ``tar x`` — changes the
  change time); ``$CPIXELCNN_DATA_FINGERPRINT=content`` hashes their bytes instead (for filesystems
  that keep neither; every start then reads every source file).
- **Other users' files are not trusted.** A folder or entry owned by another user, or writable by
  one, is not read (said once); ``$CPIXELCNN_DATA_CACHE_GROUP=GROUP`` shares a folder with a team.
- **Where the folder cannot be used**, the images are decoded into memory when they fit in half of
  what is free, else into a private folder on local disk (``$TMPDIR/cpixelcnn-<uid>/data``), said once with the size.
- **A size bound**, ``$CPIXELCNN_DATA_CACHE_LIMIT`` (e.g. ``200G``), evicts the least recently used
  entries after a build, never one a process has mapped.

``--no-cache`` (or ``CPIXELCNN_DATA_CACHE=off``) decodes into memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cpixelcnn.data import cache_files as files
from cpixelcnn.data.cache_files import FORMAT, VERSION, Entry, describe_size
from cpixelcnn.data.mapped import remember_file
from cpixelcnn.data.types import DataError

ENV_LOCATION = "CPIXELCNN_DATA_CACHE"  # a folder, or off / none / 0: decode in memory
ENV_WORKERS = "CPIXELCNN_DATA_WORKERS"  # processes that decode (default: every core this process may use)
ENV_FINGERPRINT = "CPIXELCNN_DATA_FINGERPRINT"  # stat (default) or content
ENV_WAIT = "CPIXELCNN_DATA_CACHE_WAIT"  # seconds a builder waits for another one building the same entry
ENV_GROUP, ENV_LIMIT = files.ENV_GROUP, files.ENV_LIMIT
OFF = ("off", "none", "0", "no", "false")
FINGERPRINTS = ("stat", "content")
ANNOUNCE_FROM = 20_000  # images: a build at least this large says what it does (and a terminal shows a bar)
PARALLEL_FROM = 2_000  # images: smaller jobs decode in this process (a pool costs more than it saves)
MEMORY_SHARE = 0.5  # where the cache cannot be used: decode in memory only into this share of what is free


@dataclasses.dataclass(frozen=True)
class DecodeJob:
    """Images to decode: ``parts`` in order, each a callable with ``rows`` (its image count) that
    writes its images into the uint8 (rows, C, S, S) array it is given; ``key`` what they are read
    from (digested into the entry's name); ``what`` names them in messages."""

    what: str
    key: dict
    shape: tuple[int, int, int]
    parts: Sequence[Callable[[np.ndarray], None]]
    parallel: bool = True  # False: the parts are cheap (no decoding), or use torch (not safe in a forked process)

    @property
    def count(self) -> int:
        return sum(part.rows for part in self.parts)

    @property
    def nbytes(self) -> int:
        return self.count * int(np.prod(self.shape))

    @property
    def digest(self) -> str:
        """Names the cache entry: the cache's format and version, the shape and everything the images
        were read from (the key apart: a reader's own "version" must not stand in for the cache's)."""
        return _digest({"cache": [FORMAT, VERSION], "shape": list(self.shape), "source": self.key})

    @property
    def identity(self) -> str:
        """The same source, split, size and channels whatever their files hold now: an entry of
        another digest with this identity is a superseded one (its files changed since)."""
        return _digest({k: v for k, v in self.key.items() if k != "files"} | {"shape": list(self.shape)})


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def fingerprint_mode() -> str:
    chosen = os.environ.get(ENV_FINGERPRINT, "").strip().lower() or "stat"
    if chosen not in FINGERPRINTS:
        raise DataError(f"{ENV_FINGERPRINT}={chosen}: must be one of {', '.join(FINGERPRINTS)}")
    return chosen


def fingerprint(root: Path, relative: Sequence[str], what: str = "image") -> str:
    """A digest of the files ``relative`` to ``root`` (``what`` a file is, for the message when one
    cannot be read): their names, sizes, modification and change times and inodes, or with
    ``$CPIXELCNN_DATA_FINGERPRINT=content`` their names and bytes. Strings, not Paths: a million
    files take a second, not five."""
    digest, base = hashlib.sha256(), f"{root}/"
    by_content = fingerprint_mode() == "content"
    digest.update(b"content\n" if by_content else b"")
    for name in relative:
        try:
            if by_content:
                with open(base + name, "rb") as f:
                    digest.update(
                        f"{name}\0{hashlib.file_digest(f, 'sha256').hexdigest() if hasattr(hashlib, 'file_digest') else _file_sha256(f)}\n".encode()
                    )
                continue
            st = os.stat(base + name)
        except OSError as err:
            raise DataError(f"cannot read {what} {base + name}: {type(err).__name__}: {err.strerror or err}") from None
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return digest.hexdigest()


def _file_sha256(f) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


# -- where ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CacheSetting:
    """Where a data request's decoded images are kept: ``location`` (a folder; None:
    ``$CPIXELCNN_DATA_CACHE`` or the default) and ``enabled`` (False: decode into memory; None: on
    unless the environment says off). It travels with the request (``Request.cache``): the command
    line's ``--data-cache`` and ``--no-cache`` make one, nothing is set for the whole process."""

    location: str | None = None
    enabled: bool | None = None

    def folder(self) -> Path | None:
        """The cache folder, or None when caching is off."""
        if self.enabled is False:
            return None
        chosen = self.location or os.environ.get(ENV_LOCATION, "")
        if chosen.strip().lower() in OFF and chosen.strip():
            return None
        if chosen:
            return Path(chosen).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "cpixelcnn" / "data"

    def chosen_by(self) -> str:
        """How :meth:`folder` was chosen, in words."""
        if self.enabled is False:
            return "--no-cache"
        if self.location:
            return "--data-cache"
        if os.environ.get(ENV_LOCATION, "").strip():
            return f"${ENV_LOCATION}"
        return "$XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the default"


CACHE_HELP = f"decode image sources once into DIR and map them from there (default: ${ENV_LOCATION}, else ~/.cache/cpixelcnn/data)"
NO_CACHE_HELP = "decode the images into memory, every time"


def cache_setting(location: str | None, off: bool) -> CacheSetting:
    """The setting of ``--data-cache DIR`` and ``--no-cache`` (which contradict each other)."""
    if off and location:
        raise ValueError("--data-cache DIR and --no-cache contradict each other: give one")
    return CacheSetting(location, False if off else None)


def private_location() -> Path:
    """This user's folder on local disk, for images that cannot go into the cache or memory."""
    import tempfile

    return Path(tempfile.gettempdir()) / f"cpixelcnn-{os.getuid()}" / "data"


def workers() -> int:
    """Processes that decode: ``$CPIXELCNN_DATA_WORKERS``, else every core this process may run on."""
    chosen = os.environ.get(ENV_WORKERS, "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise DataError(f"{ENV_WORKERS}={chosen}: must be a positive number of processes")
        return int(chosen)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def wait_bound() -> float:
    chosen = os.environ.get(ENV_WAIT, "").strip()
    try:
        return float(chosen) if chosen else 1800.0
    except ValueError:
        raise DataError(f"{ENV_WAIT}={chosen}: must be a number of seconds") from None


# -- reading and building --------------------------------------------------------------------------


def materialise(job: DecodeJob, cache: CacheSetting) -> np.ndarray:
    """The job's images, uint8 (N, C, S, S): mapped from the entry in the folder ``cache`` names
    (built first if missing or broken), or — caching off, or a folder this process cannot use —
    decoded into memory or a private folder (said once)."""
    folder = cache.folder()
    if folder is None or job.count == 0:
        return decode_into(job, np.empty((job.count, *job.shape), dtype=np.uint8))
    return _from_folder(job, folder, private=False)


def _from_folder(job: DecodeJob, folder: Path, private: bool) -> np.ndarray:
    team = None if private else files.team_group()
    reason = _folder_distrust(folder, team)
    if reason is not None:
        return _elsewhere(job, folder, f"it is {reason}", private)
    entry = Entry(folder, job.digest)
    images, problem = read_entry(entry, job, team)
    if images is not None:
        return images
    if problem is not None and problem.startswith("owned by"):
        return _elsewhere(job, folder, f"its entry {entry.images.name} is {problem}", private)
    if problem is not None:
        _say_once(f"cache-entry-{entry.images}", f"cpixelcnn: the data cache entry {entry.images} {problem}: decoding it afresh")
    try:
        files.make_folder(folder, team)
    except OSError as err:
        return _elsewhere(job, folder, _reason(err), private)
    try:
        lock, images = _lock_or_wait(entry, job, team)
    except OSError as err:
        if err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        return _elsewhere(job, folder, _reason(err), private)
    if images is not None:
        return images
    try:
        images = build(entry, job, team)
    except OSError as err:  # a full disk, a folder that refuses files: this run decodes elsewhere
        return _elsewhere(job, folder, _reason(err), private)
    finally:
        if lock is not None:
            os.close(lock)  # drops the lock; the file stays (removing it would race a waiting process)
    _housekeeping(folder, entry, job, team)
    return images


def _reason(err: OSError) -> str:
    return f"it cannot be written ({type(err).__name__}: {err.strerror or err})"


def _folder_distrust(folder: Path, team: int | None) -> str | None:
    try:
        st = folder.stat()
    except OSError:
        return None  # made below, with this user's modes
    return files.distrust(st, team)


def read_entry(entry: Entry, job: DecodeJob, team: int | None) -> tuple[np.ndarray | None, str | None]:
    """(the mapped images, None) when the entry is complete, trusted and passes the open check;
    else (None, what is wrong: None for a missing entry)."""
    marker = entry.load_marker()
    if marker is None:
        return None, None
    try:
        for path in (entry.marker, entry.images):
            reason = files.distrust(path.stat(), team)
            if reason is not None:
                return None, reason
        if marker.get("version") != VERSION or "checksums" not in marker:
            return None, None  # an older format: superseded silently
        if marker.get("shape") != [job.count, *job.shape] or entry.images.stat().st_size != marker.get("bytes"):
            return None, "is not whole (its size or shape differs from its marker)"
        checksums = marker["checksums"]
        bad = files.first_bad_chunk(entry.images, checksums, files.sampled_chunks(len(checksums)))
        if bad is not None:
            return None, f"failed its checksum (chunk {bad + 1} of {len(checksums)})"
        images = np.load(entry.images, mmap_mode="c", allow_pickle=False)  # copy-on-write: a stray write never reaches the file
    except (OSError, ValueError):
        return None, None
    if images.dtype != np.uint8 or list(images.shape) != marker["shape"]:
        return None, "holds other images than its marker says"
    entry.touch()
    remember_file(images, str(entry.images), images.offset)
    return images, None


def _lock_or_wait(entry: Entry, job: DecodeJob, team: int | None) -> tuple[int | None, np.ndarray | None]:
    """(the held build lock's descriptor, None), or (None, the images another process built while
    this one waited), or (None, None): build without the lock — it could not be taken (said once),
    its holder died, or the wait reached its bound."""
    import fcntl

    fd = os.open(entry.lock_path, os.O_RDWR | os.O_CREAT, files.file_mode(team))  # EROFS, EACCES: the folder cannot be written (the caller's)
    start, pause, said, images = time.monotonic(), 0.2, False, None
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                images, _ = read_entry(entry, job, team)  # built by the holder this process may have waited for
                if images is not None:
                    break
                files.write_holder(fd)
                return fd, None
            except BlockingIOError:
                pass
            except OSError as err:
                _no_lock(entry, err)
                break
            images, _ = read_entry(entry, job, team)
            if images is not None:
                break
            holder = files.read_holder(fd)
            who = str(holder) if holder else "another process"
            if holder is not None and holder.dead:
                _say(f"cpixelcnn: {who}, which was decoding the same images into {entry.images}, is gone: building them here")
                break
            waited = time.monotonic() - start
            if waited >= wait_bound():
                _say(f"cpixelcnn: waited {waited:.0f} s for {who} decoding the same images into {entry.images} ({ENV_WAIT}): building them here too")
                break
            if not said:
                _say(f"cpixelcnn: waiting for {who}, which is decoding the same images into {entry.images}")
                said = True
            time.sleep(pause)
            pause = min(pause * 1.5, 5.0)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None, images


def _no_lock(entry: Entry, err: OSError) -> None:
    _say_once(
        f"cache-lock-{entry.folder}",
        f"cpixelcnn: the data cache {entry.folder} cannot be locked ({type(err).__name__}: {err.strerror or err}): "
        "going on without the lock (builders of one entry may then decode it twice; none reads another's pixels)",
    )


def build(entry: Entry, job: DecodeJob, team: int | None) -> np.ndarray:
    """Decode into this process's own partial file (its space reserved first: a full disk fails
    here, not as a crash inside the mapping), checksum it, make it durable, rename it into place,
    then write the marker. On any failure only this process's own partial file is removed."""
    from numpy.lib.format import open_memmap

    from cpixelcnn.atomic_io import atomic_write_json, fsync_path

    partial = entry.new_partial()
    shape = (job.count, *job.shape)
    try:
        out = open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        with open(partial, "r+b") as f:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        decode_into(job, out, destination=str(entry.images))
        out.flush()
        del out
        size = partial.stat().st_size
        checksums = files.chunk_checksums(partial, size, threads=workers())
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(partial, files.file_mode(team))
        os.replace(partial, entry.images)
    except BaseException:  # a bad source file, Ctrl-C, a full disk: no partial file of ours is left behind
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    fsync_path(entry.folder)
    atomic_write_json(
        entry.marker,
        {
            "format": FORMAT,
            "version": VERSION,
            "shape": list(shape),
            "bytes": size,
            "chunk": files.CHUNK,
            "checksums": checksums,
            "identity": job.identity,
            "what": job.what,
            "key": job.key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "built_by": f"{files.host()}:{os.getpid()}",
        },
    )
    with contextlib.suppress(OSError):
        os.chmod(entry.marker, files.file_mode(team))
    images, problem = read_entry(entry, job, team)
    if images is None:
        raise OSError(f"the cache entry {entry.images} did not read back whole ({problem or 'unreadable'})")
    return images


def _housekeeping(folder: Path, entry: Entry, job: DecodeJob, team: int | None) -> None:
    """After a build: superseded entries of the same source (not in use), leftovers of killed
    builds, and the size bound."""
    for other in files.entries(folder):
        if other.digest == entry.digest:
            continue
        marker = other.load_marker()
        if marker is None or marker.get("identity") != job.identity:
            continue
        with contextlib.suppress(OSError):
            if files.distrust(other.marker.stat(), team) is None and not other.in_use():
                other.remove()
    files.remove_leftovers(folder)
    limit = files.size_limit()
    if limit is not None:
        removed, left = files.evict(folder, limit, keep=entry, team=team)
        if left > limit:
            _say_once(
                f"cache-limit-{folder}",
                f"cpixelcnn: the data cache {folder} holds {describe_size(left)}, more than {ENV_LIMIT} ({describe_size(limit)}): "
                "the entries past it are in use",
            )


def _elsewhere(job: DecodeJob, folder: Path, why: str, private: bool) -> np.ndarray:
    """Where ``folder`` cannot serve this job: in memory when the images fit in MEMORY_SHARE of what
    is free, else this user's private folder on local disk (said once, with the size)."""
    from cpixelcnn.host import host_memory_free

    free, _ = host_memory_free()
    size = describe_size(job.nbytes)
    if private or job.nbytes <= MEMORY_SHARE * free:
        _say_once(
            f"data-cache-{folder}",
            f"cpixelcnn: the data cache {folder} cannot be used ({why}): decoding the {size} of {job.what} in memory "
            f"(choose a folder of your own with --data-cache DIR or ${ENV_LOCATION}, or say --no-cache)",
        )
        return decode_into(job, np.empty((job.count, *job.shape), dtype=np.uint8))
    own = private_location()
    _say_once(
        f"data-cache-{folder}",
        f"cpixelcnn: the data cache {folder} cannot be used ({why}): decoding the {size} of {job.what} into {own} "
        f"(more than half of the {describe_size(free)} of memory free; choose a folder with --data-cache DIR)",
    )
    return _from_folder(job, own, private=True)


def _say_once(key: str, message: str) -> None:
    from cpixelcnn.notices import warn_once

    warn_once(key, message)


# -- decoding --------------------------------------------------------------------------------------

_JOB: DecodeJob | None = None  # the job and destination forked decoding processes inherit (nothing is pickled but indices)
_OUT: np.ndarray | None = None


def decode_into(job: DecodeJob, out: np.ndarray, destination: str | None = None) -> np.ndarray:
    """Have every part of ``job`` write its rows of ``out`` (N, C, S, S): in this process for small
    jobs, else on ``workers()`` forked processes that write into ``out`` directly — a file mapping
    (the cache entry being built) or shared memory — each part as soon as it is decoded."""
    global _JOB, _OUT
    count = job.count
    n_workers = min(workers(), len(job.parts)) if job.parallel and count >= PARALLEL_FROM and _can_fork() else 1
    announce = count >= ANNOUNCE_FROM
    start = time.perf_counter()
    if announce:
        where = f" into {destination}" if destination else " in memory"
        _say(f"cpixelcnn: decoding {count:,} images of {job.what} on {n_workers} process{'es' if n_workers != 1 else ''}{where}")
    offsets = np.cumsum([0] + [part.rows for part in job.parts]).tolist()
    tasks = [(index, offsets[index]) for index in range(len(job.parts))]
    with _progress(count, announce) as advance:
        if n_workers == 1:
            for index, offset in tasks:
                advance(_write_part(job, out, index, offset))
        else:
            if not isinstance(out, np.memmap):  # memory the workers can write into: shared, anonymous
                out = _shared_like(out)
            _JOB, _OUT = job, out
            try:
                for rows in _on_workers(tasks, n_workers, job.what):
                    advance(rows)
            finally:
                _JOB = _OUT = None
    if announce:
        seconds = time.perf_counter() - start
        _say(f"cpixelcnn: decoded {count:,} images in {seconds:.1f} s ({count / max(seconds, 1e-9):,.0f} images/s)")
    return out


def _write_part(job: DecodeJob, out: np.ndarray, index: int, offset: int) -> int:
    part = job.parts[index]
    part(out[offset : offset + part.rows])
    return part.rows


def _forked_part(task: tuple[int, int]) -> int:
    return _write_part(_JOB, _OUT, *task)


def _default_signals() -> None:
    """In a decoding process: SIGTERM and SIGUSR1 end it again (the parent's handlers — the
    trainer's stop signals — would keep it alive when its pool is shut down); Ctrl-C is the parent's."""
    import signal

    for name, action in (("SIGTERM", signal.SIG_DFL), ("SIGUSR1", signal.SIG_DFL), ("SIGINT", signal.SIG_IGN)):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), action)


def _on_workers(tasks: list[tuple[int, int]], n_workers: int, what: str):
    """The rows each task wrote, as they finish, on ``n_workers`` forked processes (all forked at the
    first submission, before the pool's own thread starts). A process that dies — the kernel's
    out-of-memory killer — ends the decoding with one line instead of a wait for ever."""
    import concurrent.futures
    import multiprocessing
    import warnings
    from concurrent.futures.process import BrokenProcessPool

    with warnings.catch_warnings():  # Python 3.12+ warns that forking a process with threads may deadlock: the workers run PIL and numpy only
        warnings.simplefilter("ignore", DeprecationWarning)
        pool = concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("fork"), initializer=_default_signals)
        try:
            futures = [pool.submit(_forked_part, task) for task in tasks]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    try:
        for future in concurrent.futures.as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise DataError(f"a process decoding {what} died (out of memory? {n_workers} decode at once; {ENV_WORKERS}=1 decodes in one)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _can_fork() -> bool:
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _shared_like(out: np.ndarray) -> np.ndarray:
    """An array like ``out`` in anonymous shared memory (forked processes write into it, this one reads)."""
    import mmap

    buffer = mmap.mmap(-1, max(1, out.nbytes))
    return np.frombuffer(buffer, dtype=out.dtype, count=out.size).reshape(out.shape)


@contextlib.contextmanager
def _progress(total: int, announce: bool):
    """advance(n) for a progress bar on a terminal (stderr), for large jobs only."""
    if not (announce and sys.stderr.isatty()):
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="img", unit_scale=True, desc="decoding", leave=False, file=sys.stderr) as bar:
        yield bar.update


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
