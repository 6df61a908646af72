"""What ends a run early, each with the state of the run directory in its message."""

from __future__ import annotations

from pathlib import Path

from cpixelcnn.stopping import REQUEUE_STATUS  # noqa: F401  (what a preempted command exits with)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the checkpoint at ``run_dir`` was saved first."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir} (continue with --resume)")
        self.run_dir, self.step = run_dir, step


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient; no weights were touched by them."""


class CheckpointWriteFailed(RuntimeError):
    """Writing into the run directory failed (disk full, ...); the previous checkpoint is intact."""


class TrainingPreempted(Exception):
    """SIGTERM or SIGUSR1 (what SLURM sends before it ends or requeues a job): every rank stopped at
    the same step boundary and the checkpoint of that step was written; exit with REQUEUE_STATUS."""

    def __init__(self, run_dir: Path, step: int, signal_name: str):
        super().__init__(
            f"stopped by {signal_name} at step {step}; checkpoint written in {run_dir} "
            "(the same command with --resume auto, or --resume, continues it)"
        )
        self.run_dir, self.step, self.signal_name = run_dir, step, signal_name


class OutOfMemory(RuntimeError):
    """The device ran out of memory during a step; the last checkpoint is intact (the message says what fits)."""
