"""File output that never leaves a half-written file: write to a temp file, then rename."""

from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _unique(parent: Path, prefix: str, create) -> Path:
    """``create(path)`` for a fresh hidden name ``<prefix><random>.tmp`` in ``parent`` (retrying on a clash)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(6)}.tmp"
        try:
            create(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


def new_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden directory in ``parent`` with the usual permissions (0777 less the umask,
    applied by the kernel: the process umask is never changed)."""
    return _unique(Path(parent), prefix, lambda p: os.mkdir(p, 0o777))


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or directory to disk (a directory: the names renamed into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all, durably: a temp file (created 0666 less the
    umask) is written and fsynced, renamed over ``path``, and the directory fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fds = []
    tmp = _unique(path.parent, f".{path.name}.", lambda p: fds.append(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
    try:
        with os.fdopen(fds[0], "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def image_grid(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """uint8 images (N, C, H, W) → one (rows·(H+pad)+pad, nrow·(W+pad)+pad, 3) uint8 array."""
    n, c, h, w = images.shape
    if c == 1:
        images = images.expand(n, 3, h, w)
    rows = -(-n // nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for idx, img in enumerate(images.cpu().numpy()):
        r, col = divmod(idx, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = img.transpose(1, 2, 0)
    return grid


def save_png(path: str | os.PathLike, array: np.ndarray, scale: int = 1) -> Path:
    """Save an (H, W, 3) uint8 array as PNG atomically, optionally upscaled (nearest)."""
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
