"""Run directories are owned objects: marked when created, written by one process at a time.

``RUN/.cpixelcnn-run`` (JSON: format, version, which command created it, when) marks a directory
as a cpixelcnn run. Commands that write a run (``train``, ``demo``, ``import``) :func:`claim` it
first: an empty or new directory becomes a run; a directory that is already one of ours is kept
(a run written before the marker existed — a ``config.json`` with our ``format_version`` — is
recognised and marked); anything else is refused with one line, so nothing of the user's is ever
overwritten or deleted. :class:`RunLock` is an exclusive ``flock`` on ``RUN/.lock`` held for the
life of a writer: the operating system releases it when the process dies (``kill -9`` leaves no
stale lock), and a second writer is refused naming the holder's pid and host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from cpixelcnn.rundir.layout import CONFIG_NAME, LOCK_NAME, MARKER_FORMAT, MARKER_NAME, MARKER_VERSION, RunDirError


def _legacy_run(run_dir: Path) -> bool:
    """A run written before the marker existed: its config.json is one of ours."""
    try:
        config = json.loads((run_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("format_version"), int) and isinstance(config.get("model"), dict)


DEMO_FILES = {"run", "samples.png", "report.json"}  # what `cpixelcnn demo` writes into its folder


def _legacy_demo(folder: Path) -> bool:
    """A demo folder written before the marker existed: only the demo's own files, its run one of ours."""
    names = {p.name for p in folder.iterdir()}
    return names <= DEMO_FILES and "run" in names and is_run(folder / "run")


def kind_of(folder: str | os.PathLike) -> str | None:
    """``"run"`` or ``"demo"`` for a folder of ours (marked, or written before the marker), else None."""
    folder = Path(folder)
    marker = folder / MARKER_NAME
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        return data.get("kind", "run") if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None
    if _legacy_run(folder):
        return "run"
    return "demo" if folder.is_dir() and _legacy_demo(folder) else None


def is_run(run_dir: str | os.PathLike) -> bool:
    return kind_of(run_dir) == "run"


def _write_marker(folder: Path, creator: str, kind: str) -> None:
    from cpixelcnn.atomic_io import atomic_write_json

    atomic_write_json(
        folder / MARKER_NAME,
        {"format": MARKER_FORMAT, "version": MARKER_VERSION, "kind": kind, "created_by": creator, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    )


def claim(folder: str | os.PathLike, creator: str = "train", flag: str = "--out", kind: str = "run") -> Path:
    """Make ``folder`` one of ours of ``kind`` (``"run"``, or ``"demo"`` for the demo's output
    folder), creating it, or refuse: a non-empty directory that is not ours of that kind is a
    RunDirError naming it, and nothing in it is touched. Returns the path."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{flag} {folder} is a file, not a directory")
    if folder.is_dir() and any(folder.iterdir()):
        found = kind_of(folder)
        if found != kind:
            what = "a cpixelcnn run directory" if kind == "run" else "a cpixelcnn demo folder"
            also = f" (it is a cpixelcnn {found} folder)" if found else ""
            raise RunDirError(f"{flag} {folder} is not empty and is not {what}{also}: choose a new or empty directory (nothing in it was changed)")
        if not (folder / MARKER_NAME).is_file():
            _write_marker(folder, creator, kind)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, creator, kind)
    return folder


def replace_run(run_dir: str | os.PathLike, fill, creator: str) -> Path:
    """Replace the run ``run_dir`` whole by a new one filled by ``fill(directory)``: built in a hidden
    sibling, swapped in by renames, the old run removed only after (it is one of ours, checked)."""
    import shutil

    from cpixelcnn.atomic_io import new_temp_dir

    run_dir = Path(run_dir).resolve()
    if not is_run(run_dir):
        raise RunDirError(f"{run_dir} is not a cpixelcnn run directory; not replacing it")
    new = new_temp_dir(run_dir.parent, f".{run_dir.name}.new.")
    try:
        _write_marker(new, creator, "run")
        fill(new)
        old = new_temp_dir(run_dir.parent, f".{run_dir.name}.old.")
        os.rename(run_dir, old / run_dir.name)
        os.rename(new, run_dir)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return run_dir


def require_run(run_dir: str | os.PathLike, flag: str = "--out") -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{flag} {run_dir} is not a cpixelcnn run directory (it does not exist): nothing to resume")
    if not is_run(run_dir):
        raise RunDirError(f"{flag} {run_dir} is not a cpixelcnn run directory (no {MARKER_NAME} or {CONFIG_NAME} of ours): nothing was changed")
    if not (run_dir / MARKER_NAME).is_file():  # written before the marker existed: mark it now
        _write_marker(run_dir, "train", "run")
    return run_dir


class RunLock:
    """Exclusive, process-lifetime lock on a run directory (``with RunLock(run): ...``)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(
                    f"{self.path.parent} is being written by another process ({holder}); wait for it to finish or choose another --out"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race a waiting writer)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_writable_run(folder: str | os.PathLike, replace: bool, creator: str) -> None:
    """Refuse, before any work, a ``folder`` a command may not write a new run into: one that is
    not ours, or one holding a run when ``replace`` was not asked for. Nothing is changed."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        if not is_run(folder):
            claim(folder, creator)  # raises: not ours
        if not replace:
            raise RunDirError(
                f"--out {folder} already holds a cpixelcnn run: pass --replace to replace it whole (weights, EMA, state, checkpoints), "
                "or choose another --out"
            )


def write_run(folder: str | os.PathLike, fill, creator: str) -> Path:
    """A new run in ``folder`` filled by ``fill(directory)``, under the run's lock: the folder claimed
    when new or empty, a run already there replaced whole (checked first by :func:`check_writable_run`)."""
    folder = Path(folder)
    if is_run(folder):
        with RunLock(folder):
            return replace_run(folder, fill, creator)
    with RunLock(claim(folder, creator)):
        fill(folder)
    return folder
