"""Run directories, in one place: their layout, their ownership (marker and lock) and every read and
write of their files — config, weights, averaged weights, training state, metrics, checkpoints and
the best weights. The trainer and the commands go through this package; nothing else writes into a
run directory.

- :mod:`.layout`: every file and folder name, :class:`RunDirError`
- :mod:`.ownership`: :func:`claim`, :func:`require_run`, :func:`replace_run`, :class:`RunLock`
- :mod:`.files`: :func:`save_run` / :func:`load_run`, config, weights, state and metrics files
- :mod:`.checkpoints`: :func:`write_checkpoint`, :func:`write_best`, and resuming (:func:`open_run`)
"""

from cpixelcnn.rundir.checkpoints import (
    KEEP_CHECKPOINTS,
    ResumePoint,
    checkpoint_dirs,
    open_run,
    publish_checkpoint,
    read_best,
    read_metrics,
    remove_stray_files,
    write_best,
    write_checkpoint,
)
from cpixelcnn.rundir.files import (
    FORMAT_VERSION,
    append_metrics,
    check_config,
    is_per_class_run,
    load_run,
    member_folder,
    non_finite_tensor,
    read_config,
    read_state,
    save_per_class_config,
    save_run,
    save_weights,
    write_curve,
    write_predictions,
    write_samples,
    write_state,
)
from cpixelcnn.rundir.layout import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    CONFIG_NAME,
    CURVE_NAME,
    EMA_NAME,
    LOCK_NAME,
    MARKER_NAME,
    MEMBERS_DIR,
    METRICS_NAME,
    SAMPLES_DIR,
    STATE_NAME,
    WEIGHTS_NAME,
    RunDirError,
)
from cpixelcnn.rundir.ownership import RunLock, check_writable_run, claim, is_run, kind_of, replace_run, require_run, write_run

__all__ = [
    "BEST_DIR",
    "CHECKPOINTS_DIR",
    "CONFIG_NAME",
    "CURVE_NAME",
    "EMA_NAME",
    "LOCK_NAME",
    "MARKER_NAME",
    "MEMBERS_DIR",
    "METRICS_NAME",
    "SAMPLES_DIR",
    "STATE_NAME",
    "WEIGHTS_NAME",
    "RunDirError",
    "RunLock",
    "claim",
    "is_run",
    "kind_of",
    "replace_run",
    "require_run",
    "check_writable_run",
    "write_run",
    "write_predictions",
    "write_curve",
    "write_samples",
    "FORMAT_VERSION",
    "save_run",
    "load_run",
    "save_per_class_config",
    "is_per_class_run",
    "member_folder",
    "read_config",
    "check_config",
    "save_weights",
    "non_finite_tensor",
    "write_state",
    "read_state",
    "append_metrics",
    "KEEP_CHECKPOINTS",
    "ResumePoint",
    "checkpoint_dirs",
    "write_checkpoint",
    "publish_checkpoint",
    "write_best",
    "remove_stray_files",
    "open_run",
    "read_metrics",
    "read_best",
]
