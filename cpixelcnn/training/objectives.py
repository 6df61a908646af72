"""What training minimises and how: the likelihood loss (with the optional discriminative term),
the Adam parameter groups and schedule, and the finite-step guard (with gradient clipping)."""

from __future__ import annotations

import functools
import math

import torch

from cpixelcnn.ops.dmol import dmol_log_prob


def likelihood_loss(forward, model, x: torch.Tensor, y: torch.Tensor, discriminative: float = 0.0, backend: str = "eager") -> torch.Tensor:
    """Mean over the batch of −log p(x | y) in nats per image, plus ``discriminative`` times the
    Bayes classifier's cross-entropy when that is > 0. ``forward``: the (possibly compiled, DDP)
    network; ``model``: the bare one. x (B, C, H, W) in [-1, 1], y (B,)."""
    if discriminative:
        return joint_loss(forward, model, x, y, discriminative, backend)
    params = forward(x, y)
    return -dmol_log_prob(x, params, bits=model.bits, backend=backend, check=False).mean()


def joint_loss(forward, model, x: torch.Tensor, y: torch.Tensor, weight: float, backend: str) -> torch.Tensor:
    """Mean over the batch of −log p(x | y) + weight · CE(softmax_c log p(x | c), y), in nats per
    image: one forward pass over every (image, class) pair gives both. x (B, C, H, W), y (B,)."""
    classes = model.num_classes
    pairs_x = x.repeat_interleave(classes, dim=0)
    pairs_c = torch.arange(classes, device=x.device).repeat(x.shape[0])
    log_px = dmol_log_prob(pairs_x, forward(pairs_x, pairs_c), bits=model.bits, backend=backend, check=False).float().view(-1, classes)
    nll = -log_px.gather(1, y[:, None])[:, 0]
    return (nll + weight * torch.nn.functional.cross_entropy(log_px, y, reduction="none")).mean()


def param_groups(model, lr: float, cond_lr_scale: float) -> list[dict]:
    """Adam parameter groups: the conditioning path (class embedding, FiLM/additive heads) at
    ``lr · cond_lr_scale``, everything else at ``lr`` (one group when the scale is 1, so optimizer
    states of earlier runs still load)."""
    if cond_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    conditioning = [p for n, p in model.named_parameters() if n.startswith("class_embedding.") or ".cond_head." in n]
    ids = {id(p) for p in conditioning}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]
    if conditioning:
        groups.append({"params": conditioning, "lr": lr * cond_lr_scale})
    return groups


LR_SCHEDULES = ("exponential", "cosine")


def cosine_factor(step: int, total: int) -> float:
    """(1 + cos(π · step / total)) / 2: 1 at the first step, 0 at ``total`` and after."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


FUSED_ADAM_DEVICES = ("cpu", "cuda")  # where torch has a fused (one kernel for all parameters) Adam


def adam(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam over ``params`` (tensors or parameter groups), fused when every parameter lives on a
    device with torch's fused kernel: the same update, without a kernel launch per parameter
    tensor per statistic (at 1/40/5 on a 2-core CPU 2 ms a step instead of 7)."""
    groups = list(params)
    tensors = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.device.type in FUSED_ADAM_DEVICES and p.is_floating_point() for p in tensors)
    return torch.optim.Adam(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)


def optimizer_and_schedule(model, cfg, total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """PixelCNN++'s Adam (β = 0.95, 0.9995) with its exponential per-step learning-rate decay, or
    (``cfg.lr_schedule == "cosine"``) a cosine decay to 0 over ``total_steps``, which stills the last
    weights of a short run."""
    optimizer = adam(param_groups(model, cfg.lr, cfg.cond_lr_scale), lr=cfg.lr, betas=(0.95, 0.9995), weight_decay=cfg.weight_decay)
    if cfg.lr_schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(cosine_factor, total=total_steps))
    return optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)


def finite_step(loss: torch.Tensor, model, grad_clip: float | None, ranks) -> bool:
    """Whether this step's loss and gradients are finite — agreed by every rank (DDP has already
    averaged the gradients). With ``grad_clip`` the global gradient norm is clipped in place (only
    when finite)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
    bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(norm)).item()
    if ranks.any(bad):
        return False
    if grad_clip is not None:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    return True
