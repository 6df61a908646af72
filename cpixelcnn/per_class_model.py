"""Per-class models as one classifier: K unconditional PixelCNN++ models p_c(x), one per class, with
the class priors π_c of the training data — the Bayes classifier argmax_c log p_c(x) + log π_c.

:class:`PerClassPixelCNN` answers like a class-conditional model: ``model(x, labels)`` gives each
image the mixture parameters of its class's member, so likelihoods, classification, scoring and
sampling treat both kinds alike (sampling draws each class's images from its member).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cpixelcnn.model import ConditionalPixelCNN


class PerClassPixelCNN(nn.Module):
    """``members[c]``: the unconditional model of class c; ``class_counts[c]``: its training images."""

    def __init__(self, members: list[ConditionalPixelCNN], class_counts: list[int]):
        super().__init__()
        if len(members) < 2 or len(class_counts) != len(members):
            raise ValueError(
                f"a per-class model needs one member per class (at least 2) and a count for each; got {len(members)} and {len(class_counts)}"
            )
        if any(m.num_classes for m in members):
            raise ValueError("the members of a per-class model are unconditional models (num_classes=0)")
        first = members[0]
        if any((m.in_channels, m.bits, m.nr_logistic_mix) != (first.in_channels, first.bits, first.nr_logistic_mix) for m in members):
            raise ValueError("the members of a per-class model must share their channels, bits and number of logistics")
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in class_counts):
            raise ValueError(f"class counts must be positive integers, got {class_counts}")
        self.members = nn.ModuleList(members)
        self.num_classes = len(members)
        self.in_channels, self.bits, self.nr_logistic_mix = first.in_channels, first.bits, first.nr_logistic_mix
        self.class_counts = list(class_counts)
        total = sum(class_counts)
        self.class_log_priors = torch.tensor([math.log(n / total) for n in class_counts], dtype=torch.float64)

    @property
    def backend(self) -> str:
        return self.members[0].backend

    @backend.setter
    def backend(self, value: str) -> None:
        for member in self.members:
            member.backend = value

    @property
    def config(self) -> dict:
        """The members' architecture (each an unconditional model)."""
        return self.members[0].config

    def check_inputs(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        if labels is None:
            raise ValueError(f"a per-class model ({self.num_classes} classes) needs a label per image: which class's model to ask")
        self.members[0].check_inputs(x, None)
        if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int32, torch.int64) or tuple(labels.shape) != (x.shape[0],):
            raise ValueError(f"labels must be an integer tensor of shape ({x.shape[0]},)")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}]")

    @staticmethod
    def class_rows(labels: torch.Tensor):
        """(class, the batch rows (K,) of that class) for every class present in ``labels`` (B,)."""
        for c in labels.unique().tolist():
            yield c, (labels == c).nonzero()[:, 0]

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1], labels (B,) → each image's mixture parameters under its class's member (B, P, H, W)."""
        self.check_inputs(x, labels)
        out = None
        for c, rows in self.class_rows(labels):
            params = self.members[c](x[rows], None)
            if out is None:
                out = params.new_empty((x.shape[0], *params.shape[1:]))
            out[rows] = params
        return out
