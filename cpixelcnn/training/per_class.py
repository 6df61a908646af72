"""``train --per-class``: one unconditional model per class, trained one after another into
``RUN/members/NN`` (each an ordinary run directory of ``--only-class``, resumable on its own terms),
under the one lock of RUN. Together they are a Bayes classifier with the training data's class priors
(:class:`~cpixelcnn.per_class_model.PerClassPixelCNN`, loaded by ``load_run``).

The budget is the run's: ``--max-steps`` and ``--max-time`` are split over the classes in
proportion to their training images (largest remainders, so the steps add up), ``--epochs`` is
each member's passes over its own images — in all, as many steps as a conditional model takes for
those epochs of the whole data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cpixelcnn.data.types import list_briefly
from cpixelcnn.rundir import CONFIG_NAME, claim, member_folder, read_config, save_per_class_config
from cpixelcnn.rundir.checkpoints import already_holds_a_run
from cpixelcnn.training.batches import RunSplits, steps_per_epoch
from cpixelcnn.training.config import TrainConfig, resumed_config
from cpixelcnn.training.trainer import Trainer, new_model


def split_by_counts(total: int, counts: list[int]) -> list[int]:
    """``total`` split in proportion to ``counts`` by largest remainders: integers that add up to ``total``."""
    whole = sum(counts)
    shares = [total * n / whole for n in counts]
    parts = [int(s) for s in shares]
    for k in sorted(range(len(counts)), key=lambda k: parts[k] - shares[k])[: total - sum(parts)]:
        parts[k] += 1
    return parts


def member_budgets(cfg: TrainConfig, counts: list[int], per_epoch: list[int]) -> tuple[list[int | None], list[float | None], str]:
    """Each member's --max-steps and --max-time, and the start line's words for the split (``per_epoch``: each member's steps per epoch)."""
    if cfg.max_steps is not None:
        steps = split_by_counts(cfg.max_steps, counts)
        if min(steps) < 1:
            raise ValueError(f"--max-steps {cfg.max_steps} leaves a class without a step: give at least one step per class ({len(counts)})")
        words = f"--max-steps {cfg.max_steps} split by class size: {', '.join(map(str, steps))} steps"
    else:
        steps = [None] * len(counts)
        words = f"--epochs {cfg.epochs} of each class's images: {', '.join(str(cfg.epochs * s) for s in per_epoch)} steps"
    seconds = [None] * len(counts)
    if cfg.max_seconds is not None:
        seconds = [cfg.max_seconds * n / sum(counts) for n in counts]
        words += f", --max-time {cfg.max_seconds:g} s split the same way: {', '.join(f'{s:.0f}' for s in seconds)} s"
    return steps, seconds, f"{words} (class sizes {', '.join(map(str, counts))})"


def train_per_class(cfg: TrainConfig, log, ranks, asked: set[str] | None = None, restart: int = 0, **hooks) -> dict:
    """Train (or, with ``cfg.resume``, continue) every member of the per-class run ``cfg.out``, which the caller owns and has locked
    (``restart``: which restart of its workers torchrun is on)."""
    run_dir = Path(cfg.out)
    say = log if ranks.is_main else (lambda *a, **k: None)
    if restart:
        say(f"torchrun restart {restart} (TORCHELASTIC_RESTART_COUNT): " + ("continuing the per-class run" if cfg.resume else "starting over"))
    saved = read_config(run_dir) if cfg.resume else None
    if saved is not None:
        cfg = dataclasses.replace(resumed_config(cfg, saved, ranks.world, asked), per_class=True)
    elif (run_dir / CONFIG_NAME).exists():
        raise ValueError(already_holds_a_run(run_dir))
    splits = RunSplits(cfg)  # the training split, loaded once: counted here, each member's class of it below
    data = _training_split(cfg, splits, saved["class_names"] if saved else None)
    names = data.class_names
    counts = [int((data.labels == c).sum()) for c in range(len(names))]
    if cfg.batch_size == "auto":  # the members share one architecture: the largest batch that fits one fits all
        cfg = dataclasses.replace(cfg, batch_size=_auto_batch(cfg, ranks, min(counts), say))
    per_epoch = [steps_per_epoch(n, cfg.batch_size, ranks.world) for n in counts]  # as each member's images are dealt
    if min(per_epoch) < 1:  # refused before the run's config is written (each member would refuse it too, later)
        small = per_epoch.index(0)
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the {counts[small]} training images of class {names[small]}")
    steps, seconds, budget = member_budgets(cfg, counts, per_epoch)
    if ranks.is_main and saved is None:
        model_config = cfg.model_config(0).check().as_dict()
        save_per_class_config(run_dir, model_config, names, counts, {"train": dataclasses.asdict(cfg) | {"resume": False}})
    say(f"per-class run: {len(names)} unconditional models ({', '.join(names)}) into {run_dir}, one after another; {budget}")
    results = []
    for k, name in enumerate(names):
        member = run_dir / member_folder(k)
        resume = ranks.main_says((member / CONFIG_NAME).is_file())  # rank 0 may write it before another rank looks
        if ranks.is_main and not resume:
            claim(member, "train")
        member_cfg = dataclasses.replace(
            cfg, out=str(member), per_class=False, only_class=name, max_steps=steps[k], max_seconds=seconds[k], resume=resume
        )
        say(f"class {k + 1}/{len(names)}: {name}" + (" (continuing)" if resume else ""))
        trainer = Trainer(member_cfg, log, ranks=ranks, asked=set(), splits=splits, **hooks)  # its settings were checked as the run's
        results.append(trainer.fit())
    total = sum(r["steps"] for r in results)
    say(f"done: per-class run of {len(names)} models, {total} steps in all; classify with `cpixelcnn classify --checkpoint {run_dir} --data ...`")
    return dict(
        steps=total,
        run_dir=str(run_dir),
        members=results,
        class_names=names,
        class_counts=counts,
        history=[],
        best=None,
        train_bpd=sum(r["train_bpd"] * r["steps"] for r in results) / max(total, 1),
    )


def _training_split(cfg: TrainConfig, splits: RunSplits, class_names: list[str] | None):
    """The run's training split (as its members read it: their classes' images), with at least two
    classes of images — a resumed run's ``class_names``."""
    data = splits.get(cfg.data, cfg.split)
    if class_names is not None and list(data.class_names) != list(class_names):
        raise ValueError(f"--data {cfg.data} has classes ({list_briefly(data.class_names)}) but the run has ({list_briefly(class_names)})")
    if not data.has_labels:
        raise ValueError(f"--per-class trains one model per class: the {cfg.split} split of {cfg.data} has images without labels")
    counts = [int((data.labels == c).sum()) for c in range(len(data.class_names))]
    if len(counts) < 2 or min(counts) < 1:
        found = ", ".join(f"{n}: {c}" for n, c in zip(data.class_names, counts))
        raise ValueError(f"--per-class needs at least 2 classes with images; {cfg.data} has {found}")
    return data


def _auto_batch(cfg: TrainConfig, ranks, images: int, say) -> int:
    """``--batch-size auto`` for a per-class run: planned on one member's (unconditional) model."""
    from cpixelcnn.training.memory import plan_batch

    device = ranks.device(cfg.device)
    plan = plan_batch(new_model(cfg, 0).to(device), cfg, device, ranks, images)
    say(plan.line)
    return plan.batch_size
