"""Reading one image file as the model sees it: orientation, bit depth, transparency, the centred
square and the size; every failure is a one-line :class:`DataError` naming the file."""

from __future__ import annotations

import dataclasses
import functools
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from cpixelcnn.data.types import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


_ORIENTATION = 0x0112  # the EXIF tag
MAX_IMAGE_PIXELS = 64_000_000  # larger images are refused before decoding (PIL's decompression-bomb guard)


def _to_8bit(img):
    """16-bit grey (PIL modes I;16*, I) → 8-bit L, scaled (not clipped): v·255/65535 rounded. The
    data pipeline is 8-bit; models of fewer bits quantize further when they read it."""
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode == "I":
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode != "I" or values.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8), mode="L")
    return img


def _flatten_alpha(img):
    """Transparent pixels are composited onto white (as image viewers show them)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img


def load_image(path: Path, size: int, channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """One image file as uint8 (C, size, size): see :func:`decode_image`."""
    try:
        fd = os.open(path, os.O_RDONLY)  # without Python's file objects: a few microseconds of every small image
        try:
            data = os.read(fd, os.fstat(fd).st_size + 1)
            while True:  # a file that grew while it was read, or a read cut short
                more = os.read(fd, 1 << 20)
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
    except OSError as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err.strerror or err}") from None
    return decode_image(data, path, size, channels, out)


def decode_image(data: bytes, name, size: int, channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """The bytes of one image file (``name`` for messages) as uint8 (C, size, size), written into
    ``out`` when given: EXIF orientation applied, 16-bit grey scaled to 8 bits, alpha composited
    onto white, the centred square cropped first and then resized (so a very long image never
    becomes a huge intermediate).

    A plain 8-bit PNG already at the size and colour asked for (what downsampled data sets hold)
    takes :func:`_plain_png`, 2.5 times as fast; it decodes to the same pixels."""
    out = np.empty((channels, size, size), dtype=np.uint8) if out is None else out
    if not _plain_png(data, size, channels, out):
        out[:] = _decode(data, name, size, channels)
    return out


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {3: 2, 1: 0}  # channels -> PNG colour type: truecolour RGB, greyscale
_PNG_SKIPS_PLAIN = {b"tRNS", b"eXIf", b"PLTE", b"acTL"}  # transparency, orientation, a palette, animation: the general path
_PNG_TARGETS = threading.local()  # per thread, {(size, channels): (pixels, PIL image over them)}: what _plain_png decodes into


def _png_target(size: int, channels: int):
    """A PIL image over a uint8 (size, size, 4 or 1) array of ours (PIL keeps RGB as RGBX), and the
    (channels, size, size) view of that array the decoded pixels are copied out of."""
    targets = _PNG_TARGETS.__dict__.setdefault("by_shape", {})
    if (size, channels) not in targets:
        from PIL import Image

        mode = "RGBX" if channels == 3 else "L"
        pixels = np.zeros((size, size, 4 if channels == 3 else 1), dtype=np.uint8)
        targets[size, channels] = (pixels[..., :channels].transpose(2, 0, 1), Image.frombuffer(mode, (size, size), pixels, "raw", mode, 0, 1))
    return targets[size, channels]


@functools.cache
def _png_unfilter():
    """The compiled PNG row reconstruction (``cpixelcnn._C.png_unfilter``), or None without the extension (PIL decodes then)."""
    from cpixelcnn._extension import _C

    return getattr(_C, "png_unfilter", None)


def _plain_png(data: bytes, size: int, channels: int, out: np.ndarray) -> bool:
    """Decode into ``out`` (C, size, size) an 8-bit, non-interlaced PNG of ``size``x``size`` in the
    colour type ``channels`` asks for, with no transparency, palette, EXIF or animation, without
    PIL's Python layers (chunk CRCs checked as PIL checks them): zlib inflates and the extension
    reconstructs the rows into ``out`` (2x faster than PIL at 64x64), or, without the extension,
    PIL's own PNG decoder writes into memory of ours. False for any other file, or anything unexpected: the general
    path then decodes it (or names what is wrong)."""
    if not data.startswith(_PNG_SIGNATURE):
        return False
    try:
        pos, header, compressed = 8, None, []
        while pos + 12 <= len(data):
            length, kind = struct.unpack_from(">I4s", data, pos)
            body = data[pos + 8 : pos + 8 + length]
            if len(body) != length or pos + 12 + length > len(data):
                return False
            if kind in (b"IHDR", b"IDAT") and zlib.crc32(kind + body) != struct.unpack_from(">I", data, pos + 8 + length)[0]:
                return False
            if kind == b"IHDR":
                header = struct.unpack(">IIBBBBB", body)
            elif kind == b"IDAT":
                compressed.append(body)
            elif kind == b"IEND":
                break
            elif kind in _PNG_SKIPS_PLAIN:
                return False
            pos += 12 + length
        if header is None or header != (size, size, 8, _PNG_COLOUR[channels], 0, 0, 0) or not compressed:
            return False
        unfilter = _png_unfilter()
        if unfilter is not None:  # inflate here, reconstruct the rows in C++ straight into out
            inflater = zlib.decompressobj()
            expected = size * (1 + size * channels)
            raw = inflater.decompress(b"".join(compressed), expected + 1)  # bounded: a small file cannot inflate to gigabytes
            return len(raw) == expected and inflater.eof and unfilter(raw, out, size, channels)
        from PIL import Image

        pixels, target = _png_target(size, channels)
        decoder = Image._getdecoder(target.mode, "zip", ("RGB" if channels == 3 else "L", 0))
        decoder.setimage(target.im, (0, 0, size, size))
        try:
            consumed, error = decoder.decode(b"".join(compressed))
        finally:
            decoder.cleanup()
        if consumed >= 0 or error < 0:  # truncated, or corrupt: the general path names the problem
            return False
        out[...] = pixels
    except Exception:  # noqa: BLE001 - an internal of PIL changed or the file is odd: the general path decides
        return False
    return True


def _decode(data: bytes, name, size: int, channels: int) -> np.ndarray:
    import io
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"image {name} is {img.width}x{img.height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed (a decompression bomb?)"
                    )
                if img.getexif().get(_ORIENTATION, 1) != 1:  # exif_transpose copies the image even when it has nothing to do
                    img = ImageOps.exif_transpose(img)
                img = _flatten_alpha(_to_8bit(img))
                if img.mode != ("RGB" if channels == 3 else "L"):
                    img = img.convert("RGB" if channels == 3 else "L")
                side = min(img.size)
                if side < 1:
                    raise DataError(f"image {name} is empty ({img.width}x{img.height})")
                if img.width != img.height:
                    left, top = (img.width - side) // 2, (img.height - side) // 2
                    img = img.crop((left, top, left + side, top + side))
                if side != size:
                    img = img.resize((size, size), Image.BICUBIC)
                arr = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        MemoryError,
    ) as err:
        raise DataError(f"cannot read image {name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


READER_VERSION = 2  # of decode_image: a change to what it makes of a file must change this (it names the data cache's entries)
PART_ROWS = 1024  # images per part of a decode job


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """A part of a decode job: image files → uint8 (rows, C, size, size), written into ``out``."""

    paths: tuple[str, ...]
    size: int
    channels: int

    @property
    def rows(self) -> int:
        return len(self.paths)

    def __call__(self, out: np.ndarray) -> None:
        for i, path in enumerate(self.paths):
            load_image(path, self.size, self.channels, out[i])


def probe_files(root: Path, relative: list[str], at_most: int = 16) -> tuple[int | None, int | None]:
    """(side, channels) that ``at_most`` files spread over ``relative`` share (:func:`probe_images`)."""
    step = max(1, len(relative) // at_most)
    return probe_images(root / name for name in relative[::step][:at_most])


def probe_images(sources) -> tuple[int | None, int | None]:
    """(side, channels) that the images ``sources`` (paths or binary files) share, from their headers
    alone (None where they differ, are not square, or cannot be read)."""
    from PIL import Image

    sizes, channels = set(), set()
    for source in sources:
        try:
            with Image.open(source) as img:
                sizes.add(img.size)
                channels.add(1 if img.mode in ("1", "L", "I", "I;16", "F", "LA") else 3)
        except (OSError, ValueError):
            return None, None
    ((width, height),) = sizes if len(sizes) == 1 else ((None, None),)
    side = width if width is not None and width == height else None
    return side, (channels.pop() if len(channels) == 1 else None)


def decode_files(root: Path, relative: list[str], what: str, reader: str, size: int, channels: int, cache, split: str = "") -> np.ndarray:
    """The image files ``relative`` to ``root`` (the ``split`` of a layout that has several) as uint8
    (N, channels, size, size), decoded once into the data cache ``cache`` names (keyed by their
    names, sizes and modification times) and mapped after."""
    from cpixelcnn.data.cache import DecodeJob, fingerprint, materialise

    key = {
        "reader": reader,
        "decoder": READER_VERSION,
        "root": str(root.resolve()),
        "split": split,
        "size": size,
        "channels": channels,
        "files": fingerprint(root, relative),
    }
    base = f"{root}/"
    parts = [ImageFiles(tuple(base + name for name in relative[i : i + PART_ROWS]), size, channels) for i in range(0, len(relative), PART_ROWS)]
    return materialise(DecodeJob(what, key, (channels, size, size), parts), cache)


def fit_pixels(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 RGB images (N, 3, S, S) → (N, channels, size, size) as :func:`decode_image` makes them
    from files (PIL's luma for grey, bicubic resizing); the images themselves when nothing changes."""
    if images.shape[-1] == size and channels == 3:
        return images
    from PIL import Image

    out = np.empty((len(images), channels, size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        img = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
        img = img.convert("L") if channels == 1 else img
        img = img.resize((size, size), Image.BICUBIC) if img.width != size else img
        arr = np.asarray(img, dtype=np.uint8)
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out
