"""The layout of a run directory: every file and folder, named once, and the error a run directory raises.

::

    RUN/
      .cpixelcnn-run          the ownership marker (JSON: format, version, creator, time)
      .lock                   held (flock) by the one process writing the run
      config.json             model config, class names, training settings, step
      checkpoint.safetensors  the weights            } hard links to the newest
      ema.safetensors         the Polyak averages    } checkpoint in checkpoints/
      training_state.pt       optimizer, schedule, step/epoch/position, best record }
      checkpoints/step-NNNNNNNNN/   the newest checkpoints, each whole or absent
      best/                   the best validated weights (with validation)
      metrics.jsonl           one JSON record per line: training windows, epochs, validation
      curve.png, samples/     the training curve and per-epoch sample grids

A per-class run (``train --per-class``) holds one such run per class instead of weights::

    RUN/
      .cpixelcnn-run, .lock   as above: one writer for the whole run
      config.json             the members' model config, class names, "per_class": member folders and class counts
      members/NN/             the unconditional model of class NN: a complete run directory (as above)
"""

from __future__ import annotations

# Every file and folder of a run directory, named once (the training package's docstring says what each holds).
MARKER_NAME = ".cpixelcnn-run"
LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "checkpoint.safetensors"
EMA_NAME = "ema.safetensors"  # Polyak-averaged weights (training with --ema)
STATE_NAME = "training_state.pt"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "curve.png"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
SAMPLES_DIR = "samples"
MEMBERS_DIR = "members"  # a per-class run's members, one run directory per class
MARKER_FORMAT = "cpixelcnn-run"
MARKER_VERSION = 1


class RunDirError(ValueError):
    """A directory that a command may not write into, or a run another process is writing."""
