"""Validation: the held-out images, their figures (bits/dim, Bayes accuracy), and which record is best."""

from __future__ import annotations

import dataclasses

import torch

from cpixelcnn.data import Dataset, has_split
from cpixelcnn.data.types import list_briefly
from cpixelcnn.training.batches import RunSplits, class_images


def validation_source(data: str, split: str, val_data: str | None, val_split: str) -> str:
    """What ``val_data`` resolves to: the training data's own validation split when it has one
    (and it is not the split trained on) or ``--val-split N`` holds images out, if not given;
    ``"none"`` turns validation off."""
    if val_data is not None:
        return val_data
    if val_split.isdigit():
        return data
    return data if split != val_split and has_split(data, val_split) else "none"


ACCURACY_CLASSES = 32  # --val-accuracy auto measures Bayes accuracy up to this many classes (a pass per class and image)


@dataclasses.dataclass
class Validation:
    """What validation measures: bits/dim on ``images`` (labelled in the training set's class
    order, or -1 for an unconditional model) and Bayes accuracy on ``accuracy_images`` among
    ``accuracy_classes`` (None: no accuracy; a subset of the classes for N-way accuracy)."""

    images: Dataset
    accuracy_images: Dataset | None
    accuracy_classes: list[int] | None
    num_classes: int

    def __len__(self) -> int:
        return len(self.images)

    @property
    def passes(self) -> int:
        """Forward passes of one image per validation: one per image for bits/dim, one per class and image for accuracy."""
        extra = len(self.accuracy_images) * len(self.accuracy_classes) if self.accuracy_images is not None else 0
        return len(self.images) + extra

    def describe(self) -> str:
        """What is measured and what it costs, in words (the start line's)."""
        if self.accuracy_images is None:
            why = ""
            if self.num_classes > ACCURACY_CLASSES:
                why = (
                    f" (Bayes accuracy over {self.num_classes} classes would take {len(self.images) * (self.num_classes + 1):,} passes: "
                    "--val-accuracy on or N asks for it)"
                )
            return f"bits/dim, {self.passes:,} forward passes{why}"
        way = f"{len(self.accuracy_classes)}-way Bayes accuracy"
        if len(self.accuracy_classes) < self.num_classes:
            way += f" among {len(self.accuracy_classes)} of the {self.num_classes} classes ({len(self.accuracy_images)} images)"
        return f"bits/dim and {way}, {self.passes:,} forward passes"


def accuracy_classes(cfg, num_classes: int) -> int:
    """How many classes validation's Bayes accuracy ranges over (0: none), by ``--val-accuracy``."""
    value = str(cfg.val_accuracy)
    if num_classes < 2 or value == "off":
        return 0
    if value == "on":
        return num_classes
    if value.isdigit():
        return min(int(value), num_classes)
    return num_classes if num_classes <= ACCURACY_CLASSES or cfg.keep_best == "accuracy" else 0


def validation_set(source: str, cfg, class_names: list[str], splits: RunSplits | None = None) -> Validation | None:
    """The held-out images validated on (at most ``cfg.val_limit``, a fixed random subset),
    labelled in the training set's class order (``class_names``; empty for an unconditional model,
    whose images go unlabelled — those of ``cfg.only_class`` for one class's model), and what of
    them Bayes accuracy is measured on (:func:`accuracy_classes`); None for ``source == "none"``.
    ``splits``: the run's :class:`~cpixelcnn.training.batches.RunSplits` (images held out of the
    training split are the training split's, loaded once)."""
    if source == "none":
        return None
    split = "validation" if cfg.holdout else cfg.val_split
    same_split = cfg.holdout and source == cfg.data and cfg.only_class is None  # labelled as training's, and shared with it
    val = (splits or RunSplits(cfg)).get(source, split, class_names if same_split and class_names else None)
    if cfg.only_class is not None:
        val = class_images(val, cfg.only_class, source)
    if not class_names:  # an unconditional model: bits/dim only
        labels = torch.full((len(val),), -1, dtype=torch.long)
    else:
        if sorted(val.class_names) != sorted(class_names):
            raise ValueError(
                f"the validation set {source} has classes ({list_briefly(val.class_names)}) that differ from the training set's ({list_briefly(class_names)})"
            )
        if not val.has_labels:
            raise ValueError(f"the {cfg.val_split} split of {source} has images without labels; validation needs them")
        labels = torch.tensor([class_names.index(val.class_names[i]) for i in val.labels.tolist()], dtype=torch.long)
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))
    images = val.subset(order[: cfg.val_limit].sort().values, labels, class_names)
    k = accuracy_classes(cfg, len(class_names))
    if k == 0:
        return Validation(images, None, None, len(class_names))
    if k == len(class_names):
        return Validation(images, images, list(range(k)), k)
    chosen = torch.randperm(len(class_names), generator=torch.Generator().manual_seed(cfg.seed))[:k].sort().values
    of_chosen = order[torch.isin(labels[order], chosen)][: cfg.val_limit].sort().values
    return Validation(images, val.subset(of_chosen, labels, class_names), chosen.tolist(), len(class_names))


def validation_figures(model, val: Validation, batch_size: int) -> dict:
    """Bits/dim and (where measured) Bayes-classifier accuracy on the validation images. A stop
    signal ends it between two batches (:class:`~cpixelcnn.stopping.Stopped`)."""
    from cpixelcnn.classifier import class_log_likelihoods, class_log_priors
    from cpixelcnn.metrics import dataset_bpd

    bpd = dataset_bpd(model, val.images.images, val.images.labels if model.num_classes else None, batch_size=batch_size)
    accuracy = None
    if val.accuracy_images is not None:
        # (image, class) pairs per pass: a pass without gradients holds a small part of what a training image does
        data = val.accuracy_images
        if len(val.accuracy_classes) == model.num_classes:
            scores = class_log_likelihoods(model, data.images, max_batch=batch_size * min(model.num_classes, 4)) + class_log_priors(model)
            predicted = scores.argmax(dim=1)
        else:
            predicted = _among(model, data.images, val.accuracy_classes, batch_size)
        accuracy = (predicted == data.labels).sum().item() / max(1, len(data))
    return dict(val_bpd=bpd, val_accuracy=accuracy, val_n=len(val))


def _among(model, images: torch.Tensor, classes: list[int], batch_size: int) -> torch.Tensor:
    """The Bayes rule restricted to ``classes`` (uniform prior among them): predicted class indices (N,)."""
    from cpixelcnn.classifier import class_log_likelihoods

    loglik = class_log_likelihoods(model, images, max_batch=batch_size * min(len(classes), 4), classes=classes)
    return torch.tensor(classes)[loglik.argmax(dim=1)]


def is_better(record: dict, best: dict | None, keep_best: str) -> bool:
    """Whether a validation record beats the best so far: by accuracy (ties: lower bits/dim) or by bits/dim."""
    if best is None:
        return True
    if keep_best == "accuracy" and record.get("val_accuracy") is not None and record["val_accuracy"] != best.get("val_accuracy"):
        return record["val_accuracy"] > (best.get("val_accuracy") or -1.0)
    return record["val_bpd"] < best["val_bpd"]


def latest_validation(history: list[dict]) -> dict | None:
    return next((r for r in reversed(history) if "val_bpd" in r), None)
