"""Training: a run directory that can always be resumed, on one CPU/GPU or many (torchrun).

Run directory (``--out``):
    config.json               model config, class names, training config, step
    checkpoint.safetensors    model weights (safetensors: loading runs no code)
    ema.safetensors           Polyak-averaged weights (--ema), used by sample/classify/evaluate
    training_state.pt         optimizer, LR schedule, epoch/step position
    checkpoints/step-N/       the last two complete checkpoints (the four files above; those are
                              hard links to the newest); written every --checkpoint-every minutes
                              and at epoch ends, each whole or not at all
    best/                     the best model so far by validation (a complete run directory)
    metrics.jsonl             one JSON object per log interval, per epoch and per validation pass
    curve.png                 training and validation bits/dim and validation accuracy against step
    samples/epoch_XXXX.png    per-class sample grids (``--sample-every``)

Crash safety: a ``kill -9`` loses at most --checkpoint-every minutes; ``--resume`` picks the newest
checkpoint that loads with finite weights (an unreadable newest one is set aside as
``checkpoints/unreadable-step-N``), drops metrics lines torn by the kill or written after that
checkpoint, and removes temporary files. Non-finite steps are skipped and never reach a checkpoint.

Determinism: the data order of epoch e is a permutation seeded by (seed, e), and every step
reseeds dropout and augmentation from (seed, step, rank); together with the saved optimizer
state, ``--resume`` continues to exactly the loss sequence of an uninterrupted run on CPU.

Data parallel (``torchrun --nproc_per_node N -m cpixelcnn train ...``): ``--batch-size`` is the
global batch, split evenly over ranks by a DistributedSampler; gradients are averaged, so the
run follows the single-process run with the same global batch. Only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cpixelcnn.checkpoint import (
    BEST_DIR, CHECKPOINTS_DIR, CONFIG_NAME, EMA_NAME, is_transient, WEIGHTS_NAME, checkpoint_dirs, load_run, publish_checkpoint, read_config,
    non_finite_tensor, remove_stray_files, save_run, save_weights, write_best, write_checkpoint,
)  # fmt: skip
from cpixelcnn.packaged_data import PACKAGED
from cpixelcnn.rundir import LOCK_NAME, MARKER_NAME, RunLock, claim, require_run
from cpixelcnn.devices import resolve_device  # noqa: F401  (public here since the CLI's first release)
from cpixelcnn.data import Dataset, augment, load_dataset, to_model_range, to_uint8
from cpixelcnn.io import atomic_write_bytes, image_grid, save_png
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.ops.dmol import dmol_log_prob
from cpixelcnn.sampling import sample

STATE_NAME = "training_state.pt"
METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainConfig:
    data: str
    out: str
    split: str = "train"
    epochs: int = 1
    max_steps: int | None = None
    max_seconds: float | None = None  # stop (and checkpoint) after this much training time
    grad_clip: float | None = None  # clip the global gradient norm to this (off by default)
    max_skipped: int = 20  # stop after this many consecutive non-finite (skipped) steps
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.999995  # per step, as in PixelCNN++
    ema: float = 0.9995  # Polyak averaging decay (the paper's), with a warm-up (see PolyakAverage); 0 = off
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    backend: str = "eager"
    image_size: int = 32
    in_channels: int = 3
    nr_resnet: int = 5
    nr_filters: int = 160
    nr_logistic_mix: int = 10
    conditioning: str = "film"
    fusion: str = "middle"
    embedding: str = "onehot"
    embedding_dim: int | None = None
    dropout: float = 0.5
    augment: bool = False
    amp: str | None = None
    compile: bool = False
    val_data: str | None = None  # None: the training data's validation split when it has one; "none": no validation
    val_split: str = "validation"
    val_every: int = 1  # epochs between validation passes
    val_limit: int = 500  # validate on at most this many images (a fixed random subset)
    keep_best: str | None = None  # "accuracy" | "bpd"; None: accuracy for conditional models, else bpd
    checkpoint_every: float = 10.0  # minutes between checkpoints (as well as at epoch ends)
    cond_lr_scale: float = 1.0  # learning-rate multiplier for the class embedding and conditioning heads
    discriminative: float = 0.0  # weight of the Bayes classifier's cross-entropy added to the loss (0: pure likelihood)
    sample_every: int = 0
    samples_per_class: int = 4
    log_every: int = 10
    wandb: bool = False  # also log to Weights & Biases (optional dependency)
    resume: bool = False
    extra: dict = field(default_factory=dict)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the checkpoint at ``run_dir`` was saved first."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir} (continue with --resume)")
        self.run_dir, self.step = run_dir, step


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient; no weights were touched by them."""


