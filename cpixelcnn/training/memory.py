"""Memory planned before the first step: what a training step needs on its device, against what
the device has free — measured, not guessed.

- **The step** (forward, loss and backward, as configured: activation checkpointing, bf16
  autocast, the discriminative term's pairs) runs on 2 and on 4 images on the device itself, and
  a line through the two peaks gives the memory of any batch (activations grow linearly with it).
  On CUDA the peak is the caching allocator's (``max_memory_allocated``) above what was allocated
  before; on the CPU the process's peak resident memory (VmHWM, reset through
  ``/proc/self/clear_refs`` after freed memory is handed back with ``malloc_trim``) above its
  resident memory before. How close it comes: ``tests/test_clusters.py`` and docs/clusters.md.
- **What training adds** to the weights, counted exactly from the parameters: their gradients,
  Adam's two moments, the Polyak average and, under torchrun, DDP's gradient buckets.
- **Free**: CUDA's ``mem_get_info`` (plus what the allocator holds unused); on the host the least
  of MemAvailable, the cgroup's limit less its usage and the address-space limit (RLIMIT_AS) less
  the address space in use, shared by the ranks on this machine.

A batch needing more than 90 % of what is free is refused in one line naming the largest batch
that fits and whether ``--checkpoint-activations`` or ``--amp bf16`` would fit the asked one;
``--batch-size auto`` takes the largest that fits (a multiple of 8 per process from 8 on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import torch

from cpixelcnn.host import host_memory_limits, status_bytes
from cpixelcnn.ops.dmol import dmol_log_prob

SAFETY = 0.9  # of the free memory a plan may use: room for the allocator's slack and what the estimate misses
PROBE = (2, 4)  # images per process of the two measured steps
GB = 2**30


@dataclasses.dataclass
class Footprint:
    """What training takes on one process: ``added`` bytes beside the weights (gradients, Adam,
    Polyak, DDP buckets) and a step of ``fixed`` + ``per_image`` × images bytes. ``fits_probe``
    False: even the smaller probe did not fit (``per_image`` is then a lower bound)."""

    added: int
    fixed: float
    per_image: float
    fits_probe: bool = True

    def need(self, images: int) -> float:
        return self.added + self.fixed + self.per_image * images

    def largest(self, free: float) -> int:
        """The most images per process whose step fits ``SAFETY`` × ``free`` (0: not even one)."""
        if not self.fits_probe:
            return 0
        room = SAFETY * free - self.added - self.fixed
        return max(0, math.floor(room / max(self.per_image, 1.0)))


class OutOfMemoryInProbe(Exception):
    """A measured step ran out of memory."""


# -- measuring ------------------------------------------------------------------------------------


def measure(model, cfg, device: torch.device, world: int, *, checkpoint_activations: bool, amp: str | None) -> Footprint:
    """The footprint of training ``model`` as ``cfg`` says on ``device``, with the given activation
    checkpointing and autocast (the alternatives a refusal names are measured the same way)."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    added = params * (3 + (1 if cfg.ema else 0) + (1 if world > 1 else 0))  # gradients, Adam's moments; Polyak; DDP buckets
    pairs = model.num_classes if cfg.discriminative and model.num_classes else 1  # the discriminative term runs every (image, class) pair
    peaks = []
    was_training, was_checkpointing = model.training, model.checkpoint_activations
    model.train()
    model.checkpoint_activations = checkpoint_activations
    try:
        for p in model.parameters():
            p.grad = torch.zeros_like(p)  # gradients are counted in ``added``, not in the step
        _probe_step(model, cfg, device, 1, amp)  # one-time costs (kernels, caches) are not a batch's
        for images in PROBE:
            peaks.append(_peak(device, lambda n=images: _probe_step(model, cfg, device, n * pairs, amp)))
    except OutOfMemoryInProbe:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return Footprint(added, 0.0, 0.0, fits_probe=False)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        model.checkpoint_activations = was_checkpointing
    per_image = max((peaks[1] - peaks[0]) / (PROBE[1] - PROBE[0]), 1.0)
    return Footprint(added, max(0.0, peaks[0] - per_image * PROBE[0]), per_image)


def _probe_step(model, cfg, device: torch.device, images: int, amp: str | None) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (images, cfg.in_channels, cfg.image_size, cfg.image_size), generator=generator).float() / 127.5 - 1).to(device)
    y = (torch.arange(images) % model.num_classes).to(device) if model.num_classes else None
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            params = model(x, y)
        (-dmol_log_prob(x, params, bits=model.bits, backend=cfg.backend, check=False).mean()).backward()
    except (torch.OutOfMemoryError, MemoryError) as err:
        raise OutOfMemoryInProbe from err
    except RuntimeError as err:
        if is_out_of_memory(err) or "could not create a primitive" in str(err):  # oneDNN's words when it cannot allocate a workspace
            raise OutOfMemoryInProbe from err
        raise


