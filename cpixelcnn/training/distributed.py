"""One process or many (torchrun): the ranks, the device of this rank, and the few decisions all
ranks must agree on (whether a step is finite, whether the time limit is reached)."""

from __future__ import annotations

import os

import torch

from cpixelcnn.devices import resolve_device


class Ranks:
    """torchrun's environment, or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1
        self.on = torch.device("cpu")  # where collectives' tensors live (nccl needs CUDA ones)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device this rank trains on: one GPU per torchrun process."""
        device = resolve_device(name)
        if device.type == "cuda" and self.active:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.on = device
        return device

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the ranks (itself in a single process)."""
        if not self.active:
            return value
        value = value.clone()
        torch.distributed.all_reduce(value)
        return value / self.world

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any rank."""
        value = torch.tensor([float(flag)], device=self.on)
        if self.active:
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def main_says(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (so all stop at the same step)."""
        value = torch.tensor([float(flag)], device=self.on)
        if self.active:
            torch.distributed.broadcast(value, src=0)
        return bool(value.item())
