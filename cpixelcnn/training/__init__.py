"""Training: a run directory that can always be resumed, on one CPU/GPU or many (torchrun).

Run directory (``--out``; every name is defined once, in :mod:`cpixelcnn.rundir`):
    config.json               model config, class names, training config, step
    checkpoint.safetensors    model weights (safetensors: loading runs no code)
    ema.safetensors           Polyak-averaged weights (--ema), used by sample/classify/evaluate
    training_state.pt         optimizer, LR schedule, and the TrainingState (step, epoch, position,
                              skipped steps, Polyak updates, best record)
    checkpoints/step-N/       the last two complete checkpoints (the four files above; those are
                              hard links to the newest); written every --checkpoint-every minutes
                              and at epoch ends, each whole or not at all
    best/                     the best model so far by validation (a complete run directory)
    metrics.jsonl             one JSON object per log interval, per epoch and per validation pass
    curve.png                 training and validation bits/dim and validation accuracy against step
    samples/epoch_XXXX.png    per-class sample grids (``--sample-every``)

Crash safety: a ``kill -9`` loses at most --checkpoint-every minutes; ``--resume`` picks the newest
checkpoint that loads with finite weights (an unreadable newest one is set aside as
``checkpoints/unreadable-step-N``), drops metrics lines torn by the kill or written after that
checkpoint, and removes temporary files. Non-finite steps are skipped and never reach a checkpoint.

Data parallel (``torchrun --nproc_per_node N -m cpixelcnn train ...``): ``--batch-size`` is the
global batch, split evenly over ranks by a DistributedSampler; gradients are averaged, so the
run follows the single-process run with the same global batch. Only rank 0 writes files.

Modules, one job each: ``config`` (every setting, its check and its flag), ``state`` (where the
run stands), ``objectives`` (loss, parameter groups, finite-step guard), ``averaging`` (Polyak),
``checkpoints`` (resuming), ``validation``, ``reporting`` (progress, metrics, curve, W&B),
``distributed`` (ranks), ``data`` (the images and their order), ``errors``, ``trainer`` (the loop),
``run`` (``train``: the run directory's owner).
"""

from cpixelcnn.training.averaging import PolyakAverage
from cpixelcnn.training.config import ModelConfig, TrainConfig
from cpixelcnn.training.errors import CheckpointWriteFailed, OutOfMemory, TrainingDiverged, TrainingInterrupted, TrainingPreempted
from cpixelcnn.training.run import train
from cpixelcnn.training.state import TrainingState
from cpixelcnn.training.trainer import Trainer

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "TrainingState",
    "PolyakAverage",
    "Trainer",
    "train",
    "TrainingInterrupted",
    "TrainingPreempted",
    "TrainingDiverged",
    "CheckpointWriteFailed",
    "OutOfMemory",
]
