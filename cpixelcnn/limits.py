"""Ranges of the numeric settings a user gives (flags and TrainConfig fields alike), checked before
anything is allocated: far beyond any sensible run, far below what would exhaust memory by accident."""

from __future__ import annotations

import math

RANGES = {
    "batch_size": (1, 65536),
    "image_size": (1, 512),
    "epochs": (1, 10**6),
    "max_steps": (1, 10**9),
    "log_every": (1, 10**9),
    "nr_resnet": (1, 64),
    "nr_filters": (1, 2048),
    "nr_logistic_mix": (1, 256),
    "nr_mix": (1, 256),
    "embedding_dim": (1, 4096),
    "val_limit": (1, 10**7),
    "val_every": (1, 10**6),
    "max_skipped": (1, 10**6),
    "sample_every": (0, 10**6),
    "samples_per_class": (1, 1000),
    "n": (1, 10_000),
    "samples": (1, 1000),
    "scale": (1, 32),
    "fid_samples_per_class": (1, 10_000),
}


def check_range(name: str, value, flag: str | None = None) -> None:
    """One-line ValueError naming the flag (default: ``--name``) when ``value`` is outside its range (None: not given)."""
    if value is None or name not in RANGES:
        return
    low, high = RANGES[name]
    flag = flag or f"--{name.replace('_', '-')}"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or not low <= value <= high
    ):
        raise ValueError(f"{flag} must be >= {low} and <= {high}, got {value!r}")
