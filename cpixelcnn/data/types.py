"""The types every data format shares: :class:`Dataset`, :class:`DataError`, the split names and
the two conversions between stored uint8 images and the model's [-1, 1] range."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cpixelcnn.data.mapped import gather

SPLITS = ("train", "validation", "test")
MAX_CLASSES = 10_000


class DataError(ValueError):
    """A data set that cannot be read as asked (one line, naming the file or folder)."""


def list_briefly(names, limit: int = 8) -> str:
    """Names joined with commas; past ``limit`` the first few, an ellipsis, the last and the count."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[: limit - 2])}, …, {names[-1]}: {len(names)} in all"


class Dataset:
    """Images and what is known of them. ``labels`` int64 (N,) with -1 for unknown, ``files`` the
    source names (for prediction CSVs), ``class_names``, ``layout`` the format's name.

    The images are uint8 (N, C, H, W), in memory or mapped from the data cache (:mod:`.cache`: pages
    are read when touched and shared by every process that maps them). A :meth:`subset` keeps the
    indices it selects (``rows``) instead of copying images: :meth:`gather` reads a batch,
    :attr:`images` all of them (a copy for a subset)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        class_names: list[str],
        files: Sequence[str] | None = None,
        layout: str = "builtin",
        rows: torch.Tensor | None = None,
    ):
        self.stored = images  # every image read, (M, C, H, W); ``rows`` picks this data set's N of them
        self.rows = rows
        self.labels = labels
        self.class_names = class_names
        self.files = files if files is not None else NumberedNames(len(labels))
        self.layout = layout

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """All N images, uint8 (N, C, H, W): the stored tensor itself, or for a subset its rows gathered."""
        return self.stored if self.rows is None else self.stored[self.rows]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return tuple(self.stored.shape[1:])

    def gather(self, index: torch.Tensor, pin: bool = False) -> torch.Tensor:
        """The images at ``index`` (int64 (B,)): uint8 (B, C, H, W), a copy (in pinned memory with
        ``pin``); read from the cache file, not through its mapping (:func:`.mapped.gather`)."""
        return gather(self.stored, index if self.rows is None else self.rows[index], pin)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).all()) and len(self) > 0

    def subset(self, keep: torch.Tensor, labels: torch.Tensor | None = None, class_names: list[str] | None = None) -> Dataset:
        """The images at indices ``keep`` (int64 (K,)), optionally relabelled; no image is copied."""
        return Dataset(
            self.stored,
            (self.labels if labels is None else labels)[keep],
            list(self.class_names if class_names is None else class_names),
            TakenNames(self.files, keep),
            self.layout,
            keep if self.rows is None else self.rows[keep],
        )

    def relabelled(self, labels: torch.Tensor, class_names: list[str]) -> Dataset:
        """The same images with other labels (N,) and class names."""
        return Dataset(self.stored, labels, list(class_names), self.files, self.layout, self.rows)


class NumberedNames(Sequence):
    """Names ``0000000``, ``0000001``, … for images that have no file of their own, made when read."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.count))]
        if not -self.count <= i < self.count:
            raise IndexError(i)
        return f"{i % self.count:07d}"


class TakenNames(Sequence):
    """The names at ``rows`` (int64 (K,)) of ``names``, looked up when read (a subset copies no list)."""

    def __init__(self, names: Sequence[str], rows: torch.Tensor):
        self.names, self.rows = names, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.names[int(self.rows[i])]


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [-1, 1] on the 8-bit grid."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}")
    return images.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model-range images in [-1, 1] → uint8."""
    return torch.round((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).to(torch.uint8)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) → uint8 (N, 1, H, W) by ITU-R 601 luma, rounded."""
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def fit(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) → (N, channels, size, size): luma grey, bicubic (antialiased) resize on the 8-bit grid."""
    if channels == 1:
        images = to_grey(images)
    if images.shape[-1] != size:
        resized = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images
