"""Training configuration: every setting declared once — default, bounds or check, help and flag
(:func:`cpixelcnn.settings.setting`). ``add_arguments`` generates ``cpixelcnn train``'s options from
the fields, each number typed with its own bounds, and ``check`` applies the same checks to the
Python API.

The architecture settings are :class:`cpixelcnn.model_config.ModelConfig`'s, declared beside the
model; ``TrainConfig`` takes those the command line offers (flat, so ``TrainConfig(nr_resnet=1)``
keeps working) and adds the data, optimisation, validation and bookkeeping settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from dataclasses import dataclass, fields

from cpixelcnn.data.cache import CACHE_HELP, NO_CACHE_HELP, CacheSetting, cache_setting
from cpixelcnn.model_config import ModelConfig
from cpixelcnn.ops.backend import BACKENDS
from cpixelcnn.settings import bounded_type, check_setting, flag_of, setting, value_type
from cpixelcnn.training.objectives import LR_SCHEDULES


def _architecture_options():
    """The dataclass of the architecture settings ``train`` takes as options: the fields of
    :class:`ModelConfig` marked ``cli`` (the class count comes from the data), declared there once."""
    chosen = [f for f in fields(ModelConfig) if f.metadata["cli"]]
    return dataclasses.make_dataclass(
        "ArchitectureOptions",
        [(f.name, f.type, dataclasses.field(default=f.default, metadata=f.metadata)) for f in chosen],
        kw_only=True,
    )


ArchitectureOptions = _architecture_options()


def _remembers_given(cls):
    """``cls(...).given``: the names of the settings its caller passed (``dataclasses.replace`` passes them all)."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.given = frozenset(kwargs)

    cls.__init__ = __init__
    return cls


