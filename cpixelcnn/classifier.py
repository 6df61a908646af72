"""Bayes classification with a class-conditional PixelCNN++ (a uniform prior) or per-class models
(:class:`~cpixelcnn.per_class_model.PerClassPixelCNN`, the training data's class priors): the one
classifier the command line, the demo, validation, scoring and the Python API use.

Input convention: :mod:`cpixelcnn.likelihood` (uint8, or on the model's grid; float64 nats on the host)."""

from __future__ import annotations

import math

import torch

from cpixelcnn.devices import float64_math
from cpixelcnn.likelihood import as_model_input, log_likelihoods  # noqa: F401  (as_model_input: the input convention, public here too)


def class_log_likelihoods(model, x: torch.Tensor, max_batch: int = 256, classes: list[int] | None = None) -> torch.Tensor:
    """log p(x | c) in nats for every image and class (``classes``: only these, in this order): x
    (B, C, H, W), uint8 or on the model's grid (module docstring) → (B, num_classes or len(classes))
    float64 on the host.

    All classes are evaluated in batched forward passes over (image, class) pairs, at most
    ``max_batch`` pairs at a time to bound memory (:func:`cpixelcnn.likelihood.log_likelihoods`).
    The model runs in eval mode.
    """
    num_classes = getattr(model, "num_classes", 0)
    if num_classes < 1:
        raise ValueError("classification needs a class-conditional model (num_classes >= 1)")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
    n = x.shape[0]
    chosen = torch.arange(num_classes) if classes is None else torch.as_tensor(classes, dtype=torch.long)
    k = len(chosen)
    pairs = chosen.repeat(n)  # pair r: image r // k, class chosen[r % k]
    return log_likelihoods(model, x, pairs, batch_size=max_batch, image_of=torch.arange(n).repeat_interleave(k)).view(n, k)


def class_log_priors(model) -> torch.Tensor:
    """log π_c (num_classes,) float64 on the host: the model's own priors (per-class models: the
    training data's class frequencies), else uniform."""
    priors = getattr(model, "class_log_priors", None)
    if priors is not None:
        return priors.to(torch.float64).cpu()
    return torch.full((model.num_classes,), -math.log(model.num_classes), dtype=torch.float64)


def classify(model, x: torch.Tensor, max_batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Bayes rule: argmax_c log p(x | c) + log π_c (:func:`class_log_priors`: uniform for a
    class-conditional model, the training data's for per-class models).

    x: (B, C, H, W), uint8 or on the model's bit grid of [-1, 1] (module docstring).
    Returns (predicted labels (B,) int64, log-likelihoods log p(x | c) (B, num_classes) float64 in nats), on the host.
    """
    log_likelihoods = class_log_likelihoods(model, x, max_batch=max_batch)
    with float64_math():
        return (log_likelihoods + class_log_priors(model)).argmax(dim=1), log_likelihoods


def classification_report(predicted: torch.Tensor, labels: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    n = len(class_names)
    confusion = torch.zeros(n, n, dtype=torch.long)
    confusion.index_put_((labels.long(), predicted.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    per_class = {name: (confusion[c, c] / confusion[c].sum()).item() if confusion[c].sum() else None for c, name in enumerate(class_names)}
    return {
        "accuracy": (predicted == labels).sum().item() / max(1, labels.shape[0]),
        "n": int(labels.shape[0]),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }


def classify_dataset(model, data, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """Bayes-classify a :class:`~cpixelcnn.data.Dataset` (``batch_size`` images per forward pass, each
    with every class): (predicted (N,), log-likelihoods (N, K), the :func:`classification_report`
    when the data are labelled, else None)."""
    if getattr(model, "num_classes", 0) < 1:
        raise ValueError("the model is unconditional: it cannot classify")
    predicted, loglik = classify(model, data.images, max_batch=batch_size * model.num_classes)
    report = classification_report(predicted, data.labels, data.class_names) if data.has_labels else None
    return predicted, loglik, report


def predictions_csv(data, predicted: torch.Tensor, loglik: torch.Tensor, class_names: list[str]) -> str:
    """The predictions as CSV: a format's own submission rows where it has them (the course
    layout's ``file,label``); otherwise a header and ``file,predicted,class,true,true_class,loglik_<class>…``
    rows (``true`` and ``true_class`` empty where the label is unknown)."""
    from cpixelcnn.data.registry import FORMATS

    layout = FORMATS.get(data.layout)
    if layout is not None and layout.prediction_rows is not None:
        lines = layout.prediction_rows(data.files, predicted)
    else:
        lines = ["file,predicted,class,true,true_class," + ",".join(f"loglik_{n}" for n in class_names)]
        for f, p, t, row in zip(data.files, predicted, data.labels.tolist(), loglik):
            truth = f"{t},{class_names[t]}" if t >= 0 else ","
            lines.append(f"{f},{int(p)},{class_names[int(p)]},{truth}," + ",".join(f"{v:.4f}" for v in row.tolist()))
    return "\n".join(lines) + "\n"
