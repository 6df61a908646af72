"""The trainer, read like Fabric's loops: its state is declared in ``__init__``; ``setup`` resumes
or starts the run; ``fit`` → ``train_loop`` → ``run_epoch`` → ``step``; ``should_stop`` decides
after each step whether a stop signal or the time limit ends training; ``maybe_checkpoint`` and
``checkpoint`` keep the run resumable, ``validate`` keeps ``best/``. Behaviour that tests (or users)
replace comes in through the constructor: the loss, the clock, the weight writer and the log.

Determinism: the data order of epoch e is a permutation seeded by (seed, e), and every step
reseeds dropout and augmentation from (seed, step, rank); with the saved optimizer state and
TrainingState, ``--resume`` continues to exactly the loss sequence of an uninterrupted run on CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path

import torch

from cpixelcnn.data import to_model_range
from cpixelcnn.data.types import list_briefly
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.rundir import (
    CHECKPOINTS_DIR,
    EMA_NAME,
    open_run,
    read_best,
    read_metrics,
    save_run,
    save_weights,
    write_best,
    write_checkpoint,
    write_samples,
)
from cpixelcnn.stopping import Stopped
from cpixelcnn.training.averaging import PolyakAverage
from cpixelcnn.training.batches import RunSplits, dealt, training_images
from cpixelcnn.training.config import TrainConfig, resumed_config
from cpixelcnn.training.distributed import Ranks, StopSignals
from cpixelcnn.training.errors import CheckpointWriteFailed, OutOfMemory, TrainingDiverged, TrainingInterrupted, TrainingPreempted
from cpixelcnn.training.memory import is_out_of_memory, plan_batch
from cpixelcnn.training.objectives import finite_step, likelihood_loss, optimizer_and_schedule
from cpixelcnn.training.reporting import Reporter, end_line, start_line
from cpixelcnn.training.state import TrainingState, restore_state, save_state
from cpixelcnn.training.validation import accuracy_classes, is_better, latest_validation, validation_figures, validation_set, validation_source


class Trainer:
    """One run of training in ``cfg.out`` (the caller owns and locks it: :func:`cpixelcnn.training.train`
    does). :meth:`fit` sets up — resuming a saved run, planning memory, dealing the data — and runs
    epochs of :meth:`step`, checkpointing, validating and reporting as configured; it returns a
    summary (steps, final bits/dim, run directory, history, best record)."""

    def __init__(
        self,
        cfg: TrainConfig,
        log=print,
        *,
        ranks: Ranks | None = None,
        asked: set[str] | None = None,
        loss=likelihood_loss,
        clock=time.monotonic,
        save_weights=save_weights,
        restart: int = 0,
        splits: RunSplits | None = None,
    ):
        """``asked``: the settings the caller wrote (see :func:`~cpixelcnn.training.config.merged_with_saved`);
        ``restart``: which restart of its workers torchrun is on (said in the log);
        ``loss(forward, model, x, y, discriminative, backend)`` → mean nats per image;
        ``clock()`` → seconds (time limit, checkpoint interval, speed); ``save_weights(path, state)``
        writes the Polyak-averaged weights of a checkpoint; ``splits``: the run's data, loaded once
        (a per-class run shares one between its members)."""
        # what the caller gave
        self.cfg, self.ranks, self.asked, self.restart = cfg, ranks or Ranks(), asked, restart
        self.loss_fn, self.clock, self.save_weights = loss, clock, save_weights
        self.splits = splits or RunSplits(cfg)
        self.say = log if self.ranks.is_main else (lambda *a, **k: None)
        self.run_dir = Path(cfg.out)
        # what setup() makes: the device, the model and its classes, the data, the optimiser, the reporter
        self.device: torch.device | None = None
        self.model: ConditionalPixelCNN | None = None
        self.class_names: list[str] | None = None
        self.kind = ""  # what is trained, in words
        self.memory = None  # the memory plan (its batch size, its line)
        self.train_data = self.data = None  # the dealt training images; the images themselves
        self.steps_per_epoch = self.total = 0
        self.val = None  # the validation set, or None
        self.optimizer = self.scheduler = None
        self.state = TrainingState()
        self.ema: PolyakAverage | None = None
        self.net = self.eager_net = None  # the network a step runs (DDP-wrapped, compiled), and before compiling
        self.objective = self._objective
        self.compile_pending = False
        self.reporter: Reporter | None = None
        # what the loop keeps
        self.checkpointed_at: int | None = None  # step of the last checkpoint written
        self.validated_at: int | None = None
        self.last_checkpoint_time = 0.0
        self.stop_signals: StopSignals | None = None
        self.deadline: float | None = None  # the clock's time at which --max-time ends training
        self.preempted: str | None = None  # the stop signal training stops for
        self.out_of_time = False
        self.epoch_losses: list[float] = []
        self.window: list[float] = []  # the steps' bits/dim since the last metrics record
        self.window_start = 0.0
        self.skipped_in_a_row = 0
        self.data_waits: list[float] = []  # seconds each step waited for its batch since the last record
        self.wall_start = 0.0
        self.images_per_s: float | None = None

    # -- set-up ------------------------------------------------------------------------------------

    def setup(self) -> None:
        """The run to go on with (resumed or new), its model, data, validation set, optimiser and reporter."""
        self.device = self.ranks.device(self.cfg.device)
        point, cfg = self._resume_or_start()
        images = training_images(cfg, self.class_names, self.splits)
        if self.model is None:  # unconditional data come without class names: a model of 0 classes
            self.model, self.class_names = new_model(cfg, len(images.class_names)), images.class_names
        self.kind = model_kind(cfg, self.model, self.class_names)  # in the words the caller's settings chose
        self.model.checkpoint_activations = cfg.checkpoint_activations
        self.model = self.model.to(self.device)
        self.memory = plan_batch(self.model, cfg, self.device, self.ranks, len(images))  # measured before any step: one that cannot fit is refused
        self.cfg = cfg = self._resolved(cfg, self.memory.batch_size)
        self.train_data = dealt(images, cfg, self.ranks)
        self.data, self.steps_per_epoch = self.train_data.images, self.train_data.steps_per_epoch
        self.val = validation_set(cfg.val_data, cfg, self.class_names, self.splits)
        self.total = cfg.epochs * self.steps_per_epoch if cfg.max_steps is None else cfg.max_steps
        history = self._optimiser_and_state(point)
        self._network()
        wandb = dataclasses.asdict(cfg) if cfg.wandb else None
        self.reporter = Reporter(
            self.run_dir,
            writer=self.ranks.is_main,
            first_step=self.state.step,
            total=self.total,
            log_every=cfg.log_every,
            history=history,
            wandb_config=wandb,
        )
        self.last_checkpoint_time = self.clock()

    def _resume_or_start(self):
        """(the checkpoint resumed, or None for a new run; the configuration to go on with: the caller's,
        merged with the resumed run's and checked again)."""
        point = open_run(self.run_dir, self.cfg.resume, self.device, self.ranks.is_main, self.say)
        if point is None:
            return None, self.cfg
        self.model, self.class_names = point.model, point.config["class_names"]
        self.model.backend = self.cfg.backend
        return point, resumed_config(self.cfg, point.config, self.ranks.world, self.asked)

    def _resolved(self, cfg: TrainConfig, batch_size: int) -> TrainConfig:
        """The settings the data and the model decide (the batch that fits, whether the model is
        conditional, the validation source, what best/ is chosen by), resolved once, in a copy."""
        return dataclasses.replace(
            cfg,
            batch_size=batch_size,
            unconditional=cfg.unconditional or (self.model.num_classes == 0 and cfg.only_class is None),
            val_data=validation_source(cfg.data, cfg.split, cfg.val_data, cfg.val_split),
            keep_best=cfg.keep_best or ("accuracy" if accuracy_classes(cfg, self.model.num_classes) else "bpd"),
        )

    def _optimiser_and_state(self, point) -> list[dict]:
        """Adam, the schedule, the training state and the Polyak average, new or the checkpoint's;
        returns the metrics history up to the resumed step."""
        cfg = self.cfg
        self.optimizer, self.scheduler = optimizer_and_schedule(self.model, cfg, self.total)
        history = read_metrics(self.run_dir, point.state["step"], rewrite=self.ranks.is_main) if point else []
        if point:
            self.optimizer.load_state_dict(point.state["optimizer"])
            self.scheduler.load_state_dict(point.state["scheduler"])
            self.state = restore_state(point.state, history, read_best(self.run_dir))
            self.checkpointed_at = self.state.step
        self.ema = PolyakAverage(self.model, cfg.ema, point.ema if point else None, self.state.ema_updates) if cfg.ema else None
        return history

    def _network(self) -> None:
        """The network a step runs: the model, under DDP on several ranks, compiled with --compile (at the first step)."""
        self.net = self.model
        if self.ranks.active:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.eager_net = self.net
        self.compile_pending = self.cfg.compile  # compiled at the first step, which says what it took
        if self.cfg.compile:
            self._compile(compile_options(self.device))

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train as configured; returns a summary (steps, final training bits/dim, run directory, history, best record)."""
        self.setup()
        if self.ranks.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not self.cfg.resume:
                self.checkpoint()  # config.json exists from the start: the run directory is self-describing
        self._announce()
        self.deadline = None if self.cfg.max_seconds is None else self.clock() + self.cfg.max_seconds
        self.window_start, self.wall_start = self.clock(), time.perf_counter()
        try:
            with StopSignals() as self.stop_signals:
                self.train_loop()
            if self.preempted:  # the checkpoint of the step every rank stopped at is written
                self.reporter.close(finished=False)
                raise TrainingPreempted(self.run_dir, self.state.step, self.preempted)
        except KeyboardInterrupt:
            self.reporter.close(finished=False)
            self.checkpoint()
            raise TrainingInterrupted(self.run_dir, self.state.step) from None
        except OSError as err:  # disk full and the like while writing metrics, best/ or plots
            raise CheckpointWriteFailed(
                f"writing into {self.run_dir} failed at step {self.state.step} ({err}); {self._previous()}: free space, then run again with --resume"
            ) from None
        except (RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            raise OutOfMemory(
                f"out of memory at step {self.state.step} on {self.device} ({' '.join(str(err).split())[:160]}); {self._previous()}: "
                f"continue with --resume and --checkpoint-activations or --amp bf16, or start a new run with a smaller "
                "--batch-size (auto takes the largest that fits)"
            ) from None
        return self._finish()

    def train_loop(self) -> None:
        """Epochs until the last step or a stop; validation owed from before a resume first, and of the final model last."""
        if self.state.validation_pending and self.val is not None:
            self.validate()  # the validation a stop signal interrupted before this run was resumed
        while self.state.step < self.total and not self.stopping:
            self.run_epoch()
        if not self.preempted and self.val is not None and self.validated_at != self.state.step and self.state.step > 0:
            self.validate()  # the final model is a candidate for best/ too

    @property
    def stopping(self) -> bool:
        """Whether training stops early: a stop signal (on any rank) or the time limit was seen."""
        return self.preempted is not None or self.out_of_time

    def should_stop(self) -> bool:
        """Decide, after a step, whether training stops here: a stop signal on any rank or the time
        limit. One collective decides for every rank; an epoch end, the last step and a stop all
        checkpoint anyway."""
        received = self.stop_signals.received
        stop, out_of_time = self.ranks.any_of(received is not None, self.deadline is not None and self.clock() >= self.deadline)
        if stop:
            self.preempted = received or "a stop signal to another rank"
        self.out_of_time = self.out_of_time or out_of_time
        return self.stopping

    def run_epoch(self) -> None:
        """Steps until the epoch ends (or the step or time limit), then a checkpoint."""
        order = self.train_data.epoch_order(self.state.epoch)
        self.epoch_losses = []
        self.model.train()
        with self.train_data.prefetch(order, self.state.position, self.state.step, self.cfg, self.device) as batches:
            while self.state.position < self.steps_per_epoch and self.state.step < self.total:
                waited = batches.waited
                images, labels = batches.next()
                self.data_waits.append(batches.waited - waited)
                bpd = self.step(images, labels)
                if bpd is not None:
                    self._record_step(bpd)
                if self.should_stop():
                    break
                self.maybe_checkpoint()
        if self.state.position >= self.steps_per_epoch:
            self.end_epoch()
        due = self.val is not None and self.state.position == 0 and self.state.epoch % self.cfg.val_every == 0
        self.state.validation_pending = due
        self.checkpoint()  # before validation: a stop signal during it finds this step safe
        if due and not self.preempted:
            self.validate()

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> float | None:
        """One optimisation step on this rank's share of the batch: uint8 images (B, C, H, W) and
        labels (B,) on the device, augmented already (:class:`~cpixelcnn.training.batches.Prefetcher`).
        Returns the global batch's bits/dim, or None when the step was skipped (non-finite loss or
        gradient: weights, optimizer state, Polyak average and schedule untouched)."""
        cfg, state, ranks = self.cfg, self.state, self.ranks
        x = to_model_range(images)
        y = labels if self.model.num_classes else None
        loss = self._first_compiled_step(x, y) if self.compile_pending else self._loss_and_gradients(x, y)
        finite = finite_step(loss, self.model, cfg.grad_clip, ranks)
        if finite:
            self.skipped_in_a_row = 0
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
                state.ema_updates = self.ema.updates
        else:
            self.optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
            self.skipped_in_a_row += 1
        state.step += 1
        state.position += 1
        if self.skipped_in_a_row >= cfg.max_skipped:
            raise TrainingDiverged(
                f"training diverged: {self.skipped_in_a_row} consecutive steps up to step {state.step} had a non-finite loss or "
                f"gradient and were skipped; the last checkpoint (step {self.checkpointed_at}) is in {self.run_dir} "
                "(try a lower --lr or --grad-clip)"
            )
        return ranks.mean(loss.detach()).item() / math.log(2) if finite else None

    def _loss_and_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step's loss (nats per dimension), its gradients left in the parameters."""
        cfg, state, ranks = self.cfg, self.state, self.ranks
        torch.manual_seed(cfg.seed * 1_000_003 + state.step * ranks.world + ranks.rank)  # dropout, resume-exact
        loss = self.objective(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def _objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step's loss in nats per dimension: the network's forward and the exact DMoL loss."""
        return self.loss_fn(self._forward, self.model, x, y, self.cfg.discriminative, self.cfg.backend) / x[0].numel()

    def _compile(self, options: dict | None) -> None:
        """Compile the objective as one graph (forward and loss), or under DDP the network alone:
        dynamo splits a DDP module's graph at its gradient buckets, and the loss stays eager."""
        if self.ranks.active:
            self.net, self.objective = torch.compile(self.eager_net, options=options), self._objective
        else:
            self.net, self.objective = self.eager_net, torch.compile(self._objective, options=options)

    def _first_compiled_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The first step under --compile: torch.compile traces and compiles here (forward, then
        backward). Say once what that took. Where the compiler refuses the C++ wrapper it compiles
        with its defaults; a model or setting it refuses altogether trains eager, with one line
        saying why (the step is then taken again from the same seed)."""
        self.compile_pending = False
        graphs_before = _compiled_graph_count()
        start = time.perf_counter()
        options = compile_options(self.device)
        while True:
            try:
                with _quiet_compiler():
                    loss = self._loss_and_gradients(x, y)
                break
            except Exception as err:  # noqa: BLE001 - whatever the compiler raises, the run goes on (eager at worst)
                if options:
                    options = None
                    self._compile(options)
                    continue
                self.net, self.objective = self.eager_net, self._objective
                reason = " ".join(str(err).split())[:300] or type(err).__name__
                self.say(f"--compile: torch.compile could not compile this model ({type(err).__name__}: {reason}); training eager")
                return self._loss_and_gradients(x, y)
        graphs = _compiled_graph_count() - graphs_before
        what = "the network (forward and backward)" if self.ranks.active else "the training step (forward, loss and backward)"
        wrapper = " (C++ wrapper)" if options else ""
        self.say(
            f"--compile: torch.compile compiled {what}{wrapper} in {time.perf_counter() - start:.1f} s: {graphs} graph{'s' if graphs != 1 else ''}; "
            "validation, averaged weights and sampling stay eager"
        )
        return loss

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.cfg.amp == "bf16"):
            return self.net(x, y)

    def _record_step(self, bpd: float) -> None:
        """The step's bits/dim into the progress bar and, every ``log_every`` steps, a metrics record."""
        step, cfg = self.state.step, self.cfg
        self.epoch_losses.append(bpd)
        self.window.append(bpd)
        elapsed = self.clock() - self.window_start
        speed = self.images_per_s = len(self.window) * cfg.batch_size / max(elapsed, 1e-9)
        self.reporter.advance(step, self.state.epoch, bpd, speed)
        if step % cfg.log_every == 0 or step == self.total:
            record = dict(
                step=step,
                epoch=self.state.epoch,
                train_bpd=sum(self.window) / len(self.window),
                lr=self.scheduler.get_last_lr()[0],
                images_per_s=speed,
                skipped_steps=self.state.skipped_steps,
                **self._data_time(),
            )
            self.reporter.report(record)
            self.window, self.window_start = [], self.clock()

    def _data_time(self) -> dict:
        """The time steps waited for their batches since the last record: per step, and as a share of the wall time."""
        waits, wall = self.data_waits, time.perf_counter() - self.wall_start
        self.data_waits, self.wall_start = [], time.perf_counter()
        return dict(data_ms_per_step=1e3 * sum(waits) / max(1, len(waits)), data_share=sum(waits) / max(wall, 1e-9))

    def maybe_checkpoint(self) -> None:
        """A checkpoint every ``checkpoint_every`` minutes (an epoch end, the last step and a stop
        checkpoint anyway)."""
        due = self.clock() - self.last_checkpoint_time >= self.cfg.checkpoint_every * 60
        if due and self.state.position < self.steps_per_epoch and self.state.step < self.total:
            self.checkpoint()
            self.reporter.draw_curve()

    def end_epoch(self) -> None:
        """The epoch's record and sample grids (as configured); validation follows the epoch's checkpoint."""
        state, cfg = self.state, self.cfg
        state.epoch, state.position = state.epoch + 1, 0
        if self.ranks.is_main:
            record = dict(epoch_end=state.epoch, step=state.step, epoch_train_bpd=sum(self.epoch_losses) / max(1, len(self.epoch_losses)))
            self.reporter.report(record)
            if cfg.sample_every and state.epoch % cfg.sample_every == 0:
                write_samples(self.run_dir, state.epoch, self.model, cfg.samples_per_class, cfg.image_size, cfg.seed)

    # -- checkpoints and validation ------------------------------------------------------------------

    def checkpoint(self) -> None:
        """A complete checkpoint of this step (rank 0 writes; every rank restarts the interval)."""
        if self.ranks.is_main:
            try:
                write_checkpoint(self.run_dir, self.state.step, self._fill_checkpoint)
            except OSError as err:
                raise CheckpointWriteFailed(
                    f"could not write the checkpoint of step {self.state.step} into {self.run_dir / CHECKPOINTS_DIR} ({err}); "
                    f"{self._previous()}: free space, then run again with --resume"
                ) from None
        self.checkpointed_at, self.last_checkpoint_time = self.state.step, self.clock()

    def _fill_checkpoint(self, directory: Path) -> None:
        if self.ema is not None:
            self.save_weights(directory / EMA_NAME, self.ema.state)
        save_run(directory, self.model, self.class_names, extra=self._saved_config())
        save_state(directory, self.state, self.optimizer, self.scheduler)

    def _saved_config(self, **more) -> dict:
        return {"train": dataclasses.asdict(self.cfg) | {"resume": False}, "step": self.state.step, **more}

    def _previous(self) -> str:
        if self.checkpointed_at is None:
            return "no checkpoint was written yet"
        return f"the previous checkpoint (step {self.checkpointed_at}) is intact"

    def validate(self) -> None:
        """Figures of the Polyak average (PixelCNN++ evaluates it) or the weights on the validation
        set; a better record replaces RUN/best/, and the checkpoint of this step is written again
        with it. Rank 0 validates; the others wait at the collective that follows. A stop signal
        ends it between two batches: every rank then stops, the checkpoint of this step (written
        before) still saying the validation is due, so that a resumed run does it first."""
        self.validated_at = self.state.step
        stopped = None
        if self.ranks.is_main:
            try:
                self._validate_on_main()
            except Stopped as err:
                stopped = err.signal_name
                self.say(f"validation at step {self.state.step} stopped by {stopped} between two batches")
        (stop,) = self.ranks.any_of(stopped is not None or self.stop_signals.received is not None)
        if stop:
            self.preempted = stopped or self.stop_signals.received or "a stop signal to another rank"
            return
        self.state.validation_pending = False
        self.checkpoint()

    def _validate_on_main(self) -> None:
        evaluated = self.ema.model(self.model) if self.ema is not None else self.model
        passes = self.val.passes
        if self.images_per_s and passes / (3 * self.images_per_s) > 60:  # a forward pass without gradients: about a third of a training image's
            self.say(f"validating at step {self.state.step}: {passes:,} forward passes, about {passes / (3 * self.images_per_s) / 60:.0f} min")
        record = dict(step=self.state.step, epoch=self.state.epoch, **validation_figures(evaluated, self.val, self.cfg.batch_size))
        record["best"] = is_better(record, self.state.best, self.cfg.keep_best)
        if record["best"]:
            self.state.best = record
            chosen = {k: record[k] for k in ("step", "epoch", "val_bpd", "val_accuracy", "val_n")}
            extra = self._saved_config(best=chosen | {"keep_best": self.cfg.keep_best, "weights": "ema" if self.ema is not None else "raw"})
            write_best(self.run_dir, lambda directory: save_run(directory, evaluated, self.class_names, extra=extra))
        self.reporter.report(record)

    # -- beginning and end -------------------------------------------------------------------------

    def _announce(self) -> None:
        if self.restart:
            how = (
                f"continuing from the checkpoint of step {self.state.step}" if self.cfg.resume else "no checkpoint was written before: starting over"
            )
            self.say(f"torchrun restart {self.restart} (TORCHELASTIC_RESTART_COUNT): {how}")
        self.say(start_line(self.cfg, self.model, self.kind, len(self.data), self.val, self.ranks.world, self.device, self.state.step, self.total))
        self.say(self.memory.line)

    def _finish(self) -> dict:
        cfg, state = self.cfg, self.state
        if self.ranks.is_main and cfg.sample_every and state.position > 0:  # ended inside an epoch: the final model's grid too
            path = write_samples(self.run_dir, state.epoch, self.model, cfg.samples_per_class, cfg.image_size, cfg.seed, step=state.step)
            self.say(f"sample grid of the final model (step {state.step}) -> {path}")
        self.reporter.close()
        self.reporter.draw_curve()
        history = self.reporter.history
        points = [r["train_bpd"] for r in history if "train_bpd" in r]
        final = points[-1] if points else float("nan")
        self.say(end_line(self.state.step, final, latest_validation(history), self.run_dir))
        return dict(steps=self.state.step, train_bpd=final, run_dir=str(self.run_dir), history=history, best=self.state.best)


def new_model(cfg: TrainConfig, num_classes: int) -> ConditionalPixelCNN:
    """A new model of the run's architecture with ``num_classes`` classes, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return ConditionalPixelCNN(cfg.model_config(num_classes), backend=cfg.backend)


def model_kind(cfg: TrainConfig, model: ConditionalPixelCNN, class_names: list[str]) -> str:
    """What is trained, in words: the classes of a conditional model, or why it is unconditional."""
    if model.num_classes:
        return f"class-conditional model ({list_briefly(class_names)})"
    if cfg.only_class is not None:
        return f"unconditional model of class {cfg.only_class}"
    if cfg.unconditional:
        return "unconditional model (--unconditional: labels, if any, are ignored)"
    return f"unconditional model ({cfg.data} has no class labels; --unconditional says so explicitly)"


def compile_options(device: torch.device) -> dict | None:
    """Inductor options for --compile on ``device``. On the CPU the C++ wrapper: the compiled graphs
    call their hundreds of kernels a step from C++, not Python (at 1/40/5, batch 16 on a 2-core CPU
    a step ~6 % faster). Elsewhere the defaults."""
    return {"cpp_wrapper": True} if torch.device(device).type == "cpu" else None


@contextlib.contextmanager
def _quiet_compiler():
    """Inductor's warnings muted while the first step compiles: with the C++ wrapper it warns once
    per weight-normalised layer that weight norm's backward runs through its generic fallback."""
    logger = logging.getLogger("torch._inductor.ir")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _compiled_graph_count() -> int:
    """How many graphs dynamo has compiled in this process (its own counter)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