@_remembers_given
@dataclass(kw_only=True)
class TrainConfig(ArchitectureOptions):
    """Everything ``train`` needs. ``data`` and ``out`` are required; the architecture settings are
    :class:`ModelConfig`'s (the number of classes comes from the data)."""

    in_channels: int | None = setting(
        None, "1 (grey) or 3 (RGB); default: the data's own (RGB where it mixes them)", flag="--channels", choices=(1, 3), fixed_on_resume=True
    )
    data: str = setting(help="the images (on the command line: every format data_help() lists)", fixed_on_resume=True)
    out: str = setting(help="run directory")
    data_cache: str | None = setting(None, CACHE_HELP, metavar="DIR")
    no_cache: bool = setting(False, NO_CACHE_HELP)
    split: str = setting("train", "split of --data to train on", fixed_on_resume=True)
    unconditional: bool = setting(
        False,
        "train an unconditional model p(x) (the paper's; labels, if any, are ignored): the default for images "
        "without labels (a folder with no class sub-folders)",
        fixed_on_resume=True,
    )
    only_class: str | None = setting(
        None, "train an unconditional model of this class's images of --data only", metavar="CLASS", fixed_on_resume=True
    )
    per_class: bool = setting(
        False,
        "train one unconditional model per class into RUN/members/ (a Bayes classifier with the training "
        "data's class priors); the budget (--max-steps, --max-time) is split over the classes by their image "
        "counts, --epochs is each member's",
        fixed_on_resume=True,
    )
    epochs: int = setting(1, "passes over the data (--max-steps overrides)", bounds=(1, 10**6))
    max_steps: int | None = setting(None, "stop after this many steps", bounds=(1, 10**9))
    max_seconds: float | None = setting(
        None, "stop (and checkpoint) after this many seconds of training", flag="--max-time", check="positive", unit="seconds"
    )
    grad_clip: float | None = setting(None, "clip the global gradient norm to this (off by default)", check="positive", metavar="MAX_NORM")
    max_skipped: int = setting(20, "stop after this many consecutive non-finite steps, which are skipped", bounds=(1, 10**6))
    batch_size: int | str = setting(
        32,
        "global batch size (split over torchrun processes); auto: the largest that fits the device's free memory (measured before the first step)",
        fixed_on_resume=True,
        word="auto",
        bounds=(1, 65536),
    )
    lr: float = setting(1e-3, "Adam learning rate", check="positive", fixed_on_resume=True)
    lr_decay: float = setting(
        0.999995, "learning-rate decay per step (PixelCNN++'s; with --lr-schedule exponential)", check="positive", fixed_on_resume=True
    )
    lr_schedule: str = setting(
        "exponential",
        "exponential: lr x lr_decay^step (the paper's); cosine: lr x (1 + cos(pi step / total steps)) / 2, "
        "reaching 0 at the last step of --max-steps (or of --epochs); a --resume with a larger --max-steps lays the "
        "cosine over the new total, so the lr rises to where that longer schedule stands",
        choices=LR_SCHEDULES,
        fixed_on_resume=True,
    )
    ema: float = setting(
        0.9995,
        "Polyak averaging decay with TensorFlow's warm-up min(decay, (1+n)/(10+n)); sample/classify/evaluate use "
        "the averaged weights (the paper's 0.9995; 0: off)",
        check="fraction",
        fixed_on_resume=True,
    )
    weight_decay: float = setting(0.0, "Adam weight decay", check="non_negative", fixed_on_resume=True)
    cond_lr_scale: float = setting(
        1.0, "learning-rate multiplier for the class embedding and conditioning heads", check="positive", fixed_on_resume=True
    )
    discriminative: float = setting(
        0.0,
        "add WEIGHT x the Bayes classifier's cross-entropy to the loss (off by default: it changes what "
        "the model optimises and costs one forward pass per class)",
        check="non_negative",
        metavar="WEIGHT",
        fixed_on_resume=True,
    )
    seed: int = setting(0, "seeds the initialisation, data order, dropout and augmentation", fixed_on_resume=True)
    device: str = setting("auto", "cpu, cuda, cuda:N, mps (Apple GPU) or auto (cuda, then mps, then cpu)")
    backend: str = setting("eager", "kernels: the eager PyTorch reference, Triton, or auto", choices=BACKENDS)
    image_size: int | None = setting(
        None, "images are resized to this (square); default: the data's own size (32 for data of no one size)", fixed_on_resume=True, bounds=(1, 512)
    )
    augment: bool = setting(False, "random horizontal flips and brightness jitter", fixed_on_resume=True)
    balanced_batches: bool = setting(
        False, "deal every batch with equal numbers of images per class (as the class counts allow)", fixed_on_resume=True
    )
    mutation_rate: float = setting(
        0.0,
        "replace each training pixel value by a random level at this rate: train a background model for "
        "'cpixelcnn score --background' with 0.1-0.3 (Ren et al. 2019)",
        check="fraction",
        metavar="RATE",
        fixed_on_resume=True,
    )
    amp: str | None = setting(None, "bf16 autocast", choices=("bf16",))
    compile: bool = setting(False, "compile the training step (forward and loss) with torch.compile")
    checkpoint_activations: bool = setting(
        False,
        "recompute each gated resnet in the backward pass instead of keeping its activations "
        "(less memory for big models, one more forward pass of compute; same loss and gradients)",
    )
    val_data: str | None = setting(
        None, "validation images ('none': no validation; default: --data's own --val-split when it has one)", fixed_on_resume=True
    )
    val_split: str = setting(
        "validation",
        "split of --val-data, or a number N: hold N images of --data's training split out (the same N for every seed) and validate on them",
        fixed_on_resume=True,
    )
    val_every: int = setting(1, "validate every N epochs and at the end", metavar="N", bounds=(1, 10**6))
    val_limit: int = setting(500, "validate on at most this many images (a fixed random subset)", fixed_on_resume=True, bounds=(1, 10**7))
    val_accuracy: str = setting(
        "auto",
        "Bayes accuracy at validation, one forward pass per class and image: auto (for at most 32 classes; bits/dim alone "
        "beyond), on (every class), off, or a number N (N-way accuracy among N classes drawn once, on their images)",
        metavar="auto|on|off|N",
        fixed_on_resume=True,
    )
    keep_best: str | None = setting(
        None,
        "what RUN/best/ is chosen by (default: accuracy where validation measures it, else bpd; accuracy turns --val-accuracy auto on)",
        choices=("accuracy", "bpd"),
        fixed_on_resume=True,
    )
    checkpoint_every: float = setting(
        10.0, "checkpoint every this many minutes as well as at epoch ends", check="positive", unit="minutes", metavar="MINUTES"
    )
    sample_every: int = setting(
        0, "write per-class sample grids every N epochs, and of the final model when the run ends inside an epoch (0: never)", bounds=(0, 10**6)
    )
    samples_per_class: int = setting(4, "samples per class in those grids", bounds=(1, 1000))
    log_every: int = setting(10, "steps between metrics.jsonl records", bounds=(1, 10**9))
    wandb: bool = setting(False, "also log to Weights & Biases (needs wandb installed)")
    resume: bool | str = setting(
        False,
        "continue the run in --out; --resume auto: continue it if --out holds it, else start it (what a "
        "requeued job runs; a worker torchrun restarts does this by itself)",
        word="auto",
    )

    @property
    def holdout(self) -> int:
        """N of ``--val-split N`` (0 when it names a split)."""
        return int(self.val_split) if str(self.val_split).isdigit() else 0

    @property
    def cache(self) -> CacheSetting:
        """Where the run's decoded images are kept (``--data-cache``, ``--no-cache``)."""
        return cache_setting(self.data_cache, self.no_cache)

    def model_config(self, num_classes: int) -> ModelConfig:
        """The architecture of this run's model with ``num_classes`` classes (0: unconditional);
        channels not given (and not yet taken from the data) are RGB's."""
        chosen = {f.name: getattr(self, f.name) for f in fields(ArchitectureOptions)}
        return ModelConfig(**chosen | {"in_channels": self.in_channels or 3, "num_classes": num_classes})


