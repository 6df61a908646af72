"""What ends a run early, each with the state of the run directory in its message."""

from __future__ import annotations

from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the checkpoint at ``run_dir`` was saved first."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir} (continue with --resume)")
        self.run_dir, self.step = run_dir, step


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient; no weights were touched by them."""


class CheckpointWriteFailed(RuntimeError):
    """Writing into the run directory failed (disk full, ...); the previous checkpoint is intact."""
