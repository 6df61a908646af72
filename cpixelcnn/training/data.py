"""The training images and their order: a labelled split with at least two classes, shuffled per
epoch by a DistributedSampler seeded by (seed, epoch) and split evenly over the ranks."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cpixelcnn.data import Dataset, load_dataset


@dataclass
class TrainingData:
    images: Dataset
    sampler: torch.utils.data.DistributedSampler
    per_rank: int  # images per step on this rank
    steps_per_epoch: int

    def epoch_order(self, epoch: int) -> list[int]:
        self.sampler.set_epoch(epoch)
        return list(self.sampler)

    def batch(self, order: list[int], position: int) -> torch.Tensor:
        """The indices of this rank's images at ``position`` of an epoch's ``order``."""
        return torch.tensor(order[position * self.per_rank : (position + 1) * self.per_rank])


def load_training_data(cfg, class_names: list[str] | None, ranks) -> TrainingData:
    """``cfg.split`` of ``cfg.data`` (less the ``--val-split N`` held out), labelled in ``class_names``' order when given (a resumed run's)."""
    data = load_dataset(cfg.data, cfg.split, cfg.image_size, cfg.in_channels, class_names=class_names, seed=cfg.seed,
                        holdout=cfg.holdout)  # fmt: skip
    if not data.has_labels:
        raise ValueError(f"the {cfg.split} split of {cfg.data} has images without labels; training needs labels")
    if len(data.class_names) < 2:
        raise ValueError(f"{cfg.data} has a single class ({data.class_names[0]}); a class-conditional model needs at least 2")
    per_rank = cfg.batch_size // ranks.world
    sampler = torch.utils.data.DistributedSampler(range(len(data)), num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=cfg.seed,
                                                  drop_last=True)  # fmt: skip
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch < 1:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(data)} training images")
    return TrainingData(data, sampler, per_rank, steps_per_epoch)
