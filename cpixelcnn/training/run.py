"""``train``: one run of the Trainer in a run directory it owns — claimed (or required, on
``--resume``) and locked by rank 0 for the whole run, the process group set up and torn down,
and a directory this call created removed again if training fails before writing anything.

Under torchrun the process group forms first; rank 0 then decides whether the run is continued
(``--resume``, ``--resume auto`` when ``--out`` holds the run, or a worker torchrun restarted:
``TORCHELASTIC_RESTART_COUNT`` > 0) and every rank follows its decision. Why a restart used to
fail, twice over: torchrun's static rendezvous kept the first attempt's process-group keys (the
dead ranks' addresses) in its store, so the new ranks could not connect
(:func:`~cpixelcnn.training.distributed.init_process_group` puts the keys under the attempt); and
the restarted rank 0 refused the folder its first attempt had written (torchrun repeats a command
line without ``--resume``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import torch

from cpixelcnn.rundir import CHECKPOINTS_DIR, CONFIG_NAME, LOCK_NAME, MARKER_NAME, RunLock, claim, is_per_class_run, is_run, require_run
from cpixelcnn.training.batches import with_data_shape
from cpixelcnn.training.config import TrainConfig, check
from cpixelcnn.training.distributed import Ranks, choose_reporter, init_process_group
from cpixelcnn.training.per_class import train_per_class
from cpixelcnn.training.trainer import Trainer


def elastic_restart() -> int:
    """Which restart of its workers torchrun is on (0: the first attempt, or no torchrun)."""
    value = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0").strip()
    return int(value) if value.isdigit() else 0


def holds_run(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a run that has written something to continue from (a claimed folder
    whose first checkpoint was never written starts over)."""
    out = Path(out)
    return is_run(out) and ((out / CONFIG_NAME).is_file() or (out / CHECKPOINTS_DIR).is_dir())


def continues(cfg: TrainConfig, restart: int) -> bool:
    """Whether this run continues the one in ``cfg.out``: ``--resume``, or ``--resume auto`` (and a
    restarted torchrun worker) when it holds one."""
    if cfg.resume is True:
        return True
    return (cfg.resume == "auto" or restart > 0) and holds_run(cfg.out)


def train(cfg: TrainConfig, log=print, asked: set[str] | None = None, **hooks) -> dict:
    """Train as configured; returns a summary dict (steps, final bits/dim, run directory, history,
    best record; a per-class run's also its members'). On ``cfg.resume`` a fixed setting asked for with another value than the run's is
    refused (``asked``: the settings the caller wrote; default: those passed to ``TrainConfig(...)``).
    ``hooks``: the Trainer's injectable behaviour (``loss``, ``clock``, ``save_weights``)."""
    asked = set(cfg.given) if asked is None else asked  # what the caller wrote, before any copy of the config
    ranks = Ranks()
    restart = elastic_restart()
    lock, created, resume = None, False, False
    try:
        check(cfg, ranks.world)
        cfg = with_data_shape(cfg)  # the data's own size and channels, where not given
        if ranks.active and not torch.distributed.is_initialized():
            ranks.device(cfg.device)  # nccl's collectives need this rank's GPU chosen first
            init_process_group(ranks, restart)
        if ranks.is_main:  # one writer per run: refuse a foreign directory, then hold the run's lock until we end
            resume = continues(cfg, restart)
            created = not Path(cfg.out).exists()
            (require_run if resume else claim)(cfg.out)
            lock = RunLock(cfg.out).acquire()
        cfg = dataclasses.replace(cfg, resume=ranks.main_says(resume))
        if cfg.per_class or (cfg.resume and is_per_class_run(cfg.out)):
            result = train_per_class(cfg, log, ranks, asked, restart=restart, **hooks)
        else:
            result = Trainer(cfg, log, ranks=ranks, asked=asked, restart=restart, **hooks).fit()
        if ranks.active:  # rank 0 still writes the last checkpoint and plot: tear the group down together
            torch.distributed.barrier()
        return result
    except BaseException as err:
        choose_reporter(err, ranks)  # under torchrun one rank says what went wrong
        if created and Path(cfg.out).is_dir() and {p.name for p in Path(cfg.out).iterdir()} <= {MARKER_NAME, LOCK_NAME}:
            shutil.rmtree(cfg.out, ignore_errors=True)  # failed before writing anything: leave no trace
        raise
    finally:
        if ranks.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if lock is not None:
            lock.release()