class CheckpointWriteFailed(RuntimeError):
    """Writing into the run directory failed (disk full, ...); the previous checkpoint is intact."""


class PolyakAverage:
    """Polyak averages of every floating-point tensor of the model's state: avg ← avg + (1 − d)(w − avg),
    with TensorFlow's warm-up d = min(decay, (1 + n) / (10 + n)) after n updates, so that a short run's
    average follows its recent weights instead of staying near the initialisation (0.9995 has a
    half-life of ~1400 steps)."""

    def __init__(self, model, decay: float, saved: dict[str, torch.Tensor] | None, updates: int = 0):
        """``saved``: the averages of the checkpoint resumed from (checked by ``_open_checkpoint``);
        ``updates``: how many updates they have had."""
        self.decay, self.updates = decay, updates
        current = model.state_dict()
        self.state = {k: (saved[k] if saved is not None else v.detach()).to(v.device, copy=True) for k, v in current.items()}
        self.keys = [k for k, v in self.state.items() if v.is_floating_point()]

    @torch.no_grad()
    def update(self, model) -> None:
        current = model.state_dict()
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        torch._foreach_lerp_([self.state[k] for k in self.keys], [current[k].detach() for k in self.keys], 1.0 - decay)
        self.updates += 1


class _Dist:
    """torchrun's environment, or a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.active = self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(name: str, dist: _Dist) -> torch.device:
    device = resolve_device(name)
    if device.type == "cuda" and dist.active:  # one GPU per torchrun process
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def _check_config(cfg: TrainConfig, dist: _Dist) -> None:
    from cpixelcnn.limits import check_range

    for name in ("epochs", "batch_size", "log_every", "image_size", "max_steps", "nr_resnet", "nr_filters", "nr_logistic_mix", "embedding_dim",
                 "val_limit", "val_every", "max_skipped", "sample_every", "samples_per_class"):  # fmt: skip
        check_range(name, getattr(cfg, name))
    if cfg.max_seconds is not None and not cfg.max_seconds > 0:
        raise ValueError(f"--max-time must be a positive number of seconds, got {cfg.max_seconds}")
    if cfg.lr <= 0 or not math.isfinite(cfg.lr):
        raise ValueError(f"--lr must be a positive number, got {cfg.lr}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ValueError(f"--ema must be in [0, 1), got {cfg.ema}")
    if cfg.grad_clip is not None and not (cfg.grad_clip > 0 and math.isfinite(cfg.grad_clip)):
        raise ValueError(f"--grad-clip must be a positive number, got {cfg.grad_clip}")
    if cfg.max_skipped < 1:
        raise ValueError(f"--max-skipped must be >= 1, got {cfg.max_skipped}")
    if cfg.val_every < 1:
        raise ValueError(f"--val-every must be >= 1 (epochs between validation passes), got {cfg.val_every}; use --val-data none to turn validation off")
    if cfg.val_limit < 1:
        raise ValueError(f"--val-limit must be >= 1, got {cfg.val_limit}")
    if cfg.keep_best not in (None, "accuracy", "bpd"):
        raise ValueError(f"--keep-best takes 'accuracy' or 'bpd', got {cfg.keep_best!r}")
    if not (cfg.checkpoint_every > 0 and math.isfinite(cfg.checkpoint_every)):
        raise ValueError(f"--checkpoint-every must be a positive number of minutes, got {cfg.checkpoint_every}")
    if not (cfg.cond_lr_scale > 0 and math.isfinite(cfg.cond_lr_scale)):
        raise ValueError(f"--cond-lr-scale must be a positive number, got {cfg.cond_lr_scale}")
    if not (cfg.discriminative >= 0 and math.isfinite(cfg.discriminative)):
        raise ValueError(f"--discriminative must be a number >= 0, got {cfg.discriminative}")
    if cfg.amp not in (None, "bf16"):
        raise ValueError(f"--amp takes only 'bf16', got {cfg.amp!r}")
    if cfg.batch_size % dist.world:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must divide evenly over {dist.world} processes")


def _model_kwargs(cfg: TrainConfig, num_classes: int) -> dict:
    return dict(
        in_channels=cfg.in_channels, num_classes=num_classes, nr_resnet=cfg.nr_resnet, nr_filters=cfg.nr_filters,
        nr_logistic_mix=cfg.nr_logistic_mix, conditioning=cfg.conditioning, fusion=cfg.fusion, embedding=cfg.embedding,
        embedding_dim=cfg.embedding_dim, dropout=cfg.dropout, backend=cfg.backend,
    )  # fmt: skip


def _save_state(run_dir: Path, optimizer, scheduler, epoch: int, position: int, step: int, ema_updates: int) -> None:
    buf = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch, "position": position, "step": step,
                "ema_updates": ema_updates}, buf)  # fmt: skip
    atomic_write_bytes(run_dir / STATE_NAME, buf.getvalue())


def _append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / METRICS_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class _Progress:
    """One status line on a terminal, a printed line every ``every`` steps otherwise: step, epoch,
    training bits/dim, speed, elapsed and estimated remaining time, the latest validation figures."""

    def __init__(self, first_step: int, total: int, enabled: bool, every: int, deadline: float | None):
        self.first_step, self.total, self.enabled, self.every, self.deadline = first_step, total, enabled, every, deadline
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.validation = ""

    def validated(self, record: dict) -> None:
        acc = f" acc {record['val_accuracy']:.1%}" if record.get("val_accuracy") is not None else ""
        self.validation = f" | val bpd {record['val_bpd']:.3f}{acc}"

    def update(self, step: int, epoch: int, bpd: float, images_per_s: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        elapsed = now - self.start
        done = step - self.first_step
        remaining = elapsed / done * (self.total - step) if done > 0 else float("inf")
        if self.deadline is not None:
            remaining = min(remaining, self.deadline - now)
        eta = _clock(remaining) if math.isfinite(remaining) else "?"
        width = 24
        fraction = step / max(1, self.total)
        if self.deadline is not None:  # a time limit: the bar fills with whichever comes first
            fraction = max(fraction, elapsed / max(1e-9, self.deadline - self.start))
        filled = int(width * min(1.0, fraction))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total} epoch {epoch + 1} bpd {bpd:.3f} "
                f"{images_per_s:.0f} img/s {_clock(elapsed)} elapsed, {eta} left{self.validation}")  # fmt: skip
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif step % self.every == 0 or step == self.total:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def train(cfg: TrainConfig, log=print) -> dict:
    """Train as configured; returns a summary dict (steps, final bpd, run directory)."""
    dist = _Dist()
    _check_config(cfg, dist)
    lock, created = None, False
    if dist.is_main:  # one writer per run: refuse a foreign directory, then hold the run's lock until we end
        created = not Path(cfg.out).exists()
        (require_run if cfg.resume else claim)(cfg.out)
        lock = RunLock(cfg.out).acquire()
    if dist.active and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if cfg.device != "cpu" and torch.cuda.is_available() else "gloo")
    try:
        result = _train(cfg, dist, log)
        if dist.active:  # rank 0 still writes the last checkpoint and plot: tear the group down together
            torch.distributed.barrier()
        return result
    except BaseException:
        if created and {p.name for p in Path(cfg.out).iterdir()} <= {MARKER_NAME, LOCK_NAME}:  # failed before writing anything: leave no trace
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    finally:
        if dist.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if lock is not None:
            lock.release()


def _train(cfg: TrainConfig, dist: _Dist, log) -> dict:
    device = _device(cfg.device, dist)
    run_dir = Path(cfg.out)
    say = log if dist.is_main else (lambda *a, **k: None)

    if cfg.resume:
        point = _resume_point(run_dir, device, dist, say)
        model, saved = point.model, point.config
        model.backend = cfg.backend
        class_names = saved["class_names"]
        saved_train = saved.get("train", {})
        for key in ("image_size", "batch_size", "seed", "lr", "lr_decay", "weight_decay", "augment", "data", "split", "ema",
                    "val_data", "val_split", "val_limit", "keep_best", "cond_lr_scale", "discriminative"):  # fmt: skip
            if key in saved_train:
                setattr(cfg, key, saved_train[key])
        cfg.in_channels = model.in_channels
        _check_config(cfg, dist)  # restored settings pass the same checks as given ones
    elif (run_dir / WEIGHTS_NAME).exists() or (run_dir / CONFIG_NAME).exists() or checkpoint_dirs(run_dir):
        raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")

    data = load_dataset(cfg.data, cfg.split, cfg.image_size, cfg.in_channels, class_names=saved["class_names"] if cfg.resume else None, seed=cfg.seed)
    if not data.has_labels:
        raise ValueError(f"the {cfg.split} split of {cfg.data} has images without labels; training needs labels")
    if len(data.class_names) < 2:
        raise ValueError(f"{cfg.data} has a single class ({data.class_names[0]}); a class-conditional model needs at least 2")
    if not cfg.resume:
        torch.manual_seed(cfg.seed)
        model = ConditionalPixelCNN(**_model_kwargs(cfg, len(data.class_names)))
        class_names = data.class_names
    model = model.to(device)
    val = _validation_set(cfg, class_names)
    cfg.keep_best = cfg.keep_best or ("accuracy" if model.num_classes else "bpd")

    optimizer = torch.optim.Adam(_param_groups(model, cfg.lr, cfg.cond_lr_scale), lr=cfg.lr, betas=(0.95, 0.9995), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    epoch, position, step = 0, 0, 0
    if cfg.resume:
        optimizer.load_state_dict(point.state["optimizer"])
        scheduler.load_state_dict(point.state["scheduler"])
        epoch, position, step = point.state["epoch"], point.state["position"], point.state["step"]

    ema = None
    if cfg.ema:  # a state saved before the warm-up existed: count its steps as updates
        ema = PolyakAverage(model, cfg.ema, point.ema, point.state.get("ema_updates", step)) if cfg.resume else PolyakAverage(model, cfg.ema, None)
    net = model
    if dist.active:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(net) if cfg.compile else net

    per_rank = cfg.batch_size // dist.world
    sampler = torch.utils.data.DistributedSampler(range(len(data)), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch < 1:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {len(data)} training images")
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else cfg.max_steps
    dims = cfg.in_channels * cfg.image_size * cfg.image_size
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")

    last = {"step": step if cfg.resume else None, "time": time.monotonic(), "validated": None}  # the last checkpoint, validation

    def checkpoint():
        if dist.is_main:

            def fill(directory: Path):
                if ema is not None:
                    save_weights(directory / EMA_NAME, ema.state)
                save_run(directory, model, class_names, extra={"train": dataclasses.asdict(cfg) | {"resume": False}, "step": step})
                _save_state(directory, optimizer, scheduler, epoch, position, step, ema.updates if ema is not None else 0)

            try:
                write_checkpoint(run_dir, step, fill)
            except OSError as err:
                previous = f"the previous checkpoint (step {last['step']}) is intact" if last["step"] is not None else "no checkpoint was written yet"
                raise CheckpointWriteFailed(f"could not write the checkpoint of step {step} into {run_dir / CHECKPOINTS_DIR} ({err}); "
                                            f"{previous}: free space, then run again with --resume") from None  # fmt: skip
        last["step"], last["time"] = step, time.monotonic()

    def validate():
        last["validated"] = step
        if not dist.is_main:  # rank 0 validates; the others wait for it at their next collective
            return
        evaluated = model
        if ema is not None:  # PixelCNN++ evaluates the Polyak average
            evaluated = ConditionalPixelCNN(**model.config).to(device)
            evaluated.load_state_dict(ema.state)
            evaluated.backend = model.backend
        record = dict(step=step, epoch=epoch, **_validation_figures(evaluated, val, cfg.batch_size))
        record["best"] = _better(record, best[0], cfg.keep_best)
        history.append(record)
        _append_metrics(run_dir, record)
        if wandb_run is not None:
            wandb_run.log({k: v for k, v in record.items() if v is not None}, step=step)
        if record["best"]:
            best[0] = record
            chosen = {k: record[k] for k in ("step", "epoch", "val_bpd", "val_accuracy", "val_n")}
            extra = {"train": dataclasses.asdict(cfg) | {"resume": False}, "step": step,
                     "best": chosen | {"keep_best": cfg.keep_best, "weights": "ema" if ema is not None else "raw"}}  # fmt: skip
            write_best(run_dir, lambda directory: save_run(directory, evaluated, class_names, extra=extra))
        progress.validated(record)
        _draw_curve(run_dir, history)

    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:
            checkpoint()  # config.json exists from the start: the run directory is self-describing
    limit = f"steps {step}->{total}" + (f" or {cfg.max_seconds:g} s, whichever comes first" if cfg.max_seconds else "")
    validation = f"; validating on {len(val)} images of {cfg.val_data} ({cfg.val_split}) every {cfg.val_every} epoch(s), best by {cfg.keep_best}" if val else "; no validation"
    say(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter model on {len(data)} images "
        f"({', '.join(class_names)}), {dist.world} process(es), {device}, backend {cfg.backend}, {limit}{validation}")  # fmt: skip
    deadline = None if cfg.max_seconds is None else time.monotonic() + cfg.max_seconds
    progress = _Progress(step, total, dist.is_main, cfg.log_every, deadline)
    wandb_run = _start_wandb(cfg, run_dir) if cfg.wandb and dist.is_main else None
    history = _read_metrics(run_dir, step, rewrite=dist.is_main) if cfg.resume else []
    best = [_read_best(run_dir) if cfg.resume else None]
    latest = _latest_validation(history)
    if latest is not None:
        progress.validated(latest)
    window, window_start = [], time.monotonic()
    skipped_total = next((r["skipped_steps"] for r in reversed(history) if "skipped_steps" in r), 0)
    skipped_in_a_row = 0
    try:
        while step < total:
            sampler.set_epoch(epoch)
            order = list(sampler)
            epoch_losses = []
            model.train()
            while position < steps_per_epoch and step < total:
                torch.manual_seed(cfg.seed * 1_000_003 + step * dist.world + dist.rank)  # dropout, resume-exact
                idx = torch.tensor(order[position * per_rank : (position + 1) * per_rank])
                images = data.images[idx]
                if cfg.augment:
                    images = augment(images, torch.Generator().manual_seed(cfg.seed * 7_919 + step * dist.world + dist.rank))
                x = to_model_range(images).to(device)
                y = data.labels[idx].to(device)
                if cfg.discriminative:
                    with torch.autocast(**autocast):
                        loss = _joint_loss(forward, model, x, y, cfg.discriminative, cfg.backend) / dims
                else:
                    with torch.autocast(**autocast):
                        params = forward(x, y)
                    loss = -dmol_log_prob(x, params, bits=model.bits, backend=cfg.backend, check=False).mean() / dims
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                finite = _finite_step(loss, model, cfg.grad_clip, dist)
                if finite:
                    skipped_in_a_row = 0
                    optimizer.step()
                    scheduler.step()
                    if ema is not None:
                        ema.update(model)
                else:  # weights, optimizer state, EMA and schedule untouched
                    optimizer.zero_grad(set_to_none=True)
                    skipped_total += 1
                    skipped_in_a_row += 1
                step += 1
                position += 1
                if skipped_in_a_row >= cfg.max_skipped:
                    raise TrainingDiverged(f"training diverged: {skipped_in_a_row} consecutive steps up to step {step} had a non-finite loss or "
                                           f"gradient and were skipped; the last checkpoint (step {last['step']}) is in {run_dir} "
                                           "(try a lower --lr or --grad-clip)")  # fmt: skip
                if finite:  # a skipped step has no loss to log
                    logged = loss.detach()
                    if dist.active:  # log the global-batch loss, not this rank's share
                        torch.distributed.all_reduce(logged)
                        logged = logged / dist.world
                    bpd = logged.item() / math.log(2)
                    epoch_losses.append(bpd)
                    window.append(bpd)
                    elapsed = time.monotonic() - window_start
                    progress.update(step, epoch, bpd, len(window) * cfg.batch_size / max(elapsed, 1e-9))
                    if step % cfg.log_every == 0 or step == total:
                        record = dict(step=step, epoch=epoch, train_bpd=sum(window) / len(window), lr=scheduler.get_last_lr()[0],
                                      images_per_s=len(window) * cfg.batch_size / max(elapsed, 1e-9), skipped_steps=skipped_total)  # fmt: skip
                        history.append(record)
                        if dist.is_main:
                            _append_metrics(run_dir, record)
                            if wandb_run is not None:
                                wandb_run.log(record, step=step)
                        window, window_start = [], time.monotonic()
                # a periodic checkpoint needs no agreement between ranks (only rank 0 writes, each asks its own clock);
                # at an epoch end or the last step the checkpoint below follows at once
                if deadline is not None and _past(deadline, dist):
                    total = step
                elif time.monotonic() - last["time"] >= cfg.checkpoint_every * 60 and position < steps_per_epoch and step < total:
                    checkpoint()
                    if dist.is_main:
                        _draw_curve(run_dir, history)
            if position >= steps_per_epoch:
                epoch, position = epoch + 1, 0
                if dist.is_main:
                    _append_metrics(run_dir, dict(epoch_end=epoch, step=step, epoch_train_bpd=sum(epoch_losses) / max(1, len(epoch_losses))))
                    if cfg.sample_every and epoch % cfg.sample_every == 0:
                        _sample_grid(model, class_names, cfg, run_dir / "samples" / f"epoch_{epoch:04d}.png")
                if val is not None and epoch % cfg.val_every == 0:
                    validate()
            checkpoint()
        if val is not None and last["validated"] != step and step > 0:  # the final model is a candidate for best/ too
            validate()
    except KeyboardInterrupt:
        progress.close()
        checkpoint()
        raise TrainingInterrupted(run_dir, step) from None
    except OSError as err:  # disk full and the like while writing metrics, best/ or plots
        previous = f"the last checkpoint (step {last['step']}) is intact" if last["step"] is not None else "no checkpoint was written"
        raise CheckpointWriteFailed(f"writing into {run_dir} failed at step {step} ({err}); {previous}: free space, then run again with --resume") from None
    progress.close()
    if wandb_run is not None:
        wandb_run.finish()
    if dist.is_main:
        _draw_curve(run_dir, history)
    points = [r["train_bpd"] for r in history if "train_bpd" in r]
    final = points[-1] if points else float("nan")
    validated = _latest_validation(history)
    summary = f", validation bits/dim {validated['val_bpd']:.3f}" + (f" accuracy {validated['val_accuracy']:.1%}" if validated.get("val_accuracy") is not None else "") if validated else ""
    say(f"done: {step} steps, training bits/dim {final:.3f}{summary}; run directory {run_dir}" + (f", best model in {run_dir / BEST_DIR}" if validated else ""))
    return dict(steps=step, train_bpd=final, run_dir=str(run_dir), history=history, best=best[0])


@dataclass
class _ResumePoint:
    source: Path  # the checkpoint directory (or a run directory written before checkpoints/ existed)
    config: dict
    model: ConditionalPixelCNN
    state: dict
    ema: dict | None  # the Polyak averages, when the run keeps them


def _open_checkpoint(source: Path, device: torch.device) -> _ResumePoint:
    """Everything a resume needs from one checkpoint, checked: config, finite weights (and EMA),
    a training state of the same step. Any defect raises."""
    config = read_config(source)
    model, _ = load_run(source, use_ema=False)
    weights = model.state_dict()
    ema = None
    if config.get("train", {}).get("ema"):
        from safetensors.torch import load_file

        ema = load_file(str(source / EMA_NAME))
        if ema.keys() != weights.keys():
            raise ValueError(f"{EMA_NAME} does not fit the model's tensors")
    for label, state in (("", weights), (f"{EMA_NAME}:", ema or {})):
        name = non_finite_tensor(state)
        if name is not None:
            raise ValueError(f"tensor {label}{name!r} has non-finite values")
    try:
        state = torch.load(source / STATE_NAME, map_location=device, weights_only=True)
    except Exception as err:  # torch's messages for a damaged file run to several lines
        if is_transient(err):
            raise
        raise ValueError(f"{STATE_NAME} cannot be read ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{STATE_NAME} holds no training state")
    if state.get("step") != config.get("step"):
        raise ValueError(f"weights (step {config.get('step')}) and {STATE_NAME} (step {state.get('step')}) disagree")
    return _ResumePoint(source, config, model, state, ema)


def _set_aside_name(source: Path) -> Path:
    """``unreadable-step-N`` beside ``source``, numbered when that name is taken (it never blocks a resume)."""
    target, n = source.parent / f"unreadable-{source.name}", 1
    while target.exists():
        n += 1
        target = source.parent / f"unreadable-{source.name}.{n}"
    return target


def _resume_point(run_dir: Path, device: torch.device, dist: _Dist, say) -> _ResumePoint:
    """The newest checkpoint that opens cleanly; newer unreadable ones are set aside (renamed
    ``unreadable-step-N``) with a warning, and the run directory's files are pointed at the one used."""
    if dist.is_main and run_dir.is_dir():
        remove_stray_files(run_dir)
    candidates = checkpoint_dirs(run_dir) or ([run_dir] if (run_dir / CONFIG_NAME).is_file() else [])
    if not candidates:
        raise FileNotFoundError(f"{run_dir} is not a cpixelcnn run directory (no {CONFIG_NAME} or {CHECKPOINTS_DIR}/): nothing to resume")
    problems = []
    for source in candidates:
        try:
            point = _open_checkpoint(source, device)
        except Exception as err:
            if is_transient(err):  # trouble around the files, not in them: change nothing
                raise RuntimeError(f"could not read the checkpoint {source} ({type(err).__name__}: {_first_line(err)}); "
                                   "nothing was changed: fix that, then run --resume again") from None  # fmt: skip
            problems.append(f"{source.name}: {_first_line(err)}")  # a torn, truncated, corrupted or inconsistent checkpoint
            if dist.is_main and source != run_dir:
                os.rename(source, _set_aside_name(source))
            continue
        if problems:
            say(f"warning: newest checkpoint unreadable ({'; '.join(problems)}); set aside, resuming from {source.name} (step {point.config.get('step')})")
        if dist.is_main and source != run_dir:
            publish_checkpoint(run_dir, source)
        return point
    raise ValueError(f"{run_dir} has no readable checkpoint to resume from ({'; '.join(problems)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _read_metrics(run_dir: Path, upto_step: int, rewrite: bool) -> list[dict]:
    """metrics.jsonl records up to the resumed step. Lines torn by a kill and records of work after
    the checkpoint (lost with the kill, about to be redone) are dropped, and the file rewritten."""
    path = run_dir / METRICS_NAME
    if not path.is_file():
        return []
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= upto_step:
            records.append(record)
    if rewrite and (len(records) != len(lines) or not text.endswith("\n")):
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())
    return records


