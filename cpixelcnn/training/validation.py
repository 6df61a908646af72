"""Validation: the held-out images, their figures (bits/dim, Bayes accuracy), and which record is best."""

from __future__ import annotations

import torch

from cpixelcnn.data import Dataset, has_split, load_dataset
from cpixelcnn.data.types import brief
from cpixelcnn.training.data import class_images


def validation_source(data: str, split: str, val_data: str | None, val_split: str) -> str:
    """What ``val_data`` resolves to: the training data's own validation split when it has one
    (and it is not the split trained on) or ``--val-split N`` holds images out, if not given;
    ``"none"`` turns validation off."""
    if val_data is not None:
        return val_data
    if val_split.isdigit():
        return data
    return data if split != val_split and has_split(data, val_split) else "none"


def validation_set(source: str, cfg, class_names: list[str]) -> Dataset | None:
    """The held-out images validated on (at most ``cfg.val_limit``, a fixed random subset),
    labelled in the training set's class order (``class_names``; empty for an unconditional model,
    whose images go unlabelled — those of ``cfg.only_class`` for one class's model); None for ``source == "none"``."""
    if source == "none":
        return None
    split = "validation" if cfg.holdout else cfg.val_split
    val = load_dataset(source, split, cfg.image_size, cfg.in_channels, seed=cfg.seed, holdout=cfg.holdout)
    if cfg.only_class is not None:
        val = class_images(val, cfg.only_class, source)
    if not class_names:  # an unconditional model: bits/dim only
        labels = torch.full((len(val),), -1, dtype=torch.long)
    else:
        if sorted(val.class_names) != sorted(class_names):
            raise ValueError(
                f"the validation set {source} has classes ({brief(val.class_names)}) that differ from the training set's ({brief(class_names)})"
            )
        if not val.has_labels:
            raise ValueError(f"the {cfg.val_split} split of {source} has images without labels; validation needs them")
        labels = torch.tensor([class_names.index(val.class_names[i]) for i in val.labels.tolist()], dtype=torch.long)
    keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.val_limit].sort().values
    return val.subset(keep, labels, class_names)


def validation_figures(model, val: Dataset, batch_size: int) -> dict:
    """Bits/dim and (conditional models) Bayes-classifier accuracy on the validation images."""
    from cpixelcnn.classifier import classify
    from cpixelcnn.metrics import dataset_bpd

    bpd = dataset_bpd(model, val.images, val.labels if model.num_classes else None, batch_size=batch_size)
    accuracy = None
    if model.num_classes:
        # (image, class) pairs per pass: a pass without gradients holds a small part of what a training image does; with
        # a thousand classes, one pass per image with every class would not
        predicted, _ = classify(model, val.images, max_batch=batch_size * min(model.num_classes, 4))
        accuracy = (predicted == val.labels).sum().item() / len(val)
    return dict(val_bpd=bpd, val_accuracy=accuracy, val_n=len(val))


def is_better(record: dict, best: dict | None, keep_best: str) -> bool:
    """Whether a validation record beats the best so far: by accuracy (ties: lower bits/dim) or by bits/dim."""
    if best is None:
        return True
    if keep_best == "accuracy" and record.get("val_accuracy") is not None and record["val_accuracy"] != best.get("val_accuracy"):
        return record["val_accuracy"] > (best.get("val_accuracy") or -1.0)
    return record["val_bpd"] < best["val_bpd"]


def latest_validation(history: list[dict]) -> dict | None:
    return next((r for r in reversed(history) if "val_bpd" in r), None)
