"""``cpixelcnn import``: a checkpoint of another implementation as a run directory."""

from __future__ import annotations

from cpixelcnn.model_config import bounds_of
from cpixelcnn.settings import Bounded

NAME, HELP = "import", "import a checkpoint of another implementation into a run directory"


SOURCES = {
    "pixelcnnpp": "the pclucas14/pixel-cnn-pp PyTorch port (a .pth state dict)",
    "openai": "openai/pixel-cnn's TensorFlow checkpoint, given by its prefix (params_cifar.ckpt: .index + .data-*); no TensorFlow needed",
}


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="the checkpoint: a .pth file (pixelcnnpp) or a TensorFlow checkpoint prefix (openai)")
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES), help="; ".join(f"{k}: {v}" for k, v in SOURCES.items()))
    p.add_argument("--out", required=True, help="run directory to write (new or empty)")
    p.add_argument("--replace", action="store_true", help="replace an existing run in --out whole (its weights, EMA, state and checkpoints go)")
    p.add_argument("--nr-resnet", type=Bounded(int, *bounds_of("nr_resnet")), help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--nr-filters", type=Bounded(int, *bounds_of("nr_filters")), help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--nr-mix", type=Bounded(int, *bounds_of("nr_logistic_mix")), help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--in-channels", type=int, choices=(1, 3), help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--no-ema", action="store_true", help="openai: the raw weights instead of the Polyak averages (which the paper evaluates with)")
    p.add_argument("--class-names", help="openai, a class-conditional model: its class names, comma-separated (default: 0, 1, ...)")


def run(args) -> int:
    from cpixelcnn.rundir import check_writable_run, save_run, write_run

    check_writable_run(args.out, args.replace, "import")  # refused before the (slow) import, nothing touched
    arch = dict(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, nr_logistic_mix=args.nr_mix, in_channels=args.in_channels)
    arch = {k: v for k, v in arch.items() if v is not None}
    if args.source == "openai":
        model, class_names, extra, note = _from_openai(args, arch)
    else:
        if args.no_ema or args.class_names:
            raise ValueError("--no-ema and --class-names go with --from openai (the port's checkpoints hold one set of weights and no classes)")
        from cpixelcnn.pixelcnnpp_port import PORT_NOTE, import_pixelcnnpp

        model, class_names, note = import_pixelcnnpp(args.checkpoint, **arch), [], PORT_NOTE
        extra = {"imported_from": "pixelcnnpp", "source": str(args.checkpoint), "note": note}
    write_run(args.out, lambda directory: save_run(directory, model, class_names=class_names, extra=extra), "import")
    cfg = model.config
    print(
        f"imported {args.checkpoint}: nr_resnet={cfg['nr_resnet']} nr_filters={cfg['nr_filters']} "
        f"nr_logistic_mix={cfg['nr_logistic_mix']} in_channels={cfg['in_channels']}"
        + (f" num_classes={model.num_classes}" if model.num_classes else "")
        + f" -> {args.out}"
    )
    print(f"note: {note}")
    return 0


def _from_openai(args, arch: dict):
    from cpixelcnn.openai_import import NOTE, import_openai

    model, info = import_openai(args.checkpoint, ema=not args.no_ema, **arch)
    k = model.num_classes
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else [str(i) for i in range(k)]
    if k == 0 and args.class_names:
        raise ValueError(f"--class-names: {args.checkpoint} holds an unconditional model (no conditional_weights_N/hw variables)")
    if len(names) != k or len(set(names)) != k or not all(names):
        raise ValueError(f"--class-names gives {len(names)} names; the model has {k} classes (give {k} distinct names, comma-separated)")
    weights = "the Polyak averages (…/ExponentialMovingAverage)" if info["ema"] else "the raw weights (--no-ema)"
    print(f"weights: {weights}, {info['variables']} variables mapped")
    extra = {"imported_from": "openai", "source": info["checkpoint"], "weights": "ema" if info["ema"] else "raw", "note": NOTE}
    return model, names, extra, NOTE