def _validation_set(cfg: TrainConfig, class_names: list[str]) -> Dataset | None:
    """The held-out images validated on (at most ``val_limit``, a fixed random subset), labelled in
    the training set's class order; None without validation. Resolves ``cfg.val_data``."""
    source = cfg.val_data
    if source is None:  # the training data's own validation split, when it has one
        has_split = cfg.data in ("demo", *PACKAGED) or (Path(cfg.data) / f"{cfg.val_split}.csv").is_file()
        source = cfg.data if has_split and cfg.split != cfg.val_split else "none"
    cfg.val_data = source
    if source == "none":
        return None
    val = load_dataset(source, cfg.val_split, cfg.image_size, cfg.in_channels, seed=cfg.seed)
    if sorted(val.class_names) != sorted(class_names):
        raise ValueError(f"the validation set {source} has classes ({', '.join(val.class_names)}) that differ from the training set's ({', '.join(class_names)})")
    if not val.has_labels:
        raise ValueError(f"the {cfg.val_split} split of {source} has images without labels; validation needs them")
    labels = torch.tensor([class_names.index(val.class_names[i]) for i in val.labels.tolist()], dtype=torch.long)
    keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.val_limit].sort().values
    return Dataset(val.images[keep], labels[keep], list(class_names), [val.files[i] for i in keep.tolist()], layout=val.layout)


