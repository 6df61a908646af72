"""The types every data format shares: :class:`Dataset`, :class:`DataError`, the split names and
the two conversions between stored uint8 images and the model's [-1, 1] range."""

from __future__ import annotations

import torch

SPLITS = ("train", "validation", "test")
MAX_CLASSES = 10_000


class DataError(ValueError):
    """A data set that cannot be read as asked (one line, naming the file or folder)."""


class Dataset:
    """Images in memory: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,) with -1 for unknown,
    ``files`` the source names (for prediction CSVs), ``class_names``, ``layout`` the format's name."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: list[str], files: list[str] | None = None, layout: str = "builtin"):
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.files = files if files is not None else [f"{i:07d}" for i in range(len(labels))]
        self.layout = layout

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).all()) and len(self) > 0

    def subset(self, keep: torch.Tensor, labels: torch.Tensor | None = None, class_names: list[str] | None = None) -> Dataset:
        """The images at indices ``keep`` (int64 (K,)), optionally relabelled."""
        return Dataset(self.images[keep], (self.labels if labels is None else labels)[keep],
                       list(self.class_names if class_names is None else class_names), [self.files[i] for i in keep.tolist()], self.layout)  # fmt: skip


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
