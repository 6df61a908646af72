"""Polyak averaging of the weights (PixelCNN++ evaluates and samples with the average)."""

from __future__ import annotations

import torch


class PolyakAverage:
    """Polyak averages of every floating-point tensor of the model's state: avg ← avg + (1 − d)(w − avg),
    with TensorFlow's warm-up d = min(decay, (1 + n) / (10 + n)) after n updates, so that a short run's
    average follows its recent weights instead of staying near the initialisation (0.9995 has a
    half-life of ~1400 steps)."""

    def __init__(self, model, decay: float, saved: dict[str, torch.Tensor] | None, updates: int = 0):
        """``saved``: the averages of the checkpoint resumed from (checked when it was opened);
        ``updates``: how many updates they have had."""
        self.decay, self.updates = decay, updates
        current = model.state_dict()
        self.state = {k: (saved[k] if saved is not None else v.detach()).to(v.device, copy=True) for k, v in current.items()}
        self.keys = [k for k, v in self.state.items() if v.is_floating_point()]

    @torch.no_grad()
    def update(self, model) -> None:
        current = model.state_dict()
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_([self.state[k] for k in self.keys], [current[k].detach() for k in self.keys], 1.0 - decay)
        self.updates += 1

    def model(self, like):
        """A copy of the model ``like`` carrying the averaged weights (same device and backend)."""
        averaged = type(like)(**like.config).to(next(like.parameters()).device)
        averaged.load_state_dict(self.state)
        averaged.backend = like.backend
        return averaged
