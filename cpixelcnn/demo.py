"""The README's first command: train a tiny model on built-in data, sample per class, classify.

Small on purpose (16×16 built-in images, a 1/32/5 model) so that about a minute of CPU time shows
real learning: bits/dim falling, class-specific samples, and a Bayes classifier far above chance.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from cpixelcnn.classifier import classify
from cpixelcnn.data import builtin_dataset, to_model_range, to_uint8
from cpixelcnn.io import atomic_write_json, image_grid, save_png
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.ops.dmol import bits_per_dim, dmol_log_prob
from cpixelcnn.sampling import sample


def _mean_bpd(model, x, labels, batch: int = 128) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            xb, lb = x[start : start + batch], labels[start : start + batch]
            total += bits_per_dim(dmol_log_prob(xb, model(xb, lb), bits=model.bits), xb.shape).sum().item()
    return total / x.shape[0]


def run_demo(out_dir: str | Path = "cpixelcnn-demo", seconds: float = 60.0, max_steps: int | None = None, image_size: int = 16, samples_per_class: int = 4, seed: int = 0, log=print) -> dict:
    """Train for ``seconds`` (or ``max_steps``), then sample and classify. Returns the report dict,
    also written to ``out_dir/report.json`` next to ``out_dir/samples.png``."""
    if seconds <= 0 and not max_steps:
        raise ValueError("give a positive training time (seconds) or max_steps")
    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    images, labels, class_names = builtin_dataset(n_per_class=300, size=image_size, seed=seed)
    x = to_model_range(images)
    n_test = 4 * 25
    x_train, y_train, x_test, y_test = x[n_test:], labels[n_test:], x[:n_test], labels[:n_test]

    model = ConditionalPixelCNN(in_channels=3, num_classes=len(class_names), nr_resnet=1, nr_filters=32, nr_logistic_mix=5, dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.95, 0.9995))
    log(f"training a 1/32/5 conditional PixelCNN++ on {x_train.shape[0]} built-in {image_size}x{image_size} images "
        f"({', '.join(class_names)}) for {'%d steps' % max_steps if max_steps else '%.0f s' % seconds}")  # fmt: skip
    test_bpd_start = _mean_bpd(model, x_test, y_test)
    generator = torch.Generator().manual_seed(seed)
    start, step, batch = time.monotonic(), 0, 32
    model.train()
    while True:
        idx = torch.randint(0, x_train.shape[0], (batch,), generator=generator)
        xb, yb = x_train[idx], y_train[idx]
        loss = -dmol_log_prob(xb, model(xb, yb)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        elapsed = time.monotonic() - start
        if step % 25 == 0:
            log(f"  step {step:4d}  train bpd {loss.item() / (xb[0].numel() * math.log(2)):.3f}  {step * batch / elapsed:.0f} img/s")
        if (max_steps and step >= max_steps) or (not max_steps and elapsed >= seconds):
            break
    train_seconds = time.monotonic() - start

    test_bpd = _mean_bpd(model, x_test, y_test)
    log(f"test bits/dim: {test_bpd_start:.3f} before training, {test_bpd:.3f} after {step} steps ({train_seconds:.0f} s)")

    sample_labels = torch.arange(len(class_names)).repeat_interleave(samples_per_class)
    t0 = time.monotonic()
    samples = sample(model, sample_labels, image_size=(image_size, image_size), generator=torch.Generator().manual_seed(seed))
    sample_seconds = time.monotonic() - t0
    grid_path = save_png(out_dir / "samples.png", image_grid(to_uint8(samples), nrow=samples_per_class), scale=4)
    log(f"sampled {samples.shape[0]} images (one row per class) in {sample_seconds:.1f} s -> {grid_path}")

    predicted, _ = classify(model, x_test)
    accuracy = (predicted == y_test).float().mean().item()
    per_class = {name: (predicted[y_test == c] == c).float().mean().item() for c, name in enumerate(class_names)}
    log(f"Bayes classifier on {n_test} held-out images: accuracy {accuracy:.1%} (chance 25%)")
    log("  per class: " + ", ".join(f"{k} {v:.0%}" for k, v in per_class.items()))

    report = dict(
        steps=step, train_seconds=train_seconds, test_bpd_before=test_bpd_start, test_bpd=test_bpd,
        accuracy=accuracy, per_class_accuracy=per_class, samples=str(grid_path), sample_seconds=sample_seconds,
        classes=class_names, image_size=image_size,
    )  # fmt: skip
    report_path = atomic_write_json(out_dir / "report.json", report)
    log(f"report -> {report_path}")
    return report
