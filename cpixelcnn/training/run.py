"""``train``: one run of the Trainer in a run directory it owns — claimed (or required, on
``--resume``) and locked by rank 0 for the whole run, the process group set up and torn down,
and a directory this call created removed again if training fails before writing anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cpixelcnn.rundir import LOCK_NAME, MARKER_NAME, RunLock, claim, is_per_class_run, require_run
from cpixelcnn.training.config import TrainConfig, check
from cpixelcnn.training.distributed import Ranks
from cpixelcnn.training.per_class import train_per_class
from cpixelcnn.training.trainer import Trainer


def train(cfg: TrainConfig, log=print, asked: set[str] | None = None, **hooks) -> dict:
    """Train as configured; returns a summary dict (steps, final bits/dim, run directory, history,
    best record; a per-class run's also its members'). On ``cfg.resume`` a fixed setting asked for with another value than the run's is
    refused (``asked``: the settings the caller wrote; default: those not at their defaults).
    ``hooks``: the Trainer's injectable behaviour (``loss``, ``clock``, ``save_weights``)."""
    ranks = Ranks()
    check(cfg, ranks.world)
    lock, created = None, False
    if ranks.is_main:  # one writer per run: refuse a foreign directory, then hold the run's lock until we end
        created = not Path(cfg.out).exists()
        (require_run if cfg.resume else claim)(cfg.out)
        lock = RunLock(cfg.out).acquire()
    if ranks.active and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo")
    try:
        if cfg.per_class or (cfg.resume and is_per_class_run(cfg.out)):
            result = train_per_class(cfg, log, ranks, asked, **hooks)
        else:
            result = Trainer(cfg, log, ranks=ranks, asked=asked, **hooks).fit()
        if ranks.active:  # rank 0 still writes the last checkpoint and plot: tear the group down together
            torch.distributed.barrier()
        return result
    except BaseException:
        if created and {p.name for p in Path(cfg.out).iterdir()} <= {MARKER_NAME, LOCK_NAME}:  # failed before writing anything: leave no trace
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    finally:
        if ranks.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if lock is not None:
            lock.release()
