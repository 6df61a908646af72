"""The public entry to training, kept where it has always been: ``from cpixelcnn.train import
TrainConfig, train``. The implementation is the :mod:`cpixelcnn.training` package."""

from cpixelcnn.devices import resolve_device  # noqa: F401  (public here since the CLI's first release)
from cpixelcnn.rundir import METRICS_NAME, STATE_NAME  # noqa: F401
from cpixelcnn.training import (  # noqa: F401
    CheckpointWriteFailed,
    ModelConfig,
    PolyakAverage,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingState,
    train,
)