def check(cfg: TrainConfig, world_size: int = 1) -> None:
    """One-line ValueError naming the flag of the first setting out of its bounds or choices."""
    for f in fields(cfg):
        check_setting(f, getattr(cfg, f.name), name=flag_of(f))
    if isinstance(cfg, TrainConfig):
        cache_setting(cfg.data_cache, cfg.no_cache)  # --data-cache and --no-cache together are refused
        _check_holdout(cfg)
        _check_kind(cfg)
        _check_val_accuracy(cfg)
    if isinstance(cfg, TrainConfig) and cfg.batch_size != "auto" and cfg.batch_size % world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must divide evenly over {world_size} processes")


def _check_holdout(cfg: TrainConfig) -> None:
    from cpixelcnn.data import SPLITS

    if cfg.val_split not in SPLITS and not cfg.holdout:
        raise ValueError(f"--val-split must be one of {', '.join(SPLITS)} or a number of training images to hold out, got {cfg.val_split!r}")
    if cfg.holdout and cfg.split != "train":
        raise ValueError(f"--val-split {cfg.holdout} holds images of the training split out; it needs --split train, got {cfg.split!r}")
    if cfg.holdout and cfg.val_data not in (None, "none", cfg.data):
        raise ValueError(f"--val-split {cfg.holdout} holds images of --data out; it cannot validate on another --val-data ({cfg.val_data})")


def _check_val_accuracy(cfg: TrainConfig) -> None:
    value = str(cfg.val_accuracy)
    if value not in ("auto", "on", "off") and not (value.isdigit() and int(value) >= 2):
        raise ValueError(f"--val-accuracy must be auto, on, off or a number of classes >= 2, got {cfg.val_accuracy!r}")
    if value == "off" and cfg.keep_best == "accuracy":
        raise ValueError("--keep-best accuracy needs the accuracy that --val-accuracy off turns off")


def _check_kind(cfg: TrainConfig) -> None:
    """The kind of model asked for (conditional, unconditional, one class's, per-class) against the settings that need classes."""
    kinds = [
        flag
        for flag, on in (("--per-class", cfg.per_class), ("--unconditional", cfg.unconditional), ("--only-class", cfg.only_class is not None))
        if on
    ]
    if len(kinds) > 1:
        raise ValueError(f"{' and '.join(kinds)} ask for different models: give one of them")
    needs_classes = [
        flag
        for flag, on in (
            ("--discriminative", cfg.discriminative > 0),
            ("--balanced-batches", cfg.balanced_batches),
            ("--keep-best accuracy", cfg.keep_best == "accuracy"),
        )
        if on
    ]
    if kinds and needs_classes:
        raise ValueError(f"{needs_classes[0]} needs a class-conditional model; {kinds[0]} trains unconditional ones")


def fixed_on_resume() -> tuple[str, ...]:
    """The training settings a resumed run takes from the saved run."""
    return tuple(f.name for f in fields(TrainConfig) if f.metadata.get("fixed_on_resume"))


