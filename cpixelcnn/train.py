"""A warning alias kept for users' imports: ``from cpixelcnn.train import TrainConfig, train`` still
works and says where the names live now, :mod:`cpixelcnn.training` (the package never imports this)."""

from __future__ import annotations

import importlib
import warnings

_HOMES = {
    "resolve_device": "cpixelcnn.devices",
    "METRICS_NAME": "cpixelcnn.rundir",
    "STATE_NAME": "cpixelcnn.rundir",
    **{
        name: "cpixelcnn.training"
        for name in (
            "CheckpointWriteFailed",
            "ModelConfig",
            "PolyakAverage",
            "TrainConfig",
            "Trainer",
            "TrainingDiverged",
            "TrainingInterrupted",
            "TrainingState",
            "train",
        )
    },
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'cpixelcnn.train' has no attribute {name!r}")
    warnings.warn(f"cpixelcnn.train.{name} moved: import it from {_HOMES[name]}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted(_HOMES)
