"""A warning alias kept for users' imports: ``from cpixelcnn.checkpoint import save_run, load_run``
still works and says where the names live now, :mod:`cpixelcnn.rundir` (the package never imports this)."""

from __future__ import annotations

from cpixelcnn.notices import moved_names

_NAMES = frozenset(
    {
        "load_run",
        "save_run",
        "read_config",
        "check_config",
        "save_weights",
        "non_finite_tensor",
        "checkpoint_dirs",
        "publish_checkpoint",
        "remove_stray_files",
        "write_best",
        "write_checkpoint",
        "FORMAT_VERSION",
        "BEST_DIR",
        "CHECKPOINTS_DIR",
        "CONFIG_NAME",
        "EMA_NAME",
        "STATE_NAME",
        "WEIGHTS_NAME",
    }
)


__getattr__, __dir__ = moved_names(__name__, dict.fromkeys(_NAMES, "cpixelcnn.rundir"))
