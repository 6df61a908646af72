"""Perturbations of uint8 training images: the training augmentation and the likelihood-ratio mutation."""

from __future__ import annotations

import torch


def mutate(images: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each value of uint8 images (B, C, H, W) with probability ``rate`` by a uniformly
    random level 0..255 — the perturbation Ren et al. (2019) train a likelihood-ratio background
    model with, so that it learns generic statistics rather than the data's semantics."""
    if not rate:
        return images
    hit = torch.rand(images.shape, generator=generator) < rate
    noise = torch.randint(0, 256, images.shape, generator=generator, dtype=torch.uint8)
    return torch.where(hit, noise, images)


def augment(images: torch.Tensor, generator: torch.Generator, flip: bool = True, jitter: int = 16) -> torch.Tensor:
    """Training augmentation on uint8 (B, C, H, W): random horizontal flips and a per-image,
    per-channel brightness shift of up to ±jitter levels; results stay on the 8-bit grid."""
    out = images
    if flip:
        flips = torch.rand(images.shape[0], generator=generator) < 0.5
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    if jitter:
        shift = torch.randint(-jitter, jitter + 1, (images.shape[0], images.shape[1], 1, 1), generator=generator)
        out = (out.to(torch.int16) + shift).clamp(0, 255).to(torch.uint8)
    return out
