"""Bayes classification with a class-conditional PixelCNN++ and a uniform prior."""
from __future__ import annotations

import torch
from torch.nn.utils import parametrize

from cpixelcnn.devices import float64_device, float64_math, to_float64
from cpixelcnn.ops.dmol import dmol_log_prob, quantize_to_grid


@torch.no_grad()
def class_log_likelihoods(model, x: torch.Tensor, max_batch: int = 256) -> torch.Tensor:
    """log p(x | c) in nats for every image and class: x (B, C, H, W) → (B, num_classes) float64
    (on the host when the model's device has no float64, e.g. an Apple GPU).

    All classes are evaluated in batched forward passes over (image, class) pairs, at most
    ``max_batch`` pairs at a time to bound memory. The model runs in eval mode.
    """
    num_classes = getattr(model, "num_classes", 0)
    if num_classes < 1:
        raise ValueError("classification needs a class-conditional model (num_classes >= 1)")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    device = next(model.parameters()).device
    x = x.to(device)
    model.check_inputs(x, torch.zeros(x.shape[0], dtype=torch.long, device=device))
    quantize_to_grid(x, model.bits)  # the grid check once here, not once per (image, class) pair
    pairs = x.shape[0] * num_classes
    image_of_pair = torch.arange(pairs, device=device) // num_classes
    class_of_pair = torch.arange(pairs, device=device) % num_classes
    with float64_math():  # the sums of log-probabilities in float64, on the host for devices without it
        out = torch.empty(pairs, dtype=torch.float64, device=float64_device(device))
    was_training = model.training
    model.eval()
    try:
        with parametrize.cached():
            for start in range(0, pairs, max_batch):
                idx = slice(start, start + max_batch)
                images = x[image_of_pair[idx]]
                params = model(images, class_of_pair[idx])
                log_prob = dmol_log_prob(images, params, bits=model.bits, backend=model.backend, check=False)
                with float64_math():
                    out[idx] = to_float64(log_prob)
    finally:
        model.train(was_training)
    return out.view(x.shape[0], num_classes)


def classify(model, x: torch.Tensor, max_batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes rule with a uniform prior: argmax_c log p(x | c).

    x: (B, C, H, W) on the model's bit grid of [-1, 1].
    Returns (predicted labels (B,) int64, log-likelihoods (B, num_classes) float64 in nats).
    """
    log_likelihoods = class_log_likelihoods(model, x, max_batch=max_batch)
    return log_likelihoods.argmax(dim=1), log_likelihoods