def _validation_figures(model, val: Dataset, batch_size: int) -> dict:
    """Bits/dim and (conditional models) Bayes-classifier accuracy on the validation images."""
    from cpixelcnn.metrics import dataset_bpd, predict

    bpd = dataset_bpd(model, val.images, val.labels if model.num_classes else None, batch_size=batch_size)
    accuracy = None
    if model.num_classes:
        predicted, _ = predict(model, val.images, batch_size=batch_size)
        accuracy = (predicted == val.labels).sum().item() / len(val)
    return dict(val_bpd=bpd, val_accuracy=accuracy, val_n=len(val))


def _better(record: dict, best: dict | None, keep_best: str) -> bool:
    """Whether a validation record beats the best so far: by accuracy (ties: lower bits/dim) or by bits/dim."""
    if best is None:
        return True
    if keep_best == "accuracy" and record.get("val_accuracy") is not None and record["val_accuracy"] != best.get("val_accuracy"):
        return record["val_accuracy"] > (best.get("val_accuracy") or -1.0)
    return record["val_bpd"] < best["val_bpd"]


def _latest_validation(history: list[dict]) -> dict | None:
    return next((r for r in reversed(history) if "val_bpd" in r), None)


def _read_best(run_dir: Path) -> dict | None:
    try:
        return read_config(run_dir / BEST_DIR).get("best")
    except (OSError, ValueError):
        return None


