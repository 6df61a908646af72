"""Options several commands share, declared once: a run to load, the data to read and where its
decoded images are cached, and how the sampler runs."""

from __future__ import annotations

from cpixelcnn.settings import Bounded

TEMPERATURE_HELP = "sampling temperature T in (0, 100]: mixture logits / T, logistic scales x T (1: the model's own distribution)"


def checkpoint_options(p) -> None:
    """The options of every command that loads a run."""
    from cpixelcnn.ops.backend import BACKENDS

    p.add_argument("--checkpoint", required=True, help="run directory (config.json + checkpoint.safetensors)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (Apple GPU) or auto (default: cuda, then mps, then cpu)")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="override the model's backend")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the run has Polyak-averaged ones")


def data_options(p) -> None:
    """``--data`` and where its decoded images are kept (cpixelcnn.data.cache); ``train`` declares
    the same options as TrainConfig settings."""
    from cpixelcnn.data import data_help
    from cpixelcnn.data.cache import CACHE_HELP, NO_CACHE_HELP

    p.add_argument("--data", required=True, help=data_help())
    p.add_argument("--data-cache", metavar="DIR", help=CACHE_HELP)
    p.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)


def split_options(p, split: str) -> None:
    """What a command that reads one split of its data takes beside it: the split, --json, --batch-size."""
    p.add_argument("--split", default=split, help="the split of --data to read")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch-size", type=Bounded(int, 1, 65536), default=64, help="images per forward pass (memory, not results)")


def sampler_options(p) -> None:
    """How the sampler runs: ``--method`` and ``--engine`` (the engines registered in cpixelcnn.sampling.engines)."""
    from cpixelcnn.sampling import METHODS
    from cpixelcnn.sampling.engines import engine_choices, engine_help

    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="naive: one forward pass per pixel (the reference); cached: every activation once; auto (default): cached where it can run, else naive",
    )
    p.add_argument("--engine", choices=engine_choices(), default="auto", help=f"how the cached sampler runs: {engine_help()}")


def load(run_dir: str, device: str = "cpu", backend: str | None = None, use_ema: bool = True):
    """(model, config) of a run directory, on ``device``, with ``backend`` when given."""
    from cpixelcnn.devices import resolve_device
    from cpixelcnn.rundir import load_run

    model, config = load_run(run_dir, map_location=resolve_device(device), use_ema=use_ema)
    if backend:
        model.backend = backend
    return model, config


def load_checkpoint(args):
    """The model and config of ``args.checkpoint`` as the checkpoint options ask."""
    return load(args.checkpoint, args.device, args.backend, not args.no_ema)


def image_size(config: dict) -> int:
    """The image size a run was trained at."""
    return int(config.get("train", {}).get("image_size", 32))


def load_split(args, config: dict, channels: int, class_names: list[str] | None = None):
    """The ``--split`` of ``--data`` at the run's image size. Asked for ``test`` or ``validation``
    of the very source the run was trained on, where that source has no such split (an image
    folder answers any split with all of its images), a one-line refusal: those images are the
    run's training images. A run that held N images out (``--val-split N``) reads them as its
    ``validation`` split, and the rest as ``train``."""
    from cpixelcnn.data import has_split, load_dataset

    trained = config.get("train", {})
    holdout = int(trained["val_split"]) if str(trained.get("val_split", "")).isdigit() else 0
    own = trained.get("data") is not None and _same_source(args.data, trained["data"])
    if own and args.split != "train" and not has_split(args.data, args.split) and not (holdout and args.split == "validation"):
        raise ValueError(
            f"--data {args.data} is what {args.checkpoint} was trained on and has no {args.split} split of its own: its images are "
            f"the training images. Give held-out images (a folder beside it, e.g. DATA/{args.split}), train with --val-split N "
            "to hold some out, or say --split train to evaluate the training images knowingly"
        )
    return load_dataset(
        args.data, args.split, image_size(config), channels, class_names=class_names, holdout=holdout if own else 0, cache=cache_of(args)
    )


def _same_source(a: str, b: str) -> bool:
    """Whether two --data values name one source (folders compared by their real paths)."""
    return _canonical(a) == _canonical(b)


def _canonical(value: str) -> str:
    import os

    kind, colon, rest = value.partition(":")
    if colon and not os.path.exists(value):  # FORMAT:DIR
        return f"{kind}:{os.path.realpath(rest)}"
    return os.path.realpath(value) if os.path.exists(value) else value


def cache_of(args):
    """The data cache setting of ``--data-cache`` / ``--no-cache``: it travels with the data request."""
    from cpixelcnn.data.cache import cache_setting

    return cache_setting(args.data_cache, args.no_cache)
