"""Checkpoints: writing one whole (or not at all) and pointing the run directory at it; the best
weights; and resuming — the newest checkpoint that opens cleanly (damaged ones are set aside) and
the metrics history up to it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cpixelcnn.atomic_io import atomic_write_bytes, fsync_path, new_temp_dir
from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.notices import first_line, option
from cpixelcnn.rundir.files import is_transient, load_run, non_finite_tensor, read_config, read_state
from cpixelcnn.rundir.layout import BEST_DIR, CHECKPOINTS_DIR, CONFIG_NAME, EMA_NAME, METRICS_NAME, STATE_NAME, WEIGHTS_NAME

# ``RUN/checkpoints/step-NNNNNNNNN/`` (config.json, checkpoint.safetensors, ema.safetensors when
# averaging, training_state.pt). Each is filled in a temporary directory and renamed into place, so
# one either exists whole or not at all; the run directory's own files are then hard links to the
# newest (what sample/classify/evaluate load). ``RUN/best/`` is swapped in the same way.

KEEP_CHECKPOINTS = 2
PUBLISHED = (CONFIG_NAME, WEIGHTS_NAME, EMA_NAME, STATE_NAME)


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The run's complete checkpoints, newest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[5:]), reverse=True)


def _fill_dir(parent: Path, name: str, fill) -> Path:
    """Run ``fill(tmp_dir)`` in a fresh hidden directory of ``parent``, then rename it to ``name``
    (replacing an older one of that name). On any failure the temporary directory is removed and
    the old ``name`` is untouched."""
    import shutil

    parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temp_dir(parent, f".{name}.")
    final = parent / name
    try:
        fill(tmp)
        for f in tmp.iterdir():
            fsync_path(f)
        fsync_path(tmp)
        if final.exists():  # directories cannot be replaced in one rename: move the old one aside first
            old = new_temp_dir(parent, f".{name}.old.")
            os.rename(final, old / name)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_path(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_checkpoint(run_dir: str | os.PathLike, step: int, fill) -> Path:
    """A new checkpoint ``RUN/checkpoints/step-<step>`` filled by ``fill(directory)``; then the run
    directory's files point at it and checkpoints beyond the newest KEEP_CHECKPOINTS are removed."""
    import shutil

    run_dir = Path(run_dir)
    final = _fill_dir(run_dir / CHECKPOINTS_DIR, f"step-{step:09d}", fill)
    publish_checkpoint(run_dir, final)
    for old in checkpoint_dirs(run_dir)[KEEP_CHECKPOINTS:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def publish_checkpoint(run_dir: Path, checkpoint: Path) -> None:
    """Make ``run_dir``'s config/weights/state files those of ``checkpoint`` (hard links; copies
    where the file system has none), each replaced atomically."""
    import shutil

    for name in PUBLISHED:
        source, target = checkpoint / name, run_dir / name
        if not source.exists():
            target.unlink(missing_ok=True)  # e.g. no ema.safetensors in this checkpoint
            continue
        if target.exists() and os.path.samefile(source, target):  # rename() between two links of one file does nothing
            continue
        tmp = run_dir / f".{name}.{os.getpid()}.link.tmp"  # the run's lock makes this process its only writer
        Path(tmp).unlink(missing_ok=True)
        try:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    fsync_path(run_dir)


def write_best(run_dir: str | os.PathLike, fill) -> Path:
    """Replace ``RUN/best/`` by a directory filled by ``fill(directory)`` (whole or not at all)."""
    return _fill_dir(Path(run_dir), BEST_DIR, fill)


def remove_stray_files(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and directories a killed writer leaves (``.<name>.*.tmp``) in the
    run directory and its checkpoint folder; a ``best/`` caught mid-swap is restored first."""
    import shutil

    run_dir = Path(run_dir)
    if not (run_dir / BEST_DIR).exists():  # killed between moving the old best aside and renaming the new one in
        for old in run_dir.glob(f".{BEST_DIR}.old.*.tmp"):
            if (old / BEST_DIR / CONFIG_NAME).is_file():
                os.rename(old / BEST_DIR, run_dir / BEST_DIR)
                break
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS_DIR):
        for path in folder.glob(".*.tmp") if folder.is_dir() else []:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
    state = read_state(source, device)
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


def already_holds_a_run(run_dir: Path) -> str:
    """The refusal of a new run in a folder that holds one, naming the settings as the caller writes them."""
    auto = option("--resume auto", "resume='auto'")
    return f"{run_dir} already holds a run: pass {option('--resume', 'resume=True')} (or {auto}) to continue it, or choose another {option('--out', 'out')}"


def open_run(run_dir: Path, resume: bool, device: torch.device, writer: bool, say) -> ResumePoint | None:
    """The checkpoint to resume from (``resume``), or None for a new run — refused where ``run_dir`` already holds one."""
    if resume:
        return resume_point(run_dir, device, writer, say)
    if (run_dir / WEIGHTS_NAME).exists() or (run_dir / CONFIG_NAME).exists() or checkpoint_dirs(run_dir):
        raise ValueError(already_holds_a_run(run_dir))
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
                raise RuntimeError(
                    f"could not read the checkpoint {source} ({type(err).__name__}: {first_line(err)}); "
                    "nothing was changed: fix that, then run --resume again"
                ) from None
            problems.append(f"{source.name}: {type(err).__name__}: {first_line(err)}")  # a torn, truncated, corrupted or inconsistent checkpoint
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
