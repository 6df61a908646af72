"""Decoded once: the first read of an image source decodes it, on every core, straight into a uint8
array on disk; every later read — any command, any torchrun rank, any run — maps that file, so the
operating system keeps one copy of its pages for all of them and reads only the pages touched.

A cache entry is named by a digest of what its images were read from (:attr:`DecodeJob.key`: the
format and its reader's version, the source, the split, the image size and channels, and the names,
sizes and modification times of the source files), so a changed, added or removed source file
names another entry and is decoded afresh; a stale image is never read. In the cache folder
(``--data-cache DIR``, ``$CPIXELCNN_DATA_CACHE``, default ``~/.cache/cpixelcnn/data``):

- ``cpixelcnn-<digest>.npy``: the images, uint8 (N, C, S, S) in numpy's format
- ``cpixelcnn-<digest>.json``: the completion marker, written last (what the images were read from,
  their shape and the file's size, checked before every read: a half-written entry is never mapped)
- ``cpixelcnn-<digest>.lock``: held by the one process that builds the entry; others wait for it
- ``cpixelcnn-<digest>.partial.npy``: the entry being written (the next builder removes a leftover)

``--no-cache`` (or ``CPIXELCNN_DATA_CACHE=off``) decodes into memory, as does a cache folder that
cannot be written (said once). Nothing outside these names is ever written or removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cpixelcnn.data.mapped import remember_file
from cpixelcnn.data.types import DataError

ENV_LOCATION = "CPIXELCNN_DATA_CACHE"  # a folder, or off / none / 0: decode in memory
ENV_WORKERS = "CPIXELCNN_DATA_WORKERS"  # processes that decode (default: every core this process may use)
OFF = ("off", "none", "0", "no", "false")
PREFIX = "cpixelcnn-"
FORMAT = "cpixelcnn-data-cache"
VERSION = 1
ANNOUNCE_FROM = 20_000  # images: a build at least this large says what it does (and a terminal shows a bar)
PARALLEL_FROM = 2_000  # images: smaller jobs decode in this process (a pool costs more than it saves)


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


def fingerprint(root: Path, relative: Sequence[str], what: str = "image") -> str:
    """A digest of the names (``relative`` to ``root``), sizes and modification times of files
    (``what`` a file is, for the message when one cannot be read). Strings, not Paths: a million
    files take a second, not five."""
    digest, base = hashlib.sha256(), f"{root}/"
    for name in relative:
        try:
            st = os.stat(base + name)
        except OSError as err:
            raise DataError(f"cannot read {what} {base + name}: {type(err).__name__}: {err.strerror or err}") from None
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# -- where ----------------------------------------------------------------------------------------

_settings: dict = {"location": None, "enabled": None}


def configure(location: str | os.PathLike | None = None, enabled: bool | None = None) -> None:
    """This process's cache: ``location`` (a folder; None: ``$CPIXELCNN_DATA_CACHE`` or the default)
    and ``enabled`` (False: decode in memory; None: on unless the environment says off). The command
    line's ``--data-cache`` and ``--no-cache`` land here."""
    _settings.update(location=None if location is None else str(location), enabled=enabled)


def location() -> Path | None:
    """The cache folder this process uses, or None when caching is off."""
    if _settings["enabled"] is False:
        return None
    chosen = _settings["location"] or os.environ.get(ENV_LOCATION, "")
    if chosen.strip().lower() in OFF and chosen.strip():
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cpixelcnn" / "data"


def workers() -> int:
    """Processes that decode: ``$CPIXELCNN_DATA_WORKERS``, else every core this process may run on."""
    chosen = os.environ.get(ENV_WORKERS, "").strip()
    if chosen:
        if not chosen.isdigit() or int(chosen) < 1:
            raise DataError(f"{ENV_WORKERS}={chosen}: must be a positive number of processes")
        return int(chosen)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- reading and building --------------------------------------------------------------------------


