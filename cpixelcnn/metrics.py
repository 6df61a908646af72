"""Evaluation metrics: bits/dim on a data set, a classification report, and FID (predictions come
from :func:`cpixelcnn.classifier.classify`).

The Fréchet distance is computed as
    ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½
with symmetric eigendecompositions in float64 (negative eigenvalues from rounding clamped to 0).
Σ₁^½ Σ₂ Σ₁^½ is symmetric positive semi-definite, so the result is real and finite even when the
covariances are singular or nearly so — where ``scipy.linalg.sqrtm(Σ₁ Σ₂)`` returns complex
values (the failure seen with few, low-variance samples).
"""

from __future__ import annotations

import os

import torch

from cpixelcnn.classifier import classification_report, classify_dataset  # noqa: F401  (the report: with its figures)
from cpixelcnn.data.types import to_uint8
from cpixelcnn.devices import float64_math, to_float64
from cpixelcnn.likelihood import log_likelihoods
from cpixelcnn.ops.dmol import bits_per_dim
from cpixelcnn.sampling import per_class_samples


class FIDUnavailable(RuntimeError):
    """No Inception feature extractor is available (optional dependency or weights missing)."""


def dataset_bpd(model, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int = 64) -> float:
    """Mean bits/dim of uint8 images (N, C, H, W) under the model (with their labels if conditional)."""
    log_prob = log_likelihoods(model, images, labels if model.num_classes else None, batch_size=batch_size)
    with float64_math():
        return bits_per_dim(log_prob, images.shape).mean().item()


def _sym_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh(matrix)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); real and ≥ 0 for any PSD inputs."""
    with float64_math():  # on the host (inputs are moved there)
        return _frechet_distance(*(torch.as_tensor(t).cpu() for t in (mu1, sigma1, mu2, sigma2)))


def _frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    sigma1, sigma2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    if mu1.shape != mu2.shape or mu1.dim() != 1:
        raise ValueError(f"means must be vectors of one length, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be {d}x{d}, got {tuple(sigma1.shape)} and {tuple(sigma2.shape)}")
    for t in (mu1, mu2, sigma1, sigma2):
        if not torch.isfinite(t).all():
            raise ValueError("FID statistics contain NaN or inf")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    root1 = _sym_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_covmean
    return max(0.0, value.item())


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 feature vectors, got {tuple(features.shape)}")
    with float64_math():
        features = to_float64(features)
        return features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])


FID_DIMS = (64, 192, 768, 2048)


def inception_extractor(dims: int = 192, device: str | torch.device = "cpu"):
    """pytorch-fid's InceptionV3 at ``dims`` (64/192/768/2048). Needs the optional extra ``[fid]``
    and its weights already in the torch hub cache: nothing is downloaded at run time."""
    if dims not in FID_DIMS:
        raise ValueError(f"--fid-dims must be one of {', '.join(map(str, FID_DIMS))}, got {dims}")
    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
    except Exception as err:  # noqa: BLE001 - ImportError, or torchvision failing to import beside torch
        raise FIDUnavailable(f"FID needs pytorch-fid (pip install 'cpixelcnn[fid]'), which cannot be imported here: {err}") from None
    weights = torch.hub.get_dir() + "/checkpoints/" + FID_WEIGHTS_URL.rsplit("/", 1)[-1]
    if not os.path.isfile(weights):
        raise FIDUnavailable(f"FID needs the InceptionV3 weights at {weights}; they are not downloaded at run time")
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).to(device).eval()

    @torch.no_grad()
    def extract(images_uint8: torch.Tensor) -> torch.Tensor:
        feats = []
        for start in range(0, images_uint8.shape[0], 128):
            batch = images_uint8[start : start + 128].to(device).float() / 255.0
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            out = model(batch)[0]
            feats.append(out.reshape(out.shape[0], -1).cpu())
        return torch.cat(feats)

    return extract


def fid(real_uint8: torch.Tensor, fake_uint8: torch.Tensor, dims: int = 192, device="cpu") -> float:
    """FID between two sets of uint8 images (N, C, H, W) with Inception features of ``dims``."""
    extract = inception_extractor(dims, device)
    return frechet_distance(*feature_statistics(extract(real_uint8)), *feature_statistics(extract(fake_uint8)))


def evaluate_dataset(model, data, batch_size: int = 64, fid_samples_per_class: int = 0, fid_dims: int = 192, seed: int = 0) -> tuple[dict, list[str]]:
    """``cpixelcnn evaluate``'s figures on a :class:`~cpixelcnn.data.Dataset`: bits/dim and (for a
    conditional model) Bayes accuracy when the data are labelled; FID of
    ``fid_samples_per_class`` samples per class against the data when asked (0: no FID).
    Returns (result: n, bpd, accuracy, per_class_accuracy, fid, fid_dims; notes for the user)."""
    result, notes = {"n": len(data), "bpd": None, "accuracy": None, "fid": None}, []
    if model.num_classes and not data.has_labels:
        notes.append("labels unknown for this split: no bpd or accuracy (they need the true class)")
    else:
        result["bpd"] = dataset_bpd(model, data.images, data.labels if model.num_classes else None, batch_size=batch_size)
        if model.num_classes:
            report = classify_dataset(model, data, batch_size)[2]
            result.update(accuracy=report["accuracy"], per_class_accuracy=report["per_class_accuracy"])
    if fid_samples_per_class:
        try:
            fake = per_class_samples(model, fid_samples_per_class, tuple(data.images.shape[-2:]), seed=seed)
            result["fid"] = fid(data.images, to_uint8(fake), dims=fid_dims, device=next(model.parameters()).device)
            result["fid_dims"] = fid_dims
        except FIDUnavailable as err:
            notes.append(f"cpixelcnn: no FID: {err}")
    return result, notes