def _draw_curve(run_dir: Path, history: list[dict]) -> None:
    from cpixelcnn.plot import training_curve_png

    if any("train_bpd" in r or "val_bpd" in r for r in history):
        training_curve_png(run_dir / "curve.png", history, title=f"training {run_dir.name}")


def _param_groups(model, lr: float, cond_lr_scale: float) -> list[dict]:
    """Adam parameter groups: the conditioning path (class embedding, FiLM/additive heads) at
    ``lr · cond_lr_scale``, everything else at ``lr``."""
    conditioning = [p for n, p in model.named_parameters() if n.startswith("class_embedding.") or ".cond_head." in n]
    ids = {id(p) for p in conditioning}
    if cond_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]
    if conditioning and cond_lr_scale != 1.0:  # one group otherwise: optimizer states of earlier runs still load
        groups.append({"params": conditioning, "lr": lr * cond_lr_scale})
    return groups


def _joint_loss(forward, model, x: torch.Tensor, y: torch.Tensor, weight: float, backend: str) -> torch.Tensor:
    """Mean over the batch of −log p(x | y) + weight · CE(softmax_c log p(x | c), y), in nats per
    image: one forward pass over every (image, class) pair gives both. x (B, C, H, W), y (B,)."""
    classes = model.num_classes
    pairs_x = x.repeat_interleave(classes, dim=0)
    pairs_c = torch.arange(classes, device=x.device).repeat(x.shape[0])
    log_px = dmol_log_prob(pairs_x, forward(pairs_x, pairs_c), bits=model.bits, backend=backend, check=False).float().view(-1, classes)
    nll = -log_px.gather(1, y[:, None])[:, 0]
    return (nll + weight * torch.nn.functional.cross_entropy(log_px, y, reduction="none")).mean()


