"""``cpixelcnn import``: a checkpoint of another implementation as a run directory."""

from __future__ import annotations

NAME, HELP = "import", "import a checkpoint of another implementation into a run directory"


def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="the checkpoint file (.pth state dict)")
    p.add_argument("--from", dest="source", required=True, choices=["pixelcnnpp"], help="pixelcnnpp: the pclucas14/pixel-cnn-pp PyTorch port")
    p.add_argument("--out", required=True, help="run directory to write (new or empty)")
    p.add_argument("--replace", action="store_true", help="replace an existing run in --out whole (its weights, EMA, state and checkpoints go)")
    p.add_argument("--nr-resnet", type=int, help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--nr-filters", type=int, help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--nr-mix", type=int, help="check against this (inferred from the tensors otherwise)")
    p.add_argument("--in-channels", type=int, help="check against this (inferred from the tensors otherwise)")


def run(args) -> int:
    from cpixelcnn.pixelcnnpp_port import PORT_NOTE, import_pixelcnnpp
    from cpixelcnn.rundir import check_writable_run, save_run, write_run

    check_writable_run(args.out, args.replace, "import")  # refused before the (slow) import, nothing touched
    arch = dict(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, nr_logistic_mix=args.nr_mix, in_channels=args.in_channels)
    model = import_pixelcnnpp(args.checkpoint, **{k: v for k, v in arch.items() if v is not None})
    extra = {"imported_from": "pixelcnnpp", "source": str(args.checkpoint), "note": PORT_NOTE}
    write_run(args.out, lambda directory: save_run(directory, model, class_names=[], extra=extra), "import")
    cfg = model.config
    print(
        f"imported {args.checkpoint}: nr_resnet={cfg['nr_resnet']} nr_filters={cfg['nr_filters']} "
        f"nr_logistic_mix={cfg['nr_logistic_mix']} in_channels={cfg['in_channels']} -> {args.out}"
    )
    print(f"note: {PORT_NOTE}")
    return 0
