"""Where a run stands: step, epoch, position in the epoch, skipped steps, Polyak updates and the
best validation record — kept, saved and restored as one unit (in training_state.pt, beside the
optimizer and schedule states)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cpixelcnn.rundir import write_state


@dataclass
class TrainingState:
    """Where a run stands, saved with every checkpoint: ``step`` (optimisation steps done, skipped
    ones included), ``epoch`` and ``position`` (batches of that epoch done), ``skipped_steps``,
    ``ema_updates`` (Polyak updates so far), ``best`` (the best validation record, or None) and
    ``validation_pending`` (the validation of this step is still due)."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # batches of this epoch already done
    skipped_steps: int = 0  # non-finite steps skipped in the whole run
    ema_updates: int = 0
    best: dict | None = None  # the best validation record so far (RUN/best/)
    validation_pending: bool = False  # this step's validation is due and not done (a stop signal ended it): a resumed run does it first


def save_state(directory: Path, state: TrainingState, optimizer, scheduler) -> None:
    """training_state.pt: the optimizer and schedule states and the training state's fields (at the top level)."""
    write_state(directory, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **dataclasses.asdict(state)})


def restore_state(saved: dict, history: list[dict], best: dict | None) -> TrainingState:
    """The TrainingState in a loaded training_state.pt. A state written before a field existed
    takes it from what the run directory shows: skipped steps from metrics.jsonl, the best record
    from best/config.json, Polyak updates = steps."""
    skipped = next((r["skipped_steps"] for r in reversed(history) if "skipped_steps" in r), 0)
    return TrainingState(
        step=saved["step"],
        epoch=saved["epoch"],
        position=saved["position"],
        skipped_steps=saved.get("skipped_steps", skipped),
        ema_updates=saved.get("ema_updates", saved["step"]),
        best=saved.get("best", best),
        validation_pending=bool(saved.get("validation_pending", False)),
    )
