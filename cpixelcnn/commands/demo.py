"""``cpixelcnn demo``: train a small model on data already on the machine, sample per class, classify."""

from __future__ import annotations

NAME, HELP = "demo", "train a small model on data already on the machine, sample per class, classify"


def add_arguments(p) -> None:
    from cpixelcnn.demo import DEMO_DATA, DEMO_STEPS

    p.add_argument("--out", default="cpixelcnn-demo", help="output folder (default: %(default)s)")
    p.add_argument(
        "--max-steps", type=int, default=DEMO_STEPS, help="training steps (default: %(default)s; a number of steps: the same report on any machine)"
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="stop training earlier, after this many seconds (the report then depends on the machine)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds training and sampling")
    p.add_argument(
        "--data",
        choices=list(DEMO_DATA),
        default="digits",
        help="; ".join(f"{name}: {about}" for name, (_, _, about) in DEMO_DATA.items()) + " (default: %(default)s)",
    )
    p.add_argument("--samples-per-class", type=int, default=8, help="images per class in the sample grid")


def run(args) -> int:
    from cpixelcnn.demo import run_demo

    run_demo(out_dir=args.out, steps=args.max_steps, seconds=args.seconds, seed=args.seed, data=args.data, samples_per_class=args.samples_per_class)
    return 0
