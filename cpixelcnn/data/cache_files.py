"""The data cache's files, below :mod:`cpixelcnn.data.cache` (which decides when to read or build):
an entry's names, its checksums, whom it may be trusted from, whether a process has it mapped, and
the folder's housekeeping (listing, leftovers of killed builds, a size bound).

In a cache folder, for an entry named by ``<digest>``:

- ``cpixelcnn-<digest>.npy``: the images, uint8 (N, C, S, S) in numpy's format
- ``cpixelcnn-<digest>.json``: the completion marker, written last: what the images were read from,
  their shape, the file's size and a CRC-32 per 8 MiB chunk of it; its modification time is when
  the entry was last used
- ``cpixelcnn-<digest>.partial-<host>-<pid>-<random>.npy``: one builder's images being written; each
  builder writes its own and renames only its own into place (correct without any lock)
- ``cpixelcnn-<digest>.lock``: taken by a builder so that others wait instead of decoding the same
  images again (an optimisation only); it names its holder (host, pid, since when)

Nothing outside these names is ever written or removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import random
import re
import socket
import stat
import time
import zlib
from pathlib import Path

PREFIX = "cpixelcnn-"
FORMAT = "cpixelcnn-data-cache"
VERSION = 2  # 2: per-chunk checksums, builders' own partial files
CHUNK = 8 << 20  # bytes per checksum
CHECKED_AT_OPEN = 3  # chunks checked on every open besides the first (the header): the last and random others
LEFTOVER_AFTER = 24 * 3600  # seconds unmodified after which another host's partial file is a leftover
ENV_GROUP = "CPIXELCNN_DATA_CACHE_GROUP"  # a team's group: entries of its members are trusted, new files are the group's
ENV_LIMIT = "CPIXELCNN_DATA_CACHE_LIMIT"  # e.g. 200G: least recently used entries are evicted past it
_PARTIAL = re.compile(r"^cpixelcnn-([0-9a-f]+)\.partial(?:-(.+)-(\d+)-([0-9a-f]+))?\.npy$")


def host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


# -- checksums -------------------------------------------------------------------------------------


def chunk_checksums(path: Path, size: int, threads: int = 1) -> list[int]:
    """CRC-32 of every CHUNK bytes of the file (zlib's crc32 releases the GIL: ``threads`` read and sum at once)."""
    count = max(1, -(-size // CHUNK))
    fd = os.open(path, os.O_RDONLY)
    try:
        if threads <= 1 or count == 1:
            return [_chunk_crc(fd, i) for i in range(count)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda i: _chunk_crc(fd, i), range(count)))
    finally:
        os.close(fd)


def _chunk_crc(fd: int, index: int) -> int:
    return zlib.crc32(os.pread(fd, CHUNK, index * CHUNK))


def first_bad_chunk(path: Path, checksums: list[int], which=None) -> int | None:
    """The first chunk of ``which`` (all when None) whose CRC differs from ``checksums``, or None."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for index in range(len(checksums)) if which is None else sorted(which):
            if _chunk_crc(fd, index) != checksums[index]:
                return index
    finally:
        os.close(fd)
    return None


def sampled_chunks(count: int) -> set[int]:
    """What every open checks: the first chunk (the header and the first images), the last, and
    random others (a new draw each time, so repeated opens cover the file)."""
    chosen = {0, count - 1}
    if count > 2:
        chosen |= set(random.sample(range(1, count - 1), min(CHECKED_AT_OPEN - 1, count - 2)))
    return chosen


# -- trust -----------------------------------------------------------------------------------------


def team_group() -> int | None:
    """The group named by ``$CPIXELCNN_DATA_CACHE_GROUP`` (a name or a number), or None."""
    chosen = os.environ.get(ENV_GROUP, "").strip()
    if not chosen:
        return None
    import grp

    try:
        return int(chosen) if chosen.isdigit() else grp.getgrnam(chosen).gr_gid
    except KeyError:
        from cpixelcnn.data.types import DataError

        raise DataError(f"{ENV_GROUP}={chosen}: no such group on this machine") from None


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def _private_group(gid: int) -> bool:
    """The user's own group (a user-private group: named as the user, no other members)."""
    import grp

    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return False
    return gid == os.getgid() and group.gr_name == _user(os.getuid()) and set(group.gr_mem) <= {group.gr_name}


def distrust(st: os.stat_result, team: int | None) -> str | None:
    """Why a cache file or folder with this status must not be trusted, or None: owned by another
    user (root and, with a team group, the group's files apart), or writable by other users."""
    if st.st_uid not in (os.getuid(), 0) and not (team is not None and st.st_gid == team):
        return f"owned by {_user(st.st_uid)}"
    if st.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if st.st_mode & stat.S_IWGRP and st.st_gid != team and not _private_group(st.st_gid):
        return f"writable by group {_group(st.st_gid)} (set {ENV_GROUP}={_group(st.st_gid)} to share it as a team)"
    return None


def file_mode(team: int | None) -> int:
    """New entries: readable by the team (when there is one), written by their builder only."""
    return 0o640 if team is not None else 0o644


def make_folder(folder: Path, team: int | None) -> None:
    """The cache folder, made private (0700) or, for a team, the group's (2770: new files take the group)."""
    if folder.is_dir():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700 if team is None else 0o770)
        if team is not None:
            os.chown(folder, -1, team)
            os.chmod(folder, 0o2770)


# -- one entry -------------------------------------------------------------------------------------


class Entry:
    """One cache entry's files (module docstring)."""

    def __init__(self, folder: Path, digest: str):
        self.folder, self.digest = folder, digest
        stem = folder / f"{PREFIX}{digest}"
        self.images, self.marker, self.lock_path = stem.with_suffix(".npy"), stem.with_suffix(".json"), stem.with_suffix(".lock")

    def new_partial(self) -> Path:
        """A name for this process's own partial file (host, pid and a random suffix: no other builder's)."""
        return self.folder / f"{PREFIX}{self.digest}.partial-{host()}-{os.getpid()}-{os.urandom(4).hex()}.npy"

    def load_marker(self) -> dict | None:
        with contextlib.suppress(OSError, ValueError):
            marker = json.loads(self.marker.read_text())
            if isinstance(marker, dict) and marker.get("format") == FORMAT:
                return marker
        return None

    def size(self) -> int:
        return sum(p.stat().st_size for p in (self.images, self.marker) if p.exists())

    def last_used(self) -> float:
        with contextlib.suppress(OSError):
            return self.marker.stat().st_mtime
        return 0.0

    def touch(self) -> None:
        """Mark the entry used now (its marker's modification time; a folder that cannot be written is left as it is)."""
        with contextlib.suppress(OSError):
            os.utime(self.marker)

    def verify(self) -> str | None:
        """Every chunk against its checksum: None when whole, else what is wrong."""
        marker = self.load_marker()
        if marker is None:
            return "no readable completion marker"
        if marker.get("version") != VERSION or "checksums" not in marker:
            return f"written by an older cache format (version {marker.get('version')}); it is rebuilt when next read"
        try:
            size = self.images.stat().st_size
        except OSError as err:
            return f"images unreadable ({err.strerror or err})"
        if size != marker.get("bytes"):
            return f"{size:,} bytes where {marker.get('bytes'):,} were written"
        bad = first_bad_chunk(self.images, marker["checksums"])
        return None if bad is None else f"chunk {bad + 1} of {len(marker['checksums'])} (bytes {bad * CHUNK:,}+) differs from its checksum"

    def in_use(self) -> bool:
        """Whether a process has the images mapped: one holding its shared lock (any host where
        locks work), or one of this host's with it in its memory map."""
        try:
            fd = os.open(self.images, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                return True
            except OSError:
                pass  # locks do not work here: the memory maps alone tell
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        return mapped_on_this_host(str(self.images), inode)

    def remove(self) -> None:
        """The marker first (a reader then sees no entry, not a broken one), then the images."""
        for path in (self.marker, self.images):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def mapped_on_this_host(path: str, inode: int) -> bool:
    """Whether a process of this host (of those this one may inspect) maps the file ``path`` with ``inode``."""
    needle = f" {inode} "
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            with open(maps) as f:
                if any(needle in line and line.rstrip().endswith(path) for line in f):
                    return True
    return False


# -- the folder ------------------------------------------------------------------------------------


def entries(folder: Path) -> list[Entry]:
    """The entries in ``folder`` that have a marker, oldest use first."""
    found = [Entry(folder, m.name[len(PREFIX) : -len(".json")]) for m in folder.glob(f"{PREFIX}*.json") if "." not in m.name[len(PREFIX) : -5]]
    return sorted(found, key=Entry.last_used)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(folder: Path, now: float | None = None) -> list[Path]:
    """Partial files no builder will finish: of a process of this host that is gone, of another
    host unmodified for LEFTOVER_AFTER, and the fixed-name ones of the older cache format."""
    now = time.time() if now is None else now
    found = []
    for path in folder.glob(f"{PREFIX}*.partial*.npy"):
        match = _PARTIAL.match(path.name)
        if match is None:
            continue
        try:
            age = now - path.stat().st_mtime
        except OSError:
            continue
        _, their_host, pid, _ = match.groups()
        if their_host is None:  # the older format: its builder held the entry's lock
            gone = age > 600
        elif their_host == host():
            gone = not pid_alive(int(pid))
        else:
            gone = age > LEFTOVER_AFTER
        if gone:
            found.append(path)
    return found


def remove_leftovers(folder: Path) -> int:
    removed = 0
    for path in leftovers(folder):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()
            removed += 1
    return removed


def size_limit() -> int | None:
    """The bound of ``$CPIXELCNN_DATA_CACHE_LIMIT`` in bytes (e.g. 500M, 200G, 1T), or None."""
    chosen = os.environ.get(ENV_LIMIT, "").strip()
    return parse_size(chosen, ENV_LIMIT) if chosen else None


def parse_size(text: str, what: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if match is None:
        from cpixelcnn.data.types import DataError

        raise DataError(f"{what}={text}: not a size (say e.g. 500M, 200G or 1T)")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


def evict(folder: Path, limit: int, keep: Entry | None = None, team: int | None = None) -> tuple[list[Entry], int]:
    """Remove the least recently used entries until the folder holds at most ``limit`` bytes; never
    ``keep``, one a process has mapped, or one this user may not trust. (removed, bytes left)."""
    found = entries(folder)
    total = sum(e.size() for e in found)
    removed = []
    for entry in found:
        if total <= limit:
            break
        if keep is not None and entry.digest == keep.digest:
            continue
        with contextlib.suppress(OSError):
            if distrust(entry.marker.stat(), team) or entry.in_use():
                continue
            size = entry.size()
            entry.remove()
            total -= size
            removed.append(entry)
    return removed, total


def describe_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclasses.dataclass
class Holder:
    """Who holds an entry's build lock, as it wrote there."""

    host: str
    pid: int
    since: float

    def __str__(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"process {self.pid} on {self.host} (since {when}, {time.time() - self.since:.0f} s ago)"

    @property
    def dead(self) -> bool:
        """Gone, as far as this host can tell (a holder on another host is taken to be alive)."""
        return self.host == host() and not pid_alive(self.pid)


def read_holder(fd: int) -> Holder | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(os.pread(fd, 4096, 0).decode())
        return Holder(str(data["host"]), int(data["pid"]), float(data["since"]))
    return None


def write_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        text = json.dumps({"host": host(), "pid": os.getpid(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)


LOCK_ERRORS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOLCK, errno.ENOSYS, errno.EIO, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF)
