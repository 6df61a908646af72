"""Command line: ``cpixelcnn <command>`` (also ``python -m cpixelcnn``).

Errors a user can cause print one line ``cpixelcnn: error: …`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys


def _cmd_demo(args) -> int:
    from cpixelcnn.demo import run_demo

    run_demo(out_dir=args.out, seconds=args.seconds, max_steps=args.max_steps, seed=args.seed)
    return 0


def _cmd_import(args) -> int:
    from cpixelcnn.checkpoint import save_run
    from cpixelcnn.pixelcnnpp_port import PORT_NOTE, import_pixelcnnpp

    arch = dict(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, nr_logistic_mix=args.nr_mix, in_channels=args.in_channels)
    model = import_pixelcnnpp(args.checkpoint, **{k: v for k, v in arch.items() if v is not None})
    save_run(args.out, model, class_names=[], extra={"imported_from": "pixelcnnpp", "source": str(args.checkpoint), "note": PORT_NOTE})
    cfg = model.config
    print(f"imported {args.checkpoint}: nr_resnet={cfg['nr_resnet']} nr_filters={cfg['nr_filters']} "
          f"nr_logistic_mix={cfg['nr_logistic_mix']} in_channels={cfg['in_channels']} -> {args.out}")  # fmt: skip
    print(f"note: {PORT_NOTE}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpixelcnn", description="Fast, exact class-conditional PixelCNN++")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a tiny model on built-in data, sample per class, classify")
    demo.add_argument("--out", default="cpixelcnn-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seconds", type=float, default=60.0, help="training time in seconds (default: %(default)s)")
    demo.add_argument("--max-steps", type=int, default=None, help="train for this many steps instead")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    imp = sub.add_parser("import", help="import a checkpoint of another implementation into a run directory")
    imp.add_argument("checkpoint", help="the checkpoint file (.pth state dict)")
    imp.add_argument("--from", dest="source", required=True, choices=["pixelcnnpp"], help="pixelcnnpp: the pclucas14/pixel-cnn-pp PyTorch port")
    imp.add_argument("--out", required=True, help="run directory to write")
    imp.add_argument("--nr-resnet", type=int, help="check against this (inferred from the tensors otherwise)")
    imp.add_argument("--nr-filters", type=int)
    imp.add_argument("--nr-mix", type=int)
    imp.add_argument("--in-channels", type=int)
    imp.set_defaults(func=_cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"cpixelcnn: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cpixelcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
