"""What a run tells its user: a progress bar (tqdm.auto — a terminal bar, a widget in notebooks; a
plain line every ``log_every`` steps when stderr is a file), metrics.jsonl, curve.png and,
optionally, Weights & Biases. ``advance`` after each step, ``report`` for each record."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from cpixelcnn.rundir import BEST_DIR, append_metrics, write_curve

BAR_FORMAT = "{l_bar}{bar}| step {n_fmt}/{total_fmt} {elapsed} elapsed, {remaining} left{postfix}"


class Reporter:
    def __init__(
        self, run_dir: Path, *, writer: bool, first_step: int, total: int, log_every: int, history: list[dict], wandb_config: dict | None = None
    ):
        """``writer``: this process writes files and shows progress (rank 0); ``history``: the
        records so far (a resumed run's); ``wandb_config``: log to W&B with this config (None: don't)."""
        self.run_dir, self.writer, self.total, self.log_every, self.history = run_dir, writer, total, log_every, history
        self.validation = ""
        self.bar = _progress_bar(first_step, total, log_every) if writer else None
        self.wandb = _start_wandb(run_dir, wandb_config) if writer and wandb_config is not None else None
        latest = next((r for r in reversed(history) if "val_bpd" in r), None)
        if latest is not None:
            self._show_validation(latest)

    def advance(self, step: int, epoch: int, bpd: float, images_per_s: float) -> None:
        """After a finished step: move the bar (or print a line every ``log_every`` steps)."""
        if self.bar is None:
            return
        self.bar.set_postfix_str(f"epoch {epoch + 1} bpd {bpd:.3f} {images_per_s:.0f} img/s{self.validation}", refresh=False)
        self.bar.update(step - self.bar.n)

    def report(self, record: dict) -> None:
        """A metrics record (training window, epoch end or validation): into the history, metrics.jsonl,
        W&B, and for a validation record the progress line and the curve."""
        self.history.append(record)
        if not self.writer:
            return
        append_metrics(self.run_dir, record)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if v is not None}, step=record.get("step"))
        if "val_bpd" in record:
            self._show_validation(record)
            self.draw_curve()

    def _show_validation(self, record: dict) -> None:
        accuracy = f" acc {record['val_accuracy']:.1%}" if record.get("val_accuracy") is not None else ""
        self.validation = f" | val bpd {record['val_bpd']:.3f}{accuracy}"

    def draw_curve(self) -> None:
        if not self.writer or not any("train_bpd" in r or "val_bpd" in r for r in self.history):
            return
        write_curve(self.run_dir, self.history)

    def close(self, finished: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.wandb is not None and finished:
            self.wandb.finish()


def _progress_bar(first_step: int, total: int, every: int):
    """tqdm.auto's bar when someone watches (a terminal or a notebook); otherwise the same text as a
    line every ``every`` steps (no carriage returns in log files)."""
    from tqdm.auto import tqdm

    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    if in_notebook or sys.stderr.isatty():
        return tqdm(total=total, initial=first_step, file=sys.stderr, bar_format=BAR_FORMAT, dynamic_ncols=True)
    return _Lines(first_step, total, every)


class _Lines:
    """The part of tqdm's bar interface the reporter uses, printing the bar's text as lines."""

    def __init__(self, first_step: int, total: int, every: int):
        self.n, self.initial, self.total, self.every = first_step, first_step, total, every
        self.start, self.postfix = time.monotonic(), ""

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def update(self, steps: int) -> None:
        from tqdm.std import tqdm

        self.n += steps
        if self.n % self.every == 0 or self.n == self.total:
            line = tqdm.format_meter(
                self.n,
                self.total,
                time.monotonic() - self.start,
                ncols=100,
                ascii=True,
                bar_format=BAR_FORMAT,
                postfix=self.postfix,
                initial=self.initial,
            )
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


WANDB_ID_FILE = "wandb/run-id"  # in the run directory: a resumed run logs into the same W&B run


def _start_wandb(run_dir: Path, config: dict):
    """One W&B run per run directory: its id is kept in RUN/wandb/run-id, so ``--resume`` (and a
    torchrun restart) continues it. ``WANDB_PROJECT`` names the project (default cpixelcnn);
    ``WANDB_MODE=offline`` logs without a network, for ``wandb sync`` later."""
    import os
    import secrets

    try:
        import wandb
    except ImportError:
        raise RuntimeError("--wandb needs the wandb package (pip install wandb); metrics.jsonl is written either way") from None
    from cpixelcnn.atomic_io import atomic_write_bytes

    id_file = run_dir / WANDB_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(6)
        id_file.parent.mkdir(exist_ok=True)
        atomic_write_bytes(id_file, run_id.encode())
    project = os.environ.get("WANDB_PROJECT", "cpixelcnn")
    return wandb.init(project=project, name=run_dir.name, id=run_id, dir=str(run_dir), config=config, resume="allow")


def start_line(cfg, model, kind: str, n_images: int, val, world: int, device, step: int, total: int) -> str:
    """What is about to be trained (``kind``: the model in words), on what, for how long, validated how."""
    limit = f"steps {step}->{total}" + (f" or {cfg.max_seconds:g} s, whichever comes first" if cfg.max_seconds else "")
    validation = "; no validation"
    if val:
        split = f"{cfg.holdout} held-out training images" if cfg.holdout else cfg.val_split
        validation = (
            f"; validating on {len(val)} images of {cfg.val_data} ({split}) every {cfg.val_every} epoch(s): {val.describe()}; best by {cfg.keep_best}"
        )
    from cpixelcnn.training.batches import shape_words

    return (
        f"training a {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter {kind} on {n_images} images ({shape_words(cfg)}), "
        f"{world} process(es), {device}, backend {cfg.backend}, {limit}{validation}"
    )


def end_line(steps: int, train_bpd: float, validated: dict | None, run_dir: Path) -> str:
    """The run's outcome: steps, final training bits/dim, the last validation figures, where the run is."""
    summary = best = ""
    if validated:
        accuracy = f" accuracy {validated['val_accuracy']:.1%}" if validated.get("val_accuracy") is not None else ""
        summary = f", validation bits/dim {validated['val_bpd']:.3f}{accuracy}"
        best = f", best model in {run_dir / BEST_DIR}"
    return f"done: {steps} steps, training bits/dim {train_bpd:.3f}{summary}; run directory {run_dir}{best}"
