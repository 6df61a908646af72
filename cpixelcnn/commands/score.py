"""``cpixelcnn score``: per-image bits/dim, Bayes class and margin, and the likelihood ratio to a background model."""

from __future__ import annotations

import json
import sys

from cpixelcnn.commands.options import checkpoint_options, data_options, load, load_checkpoint, load_split, split_options

NAME, HELP = "score", "per-image bits/dim, Bayes class and margin, and the likelihood ratio to a background model"
STOPPABLE = True  # SIGTERM / SIGUSR1 end it between two batches (exit 75)


def add_arguments(p) -> None:
    checkpoint_options(p)
    data_options(p)
    split_options(p, "test")
    p.add_argument("--background", metavar="RUN", help="a background model's run: adds its bits/dim and the likelihood ratio")
    p.add_argument("--out", metavar="FILE.csv", help="write the scores as CSV (default: CSV on standard output, or --json)")


def run(args) -> int:
    from cpixelcnn.atomic_io import atomic_write_bytes
    from cpixelcnn.scoring import score_dataset, scores_csv, scores_summary

    model, config = load_checkpoint(args)
    background = load(args.background, args.device, args.backend, not args.no_ema)[0] if args.background else None
    data = load_split(args, config, model.in_channels)
    rows = score_dataset(model, data, config["class_names"], background, args.batch_size)
    if args.json:
        print(json.dumps({"n": len(rows), "summary": scores_summary(rows), "rows": rows}))
    if args.out:
        atomic_write_bytes(args.out, scores_csv(rows).encode())
        print(f"scores of {len(rows)} images -> {args.out}", file=sys.stderr)
    elif not args.json:
        sys.stdout.write(scores_csv(rows))
    return 0