def _start_wandb(cfg: TrainConfig, run_dir: Path):
    try:
        import wandb
    except ImportError:
        raise RuntimeError("--wandb needs the wandb package (pip install wandb); metrics.jsonl is written either way") from None
    return wandb.init(project="cpixelcnn", name=run_dir.name, dir=str(run_dir), config=dataclasses.asdict(cfg), resume="allow")


def _finite_step(loss: torch.Tensor, model, grad_clip: float | None, dist: _Dist) -> bool:
    """Whether this step's loss and gradients are finite — agreed by every rank (one all-reduce of
    a flag; DDP has already averaged the gradients). With ``grad_clip`` the global gradient norm is
    clipped in place (only when finite)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
    bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(norm)).float().reshape(1)
    if dist.active:
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    if bad.item():
        return False
    if grad_clip is not None:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), grad_clip, norm)
    return True


def _past(deadline: float, dist: _Dist) -> bool:
    """Whether the time limit is reached — decided by rank 0 so all ranks stop at the same step."""
    flag = torch.tensor([float(time.monotonic() >= deadline)])
    if dist.active:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def _sample_grid(model, class_names: list[str], cfg: TrainConfig, path: Path) -> Path:
    """One row of ``samples_per_class`` samples per class."""
    labels = torch.arange(len(class_names)).repeat_interleave(cfg.samples_per_class)
    device = next(model.parameters()).device
    images = sample(model, labels.to(device), image_size=(cfg.image_size, cfg.image_size), method="auto", generator=torch.Generator().manual_seed(cfg.seed))
    return save_png(path, image_grid(to_uint8(images), nrow=cfg.samples_per_class), scale=2)
