"""The training images and their order: a labelled split with at least two classes (or, for an
unconditional model, any images, their labels dropped), shuffled per
epoch by a DistributedSampler seeded by (seed, epoch) and split evenly over the ranks — or, with
``balanced``, dealt class by class so that every batch holds (as nearly as the counts allow) the
same number of images of each class.

:class:`Prefetcher` gathers each step's batch from the (mapped) images on a background thread,
augments it and pins it ahead of the step, so that the device does not wait for data."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import torch

from cpixelcnn.data import Dataset, augment, load_dataset, mutate
from cpixelcnn.data.registry import held_out_part


class RunSplits:
    """The splits one run reads, each loaded once and shared: the training split, the images
    ``--val-split N`` holds out of it, a validation split, and every per-class member's class of
    them. ``get`` answers with what was loaded before (``class_names``: a resumed conditional run's
    order, part of what a split is loaded as)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.loaded: dict[tuple, Dataset] = {}

    def get(self, data: str, split: str, class_names: list[str] | None = None) -> Dataset:
        cfg = self.cfg
        held_out = bool(cfg.holdout) and data == cfg.data and split in ("train", "validation")
        read = "train" if held_out else split
        key = (data, read, tuple(class_names) if class_names else None)
        plain = self.loaded.get((data, read, None))
        if key not in self.loaded and plain is not None and list(plain.class_names) == list(class_names or []):
            self.loaded[key] = plain  # loaded without names, and they are these: the same images and labels
        if key not in self.loaded:
            self.loaded[key] = load_dataset(data, read, cfg.image_size, cfg.in_channels, class_names=class_names, seed=cfg.seed, cache=cfg.cache)
        return held_out_part(self.loaded[key], cfg.holdout, split, data) if held_out else self.loaded[key]


