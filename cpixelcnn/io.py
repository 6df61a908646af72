"""File output that never leaves a half-written file: write to a temp file, then rename."""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()  # temp files are created private (0600); the renamed result gets the usual mode


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
