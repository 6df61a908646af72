"""A warning alias kept for users' imports: ``from cpixelcnn.train import TrainConfig, train`` still
works and says where the names live now, :mod:`cpixelcnn.training` (the package never imports this)."""

from __future__ import annotations

from cpixelcnn.notices import moved_names

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


__getattr__, __dir__ = moved_names(__name__, _HOMES)
