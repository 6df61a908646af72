"""``from cpixelcnn.checkpoint import save_run, load_run`` keeps working for users; the run directory's
files are :mod:`cpixelcnn.rundir` (the package itself imports that)."""

from cpixelcnn.rundir.checkpoints import checkpoint_dirs, publish_checkpoint, remove_stray_files, write_best, write_checkpoint  # noqa: F401
from cpixelcnn.rundir.files import (  # noqa: F401
    FORMAT_VERSION,
    MODEL_LIMITS,
    check_config,
    load_run,
    non_finite_tensor,
    read_config,
    save_run,
    save_weights,
)
from cpixelcnn.rundir.layout import BEST_DIR, CHECKPOINTS_DIR, CONFIG_NAME, EMA_NAME, STATE_NAME, WEIGHTS_NAME  # noqa: F401