def _peak(device: torch.device, step) -> int:
    """Bytes a step adds at its peak on ``device``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _hand_back_freed_memory()
    before = status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the resident memory now
    step()
    return max(0, status_bytes("VmHWM") - before)


def measurable(device: torch.device) -> bool:
    """Whether a step's peak can be measured on ``device`` (CUDA; the CPU on Linux)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and os.access("/proc/self/clear_refs", os.W_OK) and os.path.exists("/proc/self/status")


def _hand_back_freed_memory() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA or host allocation failure (torch's messages for both)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text or "DefaultCPUAllocator" in text)


# -- what is free ---------------------------------------------------------------------------------


def free_memory(device: torch.device) -> tuple[float, str]:
    """(bytes this process may still use on ``device``, what limits it)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), f"free on {torch.cuda.get_device_name(device)}"
    limits = host_memory_limits()
    share = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # the ranks on this machine share its memory
    free, why = min((value, why) for value, why in limits if value is not None)
    return free / share, why + (f", shared by {share} processes" if share > 1 else "")


# -- the plan -------------------------------------------------------------------------------------


@dataclasses.dataclass
class MemoryPlan:
    """The global ``batch_size`` to train with, the bytes one process is estimated to ``need`` for
    it beside the weights (None: not planned), and a ``line`` saying so."""

    batch_size: int
    need: float | None
    line: str


def plan_batch(model, cfg, device: torch.device, ranks, images: int) -> MemoryPlan:
    """``cfg.batch_size`` when it fits (a one-line ValueError with the advice when it does not),
    or for ``auto`` the largest that fits, at most ``images``. Devices whose peak cannot be
    measured are not planned."""
    if not measurable(device):
        if cfg.batch_size == "auto":
            raise ValueError(f"--batch-size auto measures a step's memory, which this package cannot do on {device}: give a number")
        return MemoryPlan(cfg.batch_size, None, f"memory: not planned on {device} (a step's peak cannot be measured there)")
    how = f"measured on {PROBE[0]} and {PROBE[1]} images, scaled"
    footprint = measure(model, cfg, device, ranks.world, checkpoint_activations=cfg.checkpoint_activations, amp=cfg.amp)
    if device.type == "cpu":
        _hand_back_freed_memory()
    free, why = free_memory(device)  # after the measured steps: what the allocator keeps of them is not free either
    largest = footprint.largest(free)
    if cfg.batch_size == "auto":
        per_rank = min(largest, images // ranks.world)
        per_rank = per_rank // 8 * 8 if per_rank >= 8 else per_rank
        if per_rank < 1:
            raise ValueError(_refusal(model, cfg, device, ranks, free, why, footprint, 1, how))
        bound = "the largest that fits" if per_rank < images // ranks.world else "the whole training set (more would fit)"
        return MemoryPlan(
            per_rank * ranks.world,
            footprint.need(per_rank),
            f"memory: --batch-size auto took {per_rank * ranks.world} ({per_rank} per process), {bound}: "
            f"a step needs about {size(footprint.need(per_rank))} of the {size(free)} {why} ({how})",
        )
    per_rank = cfg.batch_size // ranks.world
    if per_rank > largest:
        raise ValueError(_refusal(model, cfg, device, ranks, free, why, footprint, per_rank, how))
    return MemoryPlan(
        cfg.batch_size, footprint.need(per_rank), f"memory: a step needs about {size(footprint.need(per_rank))} of the {size(free)} {why} ({how})"
    )


def _refusal(model, cfg, device, ranks, free: float, why: str, footprint: Footprint, per_rank: int, how: str) -> str:
    """The one line that refuses a batch: what it needs, what is free, the largest that fits, and which switches would fit it."""
    asked = "--batch-size auto: even 1 image per process" if cfg.batch_size == "auto" else f"--batch-size {cfg.batch_size}"
    need = (
        f"about {footprint.need(per_rank) / GB:.2f} GB" if footprint.fits_probe else f"more than is free (a step of {PROBE[1]} images ran out of it)"
    )
    largest = footprint.largest(free) * ranks.world
    fits = f"the largest batch that fits is {largest}" if largest >= ranks.world else "no batch fits"
    alternatives = []
    for flag, setting in (
        ("--checkpoint-activations", dict(checkpoint_activations=True, amp=cfg.amp)),
        ("--amp bf16", dict(checkpoint_activations=cfg.checkpoint_activations, amp="bf16")),
    ):
        if (flag == "--checkpoint-activations" and cfg.checkpoint_activations) or (flag == "--amp bf16" and cfg.amp == "bf16"):
            continue
        other = measure(model, cfg, device, ranks.world, **setting)
        verdict = "would fit it" if per_rank <= other.largest(free) else "would not"
        alternatives.append(f"{flag} {verdict} ({size(other.need(per_rank))})" if other.fits_probe else f"{flag} would not")
    switches = ("; " + ", ".join(alternatives)) if alternatives else ""
    return f"{asked} needs {need} per process on {device} ({how}), {size(free)} is {why}: {fits}{switches}"


def size(nbytes: float) -> str:
    """Bytes in words: MB below a gigabyte, GB with two decimals above."""
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / 2**20:.0f} MB"
