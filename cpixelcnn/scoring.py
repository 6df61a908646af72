"""Per-image and per-pixel likelihood scores: bits per pixel maps, bits/dim, the Bayes class and its
margin, and likelihood ratios against a background model (Ren et al. 2019) for out-of-distribution
detection.

For a class-conditional model the score of an image is its likelihood under the mixture of the
classes, log p(x) = logsumexp_c log p(x | c) + log π_c (uniform π_c = 1/K; per-class models: the
training data's class frequencies): no label is needed, as for any image a detector is shown. The likelihood ratio is LLR(x) = log p(x) − log p_background(x), reported in
bits per dimension as ``bpd_background − bpd`` (higher: more like the training data, beyond what
the background model's generic statistics explain).
"""

from __future__ import annotations

import math

import torch

from cpixelcnn.classifier import class_log_likelihoods, class_log_priors, classify
from cpixelcnn.devices import float64_math
from cpixelcnn.likelihood import log_likelihoods
from cpixelcnn.plot import likelihood_map_png

LN2 = math.log(2.0)


def image_log_likelihoods(model, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images (N, C, H, W) → (log p(x) (N,) in nats, float64 on the host; log p(x | c) (N, K)
    or None for an unconditional model). Conditional: p(x) = Σ_c π_c p(x | c)."""
    if model.num_classes:
        per_class = class_log_likelihoods(model, images, max_batch=batch_size * model.num_classes)
        with float64_math():
            return torch.logsumexp(per_class + class_log_priors(model), dim=1), per_class
    return log_likelihoods(model, images, None, batch_size=batch_size), None


def pixel_bits(model, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 64) -> torch.Tensor:
    """Bits of every pixel (its C values together), −log₂ p(x_ij | x_<ij, c): uint8 images
    (N, C, H, W), labels (N,) for a conditional model → (N, H, W) float64 on the host. Summed over
    the pixels it is the image's −log₂ p(x | c)."""
    log_prob = log_likelihoods(model, images, labels if model.num_classes else None, batch_size=batch_size, per_pixel=True)
    with float64_math():
        return -log_prob / LN2


def score_images(model, images: torch.Tensor, background=None, batch_size: int = 64) -> dict:
    """Per-image scores of uint8 images (N, C, H, W) as lists: ``bpd`` (under p(x)); for a
    conditional model ``bayes_class`` (index; the Bayes rule of :func:`cpixelcnn.classify`,
    argmax_c log p(x | c) + log π_c), ``class_bpd`` (under p(x | bayes class)) and ``margin_nats``
    (the log posterior odds of the best class over the second best: the log-likelihood difference
    plus the log prior ratio, which is 0 for a conditional model's equal priors; 0 with one class);
    with a ``background`` model ``background_bpd`` and ``llr_bpd`` = background_bpd − bpd."""
    dims = images[0].numel()
    log_px, per_class = image_log_likelihoods(model, images, batch_size)
    with float64_math():
        scores = {"bpd": (-log_px / (dims * LN2)).tolist()}
        if per_class is not None:  # the Bayes rule of classify: log p(x | c) + log π_c
            top = (per_class + class_log_priors(model)).topk(min(2, per_class.shape[1]), dim=1)
            best = top.indices[:, 0]
            scores["bayes_class"] = best.tolist()
            scores["class_bpd"] = (-per_class.gather(1, best[:, None])[:, 0] / (dims * LN2)).tolist()
            scores["margin_nats"] = (top.values[:, 0] - top.values[:, 1]).tolist() if per_class.shape[1] > 1 else [0.0] * len(images)
        if background is not None:
            if (background.in_channels, background.bits) != (model.in_channels, model.bits):
                raise ValueError(
                    f"the background model takes {background.in_channels}-channel {background.bits}-bit images, "
                    f"the model {model.in_channels}-channel {model.bits}-bit ones"
                )
            log_bg, _ = image_log_likelihoods(background, images, batch_size)
            scores["background_bpd"] = (-log_bg / (dims * LN2)).tolist()
            scores["llr_bpd"] = ((log_px - log_bg) / (dims * LN2)).tolist()
    return scores


def auroc(in_scores, out_scores) -> float:
    """Area under the ROC curve for telling ``out_scores`` (positives) from ``in_scores`` by a higher
    score: P(out > in) + ½ P(out = in), from ranks with ties averaged (Mann–Whitney U)."""
    a = torch.as_tensor(in_scores, dtype=torch.float64).flatten()
    b = torch.as_tensor(out_scores, dtype=torch.float64).flatten()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("AUROC needs at least one score of each kind")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("AUROC scores must be finite")
    values = torch.cat([a, b])
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    unique, inverse = values.unique(return_inverse=True)
    mean_rank = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks) / torch.bincount(inverse, minlength=len(unique))
    u = mean_rank[inverse[len(a) :]].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))


def likelihood_map(path, model, data, class_names: list[str], n: int = 8, batch_size: int = 64):
    """A figure of the first ``n`` images of ``data`` beside their bits per pixel (under their true
    class, or the Bayes class when the data have no labels) with each image's bits/dim; its path."""
    if n < 1:
        raise ValueError(f"--heatmap-n must be >= 1, got {n}")
    images = data.images[:n]
    labels = None
    if model.num_classes:
        labels = data.labels[: len(images)] if data.has_labels else classify(model, images, max_batch=batch_size * model.num_classes)[0]
    bits = pixel_bits(model, images, labels, batch_size=batch_size)
    dims = images[0].numel()
    captions = [
        f"{data.files[i]}\n{class_names[int(labels[i])] + ', ' if labels is not None else ''}{float(bits[i].sum()) / dims:.2f} bits/dim"
        for i in range(len(images))
    ]
    return likelihood_map_png(path, images, bits, captions)


def score_dataset(model, data, class_names: list[str], background=None, batch_size: int = 64) -> list[dict]:
    """:func:`score_images` of a :class:`~cpixelcnn.data.Dataset` as one row per image: file, label
    (its name, or empty), the scores, and the Bayes class by name."""
    scores = score_images(model, data.images, background=background, batch_size=batch_size)
    rows = []
    for i in range(len(data)):
        row = {"file": data.files[i], "label": data.class_names[int(data.labels[i])] if data.labels[i] >= 0 else ""}
        row.update({key: values[i] for key, values in scores.items()})
        if "bayes_class" in row:
            row["bayes_class"] = class_names[row["bayes_class"]]
        rows.append(row)
    return rows


def scores_summary(rows: list[dict]) -> dict:
    """The mean of every numeric score over the rows (``mean_bpd``, ``mean_llr_bpd``, …)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, float)] if rows else []
    return {f"mean_{key}": sum(r[key] for r in rows) / len(rows) for key in keys}


def scores_csv(rows: list[dict]) -> str:
    """The rows as CSV (header from the first row; floats with 6 decimals)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)
    return buf.getvalue()
