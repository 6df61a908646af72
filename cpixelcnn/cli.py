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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpixelcnn", description="Fast, exact class-conditional PixelCNN++")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a tiny model on built-in data, sample per class, classify")
    demo.add_argument("--out", default="cpixelcnn-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--seconds", type=float, default=60.0, help="training time in seconds (default: %(default)s)")
    demo.add_argument("--max-steps", type=int, default=None, help="train for this many steps instead")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
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