def steps_per_epoch(images: int, batch_size: int, world: int) -> int:
    """Steps of one epoch of ``images`` at the global ``batch_size`` over ``world`` ranks: each rank
    takes ``images // world`` of them (the rest dropped), in batches of ``batch_size // world``."""
    return (images // world) // (batch_size // world)


@dataclass
class TrainingData:
    images: Dataset
    sampler: torch.utils.data.DistributedSampler
    per_rank: int  # images per step on this rank
    steps_per_epoch: int
    balanced: bool = False

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's image indices for ``epoch``, in order (``steps_per_epoch · per_rank`` of them)."""
        self.sampler.set_epoch(epoch)
        if not self.balanced:
            return list(self.sampler)
        dealt = balanced_order(self.images.labels, torch.Generator().manual_seed(self.sampler.seed + epoch))
        world, rank, share = self.sampler.num_replicas, self.sampler.rank, self.per_rank
        # rank r takes the r-th contiguous share of each global batch: contiguous runs of the dealt order are balanced
        return [i for step in range(self.steps_per_epoch) for i in dealt[(step * world + rank) * share : (step * world + rank + 1) * share]]

    def batch(self, order: list[int], position: int) -> torch.Tensor:
        """The indices of this rank's images at ``position`` of an epoch's ``order``."""
        return torch.tensor(order[position * self.per_rank : (position + 1) * self.per_rank])

    def prefetch(self, order: list[int], position: int, step: int, cfg, device: torch.device) -> Prefetcher:
        """This rank's batches of an epoch's ``order`` from ``position`` on (the first one at ``step``)."""
        return Prefetcher(self, order, position, step, cfg, device)


class Prefetcher:
    """The batches of one epoch from ``position`` on, made ahead of the step on a thread: gathered
    from the images, augmented as the step they belong to is seeded (so a resumed run sees the same
    ones), pinned when the device is a GPU. :meth:`next` gives (images uint8 (B, C, H, W), labels
    (B,)) on the device (copied ``non_blocking``) and adds the seconds it waited to ``waited``."""

    DEPTH = 2  # batches made ahead

    def __init__(self, data: TrainingData, order: list[int], position: int, step: int, cfg, device: torch.device):
        self.data, self.order, self.cfg, self.device = data, order, cfg, device
        self.ready: queue.Queue = queue.Queue(self.DEPTH)
        self.stopping = threading.Event()
        self.waited, self.first = 0.0, position
        self.thread = threading.Thread(target=self._fill, args=(position, step), name="cpixelcnn-prefetch", daemon=True)
        self.thread.start()

    def _fill(self, position: int, step: int) -> None:
        try:
            for position in range(position, self.data.steps_per_epoch):
                if not self._offer(self._make(self.data.batch(self.order, position), step + position - self.first)):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the training thread, which raises it
            self._offer(err)

    def _offer(self, item) -> bool:
        """Queue ``item`` once there is room; False when the consumer has stopped."""
        while not self.stopping.is_set():
            try:
                self.ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _make(self, index: torch.Tensor, step: int):
        cfg, sampler = self.cfg, self.data.sampler
        augmented = cfg.augment or cfg.mutation_rate
        pin = self.device.type == "cuda"
        images = self.data.images.gather(index, pin=pin and not augmented)
        if augmented:
            generator = torch.Generator().manual_seed(cfg.seed * 7_919 + step * sampler.num_replicas + sampler.rank)
            images = mutate(augment(images, generator) if cfg.augment else images, cfg.mutation_rate, generator)
            images = images.pin_memory() if pin else images
        labels = self.data.images.labels[index]
        return images, labels.pin_memory() if pin else labels

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        item = self.ready.get()
        if isinstance(item, BaseException):
            raise item
        images, labels = (t.to(self.device, non_blocking=True) for t in item)
        self.waited += time.perf_counter() - start
        return images, labels

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> list[int]:
    """All indices, dealt round by round: each round takes the next image of every class that has one
    left, the classes in a fresh random order, each class's images shuffled. Consecutive runs of K
    (the number of classes) hold one image per class until the smaller classes run out."""
    classes = labels.unique().tolist()
    queues = [(labels == c).nonzero()[:, 0][torch.randperm(int((labels == c).sum()), generator=generator)].tolist() for c in classes]
    order, depth = [], 0
    while any(depth < len(q) for q in queues):
        for k in torch.randperm(len(queues), generator=generator).tolist():
            if depth < len(queues[k]):
                order.append(queues[k][depth])
        depth += 1
    return order


def class_images(data: Dataset, name: str, source: str) -> Dataset:
    """The images of class ``name`` of ``data`` (read from ``source``), unlabelled: one member's data."""
    if not data.has_labels:
        raise ValueError(f"--only-class {name}: {source} has images without labels")
    if name not in data.class_names:
        raise ValueError(f"--only-class {name}: {source} has no class {name!r} ({', '.join(data.class_names[:8])})")
    keep = (data.labels == data.class_names.index(name)).nonzero()[:, 0]
    return data.subset(keep, torch.full_like(data.labels, -1), [])


def training_images(cfg, class_names: list[str] | None, splits: RunSplits) -> Dataset:
    """``cfg.split`` of ``cfg.data`` (less the ``--val-split N`` held out), labelled in ``class_names``' order when
    given (a resumed conditional run's); for an unconditional model the labels are dropped (-1)."""
    unconditional = cfg.unconditional or cfg.only_class is not None
    data = splits.get(cfg.data, cfg.split, None if unconditional else class_names)
    if cfg.only_class is not None:
        return class_images(data, cfg.only_class, cfg.data)
    if unconditional or not data.has_labels:  # asked for, or images without labels
        if class_names:  # a resumed class-conditional run
            raise ValueError(f"the {cfg.split} split of {cfg.data} has images without labels; this run's model is class-conditional")
        return data.relabelled(torch.full_like(data.labels, -1), [])
    if len(data.class_names) < 2:
        raise ValueError(
            f"{cfg.data} has a single class ({data.class_names[0]}); a class-conditional model needs at least 2: "
            "train an unconditional model of it with --unconditional"
        )
    return data


def dealt(data: Dataset, cfg, ranks) -> TrainingData:
    """The images dealt into this rank's batches of ``cfg.batch_size // ranks.world`` (a number by now)."""
    per_rank = cfg.batch_size // ranks.world
    sampler = torch.utils.data.DistributedSampler(
        range(len(data)), num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    steps = steps_per_epoch(len(data), cfg.batch_size, ranks.world)  # len(sampler) // per_rank
    if steps < 1:
        what = f"the {len(data)} training images" + (f" of class {cfg.only_class}" if cfg.only_class is not None else "")
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than {what}")
    return TrainingData(data, sampler, per_rank, steps, balanced=cfg.balanced_batches)


def with_data_shape(cfg):
    """``cfg`` with ``image_size`` and ``in_channels`` the data's own where not given (32 and RGB
    where the data has no one size or mixes grey and RGB)."""
    import dataclasses

    from cpixelcnn.data.registry import describe

    if cfg.image_size is not None and cfg.in_channels is not None:
        return cfg
    native = describe(cfg.data)
    return dataclasses.replace(cfg, image_size=cfg.image_size or native.size or 32, in_channels=cfg.in_channels or native.channels or 3)


def shape_words(cfg) -> str:
    """What the run makes of the data's images, e.g. "8x8 grey, as the data" or "32x32 RGB,
    resized from the data's 8x8 and converted from grey"."""
    from cpixelcnn.data import DataError
    from cpixelcnn.data.registry import describe

    shape = f"{cfg.image_size}x{cfg.image_size} {'RGB' if cfg.in_channels == 3 else 'grey'}"
    try:
        native = describe(cfg.data)
    except (DataError, OSError):
        return shape
    changes = []
    if native.size is None:
        changes.append("resized (the data has no one size)")
    elif native.size != cfg.image_size:
        changes.append(f"resized from the data's {native.size}x{native.size}")
    if native.channels is not None and native.channels != cfg.in_channels:
        changes.append(f"converted from {'grey' if native.channels == 1 else 'RGB'}")
    return f"{shape}, {' and '.join(changes)}" if changes else f"{shape}, as the data"
