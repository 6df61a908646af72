"""Reading batches of images out of a mapped cache file without mapping them in (see :func:`gather`).
Below every other module of :mod:`cpixelcnn.data`: :mod:`.cache` remembers here which file each
mapped array comes from, and :class:`~cpixelcnn.data.types.Dataset` gathers through it."""

from __future__ import annotations

import os
import weakref


class CacheReadError(RuntimeError):
    """A cache file that no longer holds the images it was read as holding."""


def remember_file(images, path: str, offset: int) -> None:
    """``images`` (a numpy array mapped from ``path``, its data ``offset`` bytes in) can be read from
    the file, opened now (a newer entry may replace the file's name while the array is in use);
    forgotten, and the file closed, when the array goes (its address may later belong to other memory).
    The open file holds a shared lock while the array lives: the cache's eviction sees it in use."""
    if images.size:
        fd = os.open(path, os.O_RDONLY)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except (ImportError, OSError):
            pass  # no locks here (or an evictor holds it this instant): the memory map still tells
        _FILES[images.ctypes.data] = (path, offset, images.shape, fd)
        weakref.finalize(images, _forget, images.ctypes.data, fd)


def _forget(address: int, fd: int) -> None:
    _FILES.pop(address, None)
    os.close(fd)


_FILES: dict[
    int, tuple[str, int, tuple, int]
] = {}  # address of mapped images -> (their cache file, where they start in it, their shape, its descriptor)


def gather(stored, rows, pin: bool = False):
    """The images ``stored[rows]`` (uint8 tensors; ``rows`` int64 (B,)) as a new tensor, pinned when
    ``pin``. Images mapped from the cache are read with ``preadv`` instead of through the mapping:
    a page fault would map its neighbours too (megabytes of the page cache's large pages on some
    kernels), and a training process that gathers scattered images would see its resident memory
    grow by all of them over an epoch. Read, the pages stay in the page cache, shared by every
    process, and this process holds the batch."""
    import torch

    source = _FILES.get(stored.data_ptr())
    out = torch.empty((len(rows), *stored.shape[1:]), dtype=stored.dtype, pin_memory=pin)
    if source is None or source[2] != tuple(stored.shape) or not stored.is_contiguous() or not hasattr(os, "preadv"):
        torch.index_select(stored, 0, rows, out=out)
        return out
    path, start, _, fd = source
    flat = out.numpy().reshape(len(rows), -1)
    size = flat.shape[1] * flat.itemsize
    for i, row in enumerate(rows.tolist()):
        if os.preadv(fd, [flat[i]], start + row * size) != size:
            raise CacheReadError(f"{path} ended before image {row}: the cache entry was cut short while in use")
    return out
