"""Resuming: the newest checkpoint that opens cleanly (damaged ones are set aside), and the
metrics history up to it. Writing a checkpoint is ``checkpoint.write_checkpoint``; every run-file
name is defined in ``cpixelcnn.rundir``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cpixelcnn.checkpoint import checkpoint_dirs, is_transient, load_run, non_finite_tensor, publish_checkpoint, read_config, remove_stray_files
from cpixelcnn.io import atomic_write_bytes
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.rundir import BEST_DIR, CHECKPOINTS_DIR, CONFIG_NAME, EMA_NAME, METRICS_NAME, STATE_NAME, WEIGHTS_NAME


@dataclass
class ResumePoint:
    source: Path  # the checkpoint directory (or a run directory written before checkpoints/ existed)
    config: dict
    model: ConditionalPixelCNN
    state: dict  # training_state.pt
    ema: dict | None  # the Polyak averages, when the run keeps them


def open_checkpoint(source: Path, device: torch.device) -> ResumePoint:
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
    return ResumePoint(source, config, model, state, ema)


def set_aside_name(source: Path) -> Path:
    """``unreadable-step-N`` beside ``source``, numbered when that name is taken (it never blocks a resume)."""
    target, n = source.parent / f"unreadable-{source.name}", 1
    while target.exists():
        n += 1
        target = source.parent / f"unreadable-{source.name}.{n}"
    return target


def open_run(run_dir: Path, resume: bool, device: torch.device, writer: bool, say) -> ResumePoint | None:
    """The checkpoint to resume from (``resume``), or None for a new run — refused where ``run_dir`` already holds one."""
    if resume:
        return resume_point(run_dir, device, writer, say)
    if (run_dir / WEIGHTS_NAME).exists() or (run_dir / CONFIG_NAME).exists() or checkpoint_dirs(run_dir):
        raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another --out")
    return None


def resume_point(run_dir: Path, device: torch.device, writer: bool, say) -> ResumePoint:
    """The newest checkpoint that opens cleanly; newer unreadable ones are set aside (renamed
    ``unreadable-step-N``) with a warning, and the run directory's files are pointed at the one
    used. Only the ``writer`` (rank 0) changes files."""
    if writer and run_dir.is_dir():
        remove_stray_files(run_dir)
    candidates = checkpoint_dirs(run_dir) or ([run_dir] if (run_dir / CONFIG_NAME).is_file() else [])
    if not candidates:
        raise FileNotFoundError(f"{run_dir} is not a cpixelcnn run directory (no {CONFIG_NAME} or {CHECKPOINTS_DIR}/): nothing to resume")
    problems = []
    for source in candidates:
        try:
            point = open_checkpoint(source, device)
        except Exception as err:
            if is_transient(err):  # trouble around the files, not in them: change nothing
                raise RuntimeError(f"could not read the checkpoint {source} ({type(err).__name__}: {first_line(err)}); "
                                   "nothing was changed: fix that, then run --resume again") from None  # fmt: skip
            problems.append(f"{source.name}: {first_line(err)}")  # a torn, truncated, corrupted or inconsistent checkpoint
            if writer and source != run_dir:
                os.rename(source, set_aside_name(source))
            continue
        if problems:
            say(
                f"warning: newest checkpoint unreadable ({'; '.join(problems)}); set aside, resuming from {source.name} (step {point.config.get('step')})"
            )
        if writer and source != run_dir:
            publish_checkpoint(run_dir, source)
        return point
    raise ValueError(f"{run_dir} has no readable checkpoint to resume from ({'; '.join(problems)})")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def read_metrics(run_dir: Path, upto_step: int, rewrite: bool) -> list[dict]:
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


def read_best(run_dir: Path) -> dict | None:
    """The record RUN/best/ was chosen by (None without one)."""
    try:
        return read_config(run_dir / BEST_DIR).get("best")
    except (OSError, ValueError):
        return None
