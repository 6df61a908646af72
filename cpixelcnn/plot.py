"""Figures with matplotlib (Agg backend: no display needed): the training curve and the benchmarks'
charts. Every PNG is written atomically (temp file, then rename)."""

from __future__ import annotations

import io
from pathlib import Path

from cpixelcnn.atomic_io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a GUI backend: training runs headless for days
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int = 120) -> Path:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def training_curve_png(path: str | Path, history: list[dict], title: str = "training") -> Path:
    """Training and validation bits/dim against steps, validation accuracy on a second axis.

    ``history``: metrics.jsonl records; those with ``train_bpd`` (per log interval) and those with
    ``val_bpd`` / ``val_accuracy`` (per validation pass) are drawn."""
    plt = _pyplot()
    train = [(r["step"], r["train_bpd"]) for r in history if "train_bpd" in r]
    val = [(r["step"], r["val_bpd"]) for r in history if r.get("val_bpd") is not None]
    acc = [(r["step"], 100.0 * r["val_accuracy"]) for r in history if r.get("val_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lines = []
    if train:
        lines += ax.plot(*zip(*train), color="tab:blue", linewidth=1.2, label="training bits/dim")
    if val:
        lines += ax.plot(*zip(*val), color="tab:orange", marker="o", markersize=3, linewidth=1.5, label="validation bits/dim")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ax.grid(True, alpha=0.3)
    if acc:
        acc_ax = ax.twinx()
        lines += acc_ax.plot(*zip(*acc), color="tab:green", marker="s", markersize=3, linewidth=1.5, label="validation accuracy (%)")
        acc_ax.set_ylabel("validation accuracy (%)")
        acc_ax.set_ylim(0, 100)
    if lines:
        ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def bar_chart_png(path: str | Path, title: str, rows: list[dict], label_key: str, value_key: str, group_key: str) -> Path:
    """Grouped bars: ``value_key`` per ``label_key`` (x), one bar colour per ``group_key``."""
    plt = _pyplot()
    groups = sorted({r[group_key] for r in rows}, key=str)
    labels = list(dict.fromkeys(r[label_key] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(labels) * len(groups) / 2), 4))
    width = 0.8 / max(1, len(groups))
    for gi, group in enumerate(groups):
        values = [next((r[value_key] for r in rows if r[label_key] == label and r[group_key] == group), 0.0) for label in labels]
        ax.bar([i + gi * width for i in range(len(labels))], values, width, label=str(group))
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(labels))], labels, rotation=20, ha="right")
    ax.set_ylabel(value_key)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def line_chart_png(
    path: str | Path, title: str, series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str, log_y: bool = False
) -> Path:
    """One line with markers per entry of ``series`` (label → [(x, y), ...])."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        if points:
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def likelihood_map_png(path: str | Path, images, bits, captions: list[str], title: str = "bits per pixel") -> Path:
    """One row per image: the image, then its bits per pixel (N, H, W) as a heat map on one colour
    scale shared by every row (0 to the largest value), with a colour bar. ``images``: uint8
    (N, C, H, W); ``captions``: one per row (e.g. the image's bits/dim)."""
    plt = _pyplot()
    n = images.shape[0]
    top = max(float(bits.max()), 1e-9)
    fig, axes = plt.subplots(n, 2, figsize=(4.6, 2.1 * n + 0.4), squeeze=False)
    for row in range(n):
        picture = images[row].permute(1, 2, 0).numpy()
        axes[row, 0].imshow(
            picture[..., 0] if picture.shape[-1] == 1 else picture,
            cmap="gray" if picture.shape[-1] == 1 else None,
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        heat = axes[row, 1].imshow(bits[row].numpy(), cmap="inferno", vmin=0, vmax=top, interpolation="nearest")
        axes[row, 0].set_ylabel(captions[row], fontsize=7)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize=8)
    axes[0, 1].set_title(title, fontsize=8)
    fig.colorbar(heat, ax=axes[:, 1].tolist(), shrink=0.8, label="bits per pixel")
    return _save_untight(fig, path)


def _save_untight(fig, path: str | Path, dpi: int = 120) -> Path:
    """As :func:`_save`, without tight_layout (which cannot place a colour bar shared by several axes)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