def merged_with_saved(cfg: TrainConfig, saved: dict, model_config: dict, world_size: int = 1, asked: set[str] | None = None) -> TrainConfig:
    """The configuration a resumed run continues with: the saved run's fixed settings (``saved``:
    its config.json "train" object) and architecture (``model_config``), this run's others; checked again.

    One rule for the command line and the Python API: a fixed setting that was asked for with
    another value than the run's is refused, naming it. ``asked``: the settings the caller wrote
    (the command line passes its flags); None takes ``cfg.given``, those the caller passed to
    ``TrainConfig(...)`` — whatever their values, a default written out counts as asked."""
    kept = {name: saved[name] for name in fixed_on_resume() if name in saved and name not in _MODEL_NAMES}
    kept |= {f.name: model_config[f.name] for f in fields(ArchitectureOptions) if f.name in model_config}
    asked = set(cfg.given) if asked is None else set(asked)
    flags = {f.name: flag_of(f) for f in fields(TrainConfig)}
    words = {f.name: f.metadata["word"] for f in fields(TrainConfig)}
    changed = [
        f"{flags[name]} {getattr(cfg, name)} (run: {value})"
        for name, value in kept.items()
        if name in asked and getattr(cfg, name) not in (value, words.get(name))
    ]
    if changed:
        raise ValueError(f"{', '.join(changed)}: these settings cannot change on --resume; drop them, or train a new run with another --out")
    merged = dataclasses.replace(cfg, **kept)
    check(merged, world_size)
    return merged


def resumed_config(cfg: TrainConfig, saved: dict, world_size: int = 1, asked: set[str] | None = None) -> TrainConfig:
    """:func:`merged_with_saved` with a saved run's config.json (its "train" object and its model)."""
    return merged_with_saved(cfg, saved.get("train", {}), saved["model"], world_size, asked)


def add_arguments(parser: argparse.ArgumentParser, with_defaults: bool = True) -> None:
    """``cpixelcnn train``'s options, one per field, in two groups (model, training). Without
    defaults an option absent from the command line is absent from the parsed namespace."""
    from cpixelcnn.data import data_help  # the registered formats: the same --data help as every command's

    for title, group_fields in (("model", fields(ArchitectureOptions)), ("training", [f for f in fields(TrainConfig) if f.name not in _MODEL_NAMES])):
        group = parser.add_argument_group(title)
        for f in group_fields:
            meta = f.metadata
            required = f.default is dataclasses.MISSING
            default = None if required else f.default
            help_text = (data_help() if f.name == "data" else meta["help"]) + (
                f" (default: {default})" if default is not None and not isinstance(default, bool) else ""
            )
            kw = dict(dest=f.name, help=help_text.replace("%", "%%"))
            if not with_defaults:
                kw["default"] = argparse.SUPPRESS
            elif not required:
                kw["default"] = default
            if isinstance(default, bool) and meta["word"]:  # --resume or --resume auto
                group.add_argument(flag_of(f), nargs="?", const=True, choices=[meta["word"]], **kw)
                continue
            if isinstance(default, bool):
                group.add_argument(flag_of(f), action="store_true", **kw)
                continue
            if meta["word"]:
                kw["metavar"] = f"{{N,{meta['word']}}}"
                group.add_argument(flag_of(f), type=_or_word(f), required=required, **kw)
                continue
            if meta["choices"] is None:
                kw["metavar"] = meta["metavar"] or flag_of(f).lstrip("-").replace("-", "_").upper()
            group.add_argument(flag_of(f), type=bounded_type(f) or value_type(f), choices=meta["choices"], required=required, **kw)


_MODEL_NAMES = {f.name for f in fields(ArchitectureOptions)}


def _or_word(f: dataclasses.Field):
    """An argparse type: the field's word itself (``auto``), else a number within the field's bounds."""
    word, kind, bounded = f.metadata["word"], value_type(f), bounded_type(f)

    def parse(text: str):
        if text == word:
            return word
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number or {word}, got {text!r}") from None
        return bounded(text) if bounded is not None else number

    return parse


def from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The configuration of parsed arguments; a setting absent from ``args`` (a parser built
    without defaults) takes its default."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)})


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings written on the command line, when ``args`` comes from a parser built by
    :func:`add_arguments` without defaults (absent options are absent from the namespace)."""
    return {f.name for f in fields(TrainConfig) if hasattr(args, f.name)}