def materialise(job: DecodeJob) -> np.ndarray:
    """The job's images, uint8 (N, C, S, S): mapped from the cache entry (built first if missing),
    or decoded into memory when caching is off or its folder cannot be written (said once)."""
    folder = location()
    if folder is None or job.count == 0:
        return decode_into(job, np.empty((job.count, *job.shape), dtype=np.uint8))
    entry = Entry(folder, job.digest)
    images = entry.read(job)
    if images is not None:
        return images
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = entry.lock()
    except OSError as err:
        return _in_memory(job, folder, err)
    with lock:
        images = entry.read(job)  # another process may have built it while this one waited
        if images is not None:
            return images
        try:
            return entry.build(job)
        except OSError as err:  # a full disk, a folder that refuses files: this run decodes in memory
            entry.discard()
            return _in_memory(job, folder, err)
        except BaseException:  # a bad source file, Ctrl-C: no partial entry is left behind
            entry.discard()
            raise


def _in_memory(job: DecodeJob, folder: Path, err: OSError) -> np.ndarray:
    from cpixelcnn.notices import warn_once

    reason = f"{type(err).__name__}: {err.strerror or err}"
    warn_once(
        f"data-cache-{folder}",
        f"cpixelcnn: the data cache {folder} cannot be written ({reason}): decoding in memory "
        f"(choose a writable folder with --data-cache DIR or ${ENV_LOCATION}, or say --no-cache)",
    )
    return decode_into(job, np.empty((job.count, *job.shape), dtype=np.uint8))


class Entry:
    """One cache entry's files (module docstring)."""

    def __init__(self, folder: Path, digest: str):
        self.folder = folder
        stem = folder / f"{PREFIX}{digest}"
        self.images, self.marker = stem.with_suffix(".npy"), stem.with_suffix(".json")
        self.partial, self.lock_path = stem.with_suffix(".partial.npy"), stem.with_suffix(".lock")

    def read(self, job: DecodeJob) -> np.ndarray | None:
        """The mapped images if the entry is complete and whole, else None (it is then rebuilt)."""
        try:
            marker = json.loads(self.marker.read_text())
            if marker.get("format") != FORMAT or marker.get("shape") != [job.count, *job.shape]:
                return None
            if self.images.stat().st_size != marker.get("bytes"):
                return None
            images = np.load(self.images, mmap_mode="c", allow_pickle=False)  # copy-on-write: a stray write never reaches the file
        except (OSError, ValueError):
            return None
        if images.dtype != np.uint8 or list(images.shape) != marker["shape"]:
            return None
        remember_file(images, str(self.images), images.offset)
        return images

    @contextlib.contextmanager
    def lock(self):
        """Held while this process builds the entry; another builder of the same entry waits here."""
        import fcntl

        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _say(f"cpixelcnn: waiting for another process that is decoding the same images into {self.images}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the lock; the file stays (removing it would race a waiting process)

    def build(self, job: DecodeJob) -> np.ndarray:
        """Decode into ``.partial.npy`` (its space reserved first: a full disk fails here, not as a
        crash inside the mapping), make it durable, rename it into place, then write the marker."""
        from numpy.lib.format import open_memmap

        from cpixelcnn.io import atomic_write_json, fsync_path

        self.discard()
        shape = (job.count, *job.shape)
        out = open_memmap(self.partial, mode="w+", dtype=np.uint8, shape=shape)
        with open(self.partial, "r+b") as f:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        decode_into(job, out, destination=str(self.images))
        out.flush()
        del out
        with open(self.partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, self.images)
        fsync_path(self.folder)
        atomic_write_json(
            self.marker,
            {
                "format": FORMAT,
                "version": VERSION,
                "shape": list(shape),
                "bytes": self.images.stat().st_size,
                "identity": job.identity,
                "what": job.what,
                "key": job.key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        images = self.read(job)
        if images is None:
            raise OSError(f"the cache entry {self.images} did not read back whole")
        self.remove_superseded(job.identity)
        return images

    def remove_superseded(self, identity: str) -> None:
        """Remove the entries of the same identity but older files (not one another process holds:
        it may be building it; one that is mapped stays readable to the processes mapping it)."""
        import fcntl

        for marker in self.folder.glob(f"{PREFIX}*.json"):
            if marker == self.marker:
                continue
            try:
                if json.loads(marker.read_text()).get("identity") != identity:
                    continue
            except (OSError, ValueError, AttributeError):
                continue
            other = Entry(self.folder, marker.name[len(PREFIX) : -len(".json")])
            with contextlib.suppress(OSError):
                fd = os.open(other.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    other.discard()
                    other.lock_path.unlink()
                finally:
                    os.close(fd)

    def discard(self) -> None:
        """Remove this entry's files (ours by name; called with the lock held)."""
        for path in (self.marker, self.images, self.partial):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


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
