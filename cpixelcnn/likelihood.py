"""Log-likelihoods of images under a model, batch by batch, in eval mode: the one loop that
classification, evaluation, scoring and the trainer's validation share.

Input convention, everywhere: images (N, C, H, W) either uint8 (as data sets hold them, mapped or
in memory; converted to the model's float dtype a batch at a time) or floating point already on
the model's 2^bits grid of [-1, 1]. Log-likelihoods are float64, in nats, on the host.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.utils import parametrize

from cpixelcnn.devices import float64_math, model_device_and_dtype, to_float64
from cpixelcnn.ops.dmol import dmol_log_prob, quantize_to_grid
from cpixelcnn.stopping import raise_if_stopped


@contextlib.contextmanager
def evaluating(model):
    """``model`` in eval mode (dropout off), without gradients, its weight-norm weights computed
    once for all batches; its own mode is given back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), parametrize.cached():
            yield model
    finally:
        model.train(was_training)


def as_model_input(images: torch.Tensor, model) -> torch.Tensor:
    """uint8 images → [-1, 1] in the model's input dtype (computed in it: exact levels for a float64
    model) on its device; float images → its device, as they are."""
    device, dtype = model_device_and_dtype(model)
    if images.dtype == torch.uint8:
        return images.to(device=device, dtype=dtype) / 127.5 - 1.0
    return images.to(device)


def levels_present(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The distinct values (at most 256) of uint8 images (N, ...), read ``chunk`` images at a time
    (a mapped data set is never copied whole)."""
    seen = torch.zeros(256, dtype=torch.bool)
    for start in range(0, images.shape[0], chunk):
        seen |= torch.bincount(images[start : start + chunk].reshape(-1).cpu(), minlength=256) > 0
    return seen.nonzero()[:, 0].to(torch.uint8)


def check_images(model, images: torch.Tensor) -> None:
    """Shape, channels and the model's bit grid, once for all batches (a one-line ValueError):
    uint8 images on the (at most 256) levels present, float images as they are."""
    device = next(model.parameters()).device
    first = as_model_input(images[:1], model).float() if images.dtype == torch.uint8 else images[:1].to(device)
    model.check_inputs(first, torch.zeros(1, dtype=torch.long, device=device) if model.num_classes else None)
    quantize_to_grid(as_model_input(levels_present(images), model) if images.dtype == torch.uint8 else images.to(device), model.bits)


def log_likelihoods(
    model,
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 64,
    per_pixel: bool = False,
    image_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """log p(x_r | y_r) in nats for rows r = 0 … R−1 (R = len(labels), or of ``image_of``, or N): image
    ``images[image_of[r]]`` (``image_of`` None: image r), class ``labels[r]`` (None: an unconditional
    model). ``batch_size`` rows per forward pass. Returns (R,), or (R, H, W) with ``per_pixel``:
    float64 on the host. The inputs are checked once (:func:`check_images`), not per batch. A stop
    signal (:mod:`cpixelcnn.stopping`) ends the loop between two batches with :class:`~cpixelcnn.stopping.Stopped`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if model.num_classes and labels is None:
        raise ValueError("a class-conditional model needs a label per image for its likelihood")
    check_images(model, images)
    device = next(model.parameters()).device
    rows = len(labels) if labels is not None else (len(image_of) if image_of is not None else images.shape[0])
    pieces = []
    with evaluating(model):
        for start in range(0, rows, batch_size):
            raise_if_stopped()
            stop = min(start + batch_size, rows)
            which = image_of[start:stop] if image_of is not None else slice(start, stop)
            x = as_model_input(images[which.to(images.device) if image_of is not None else which], model)
            y = labels[start:stop].to(device) if model.num_classes else None
            log_prob = dmol_log_prob(x, model(x, y), bits=model.bits, backend=model.backend, per_pixel=per_pixel, check=False)
            with float64_math():
                pieces.append(to_float64(log_prob).cpu())
    with float64_math():
        return torch.cat(pieces) if pieces else torch.zeros((0, *images.shape[-2:]) if per_pixel else (0,), dtype=torch.float64)
