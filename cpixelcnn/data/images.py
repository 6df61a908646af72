"""Reading one image file as the model sees it: orientation, bit depth, transparency, the centred
square and the size; every failure is a one-line :class:`DataError` naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpixelcnn.data.types import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


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


def load_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 (C, size, size): EXIF orientation applied, 16-bit grey scaled to 8 bits,
    alpha composited onto white, the centred square cropped first and then resized (so a very
    long image never becomes a huge intermediate)."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    raise DataError(
                        f"image {path} is {img.width}x{img.height} pixels, more than the {MAX_IMAGE_PIXELS:,} allowed (a decompression bomb?)"
                    )
                img = ImageOps.exif_transpose(img)
                img = _flatten_alpha(_to_8bit(img))
                img = img.convert("RGB" if channels == 3 else "L")
                side = min(img.size)
                if side < 1:
                    raise DataError(f"image {path} is empty ({img.width}x{img.height})")
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
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)
