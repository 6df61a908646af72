"""A warning alias kept for users' imports: ``from cpixelcnn.checkpoint import save_run, load_run``
still works and says where the names live now, :mod:`cpixelcnn.rundir` (the package never imports this)."""

from __future__ import annotations

import warnings

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


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'cpixelcnn.checkpoint' has no attribute {name!r} (the run directory's files are cpixelcnn.rundir)")
    import cpixelcnn.rundir as rundir

    warnings.warn(f"cpixelcnn.checkpoint.{name} moved: import it from cpixelcnn.rundir", DeprecationWarning, stacklevel=2)
    return getattr(rundir, name)


def __dir__() -> list[str]:
    return sorted(_NAMES)
