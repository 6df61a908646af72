"""``cpixelcnn evaluate``: bits/dim, accuracy and FID on a split, and a likelihood map."""

from __future__ import annotations

import json
import sys

from cpixelcnn.commands.options import checkpoint_options, data_options, load_checkpoint, load_split, split_options
from cpixelcnn.settings import Bounded

NAME, HELP = "evaluate", "bits/dim, accuracy and FID on a split"
STOPPABLE = True  # SIGTERM / SIGUSR1 end it between two batches (exit 75)


def add_arguments(p) -> None:
    checkpoint_options(p)
    data_options(p)
    split_options(p, "validation")
    p.add_argument("--fid", action="store_true", help="also FID of generated samples against the split")
    p.add_argument("--fid-dims", type=int, default=192, choices=[64, 192, 768, 2048], help="which Inception features FID compares")
    p.add_argument("--fid-samples-per-class", type=Bounded(int, 1, 10_000), default=25, help="generated images per class for FID")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples that FID compares")
    p.add_argument("--heatmap", metavar="OUT.png", help="bits per pixel of the first --heatmap-n images, beside each image")
    p.add_argument("--heatmap-n", type=Bounded(int, 1, 1000), default=8, help="images in the --heatmap figure (default: %(default)s)")


def rounded(value, digits: int = 6):
    """Floats to ``digits`` significant digits (float32 arithmetic leaves noise past them), in nested results too."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def run(args) -> int:
    from cpixelcnn.metrics import evaluate_dataset
    from cpixelcnn.scoring import likelihood_map

    model, config = load_checkpoint(args)
    names = config["class_names"]
    data = load_split(args, config, model.in_channels, class_names=names if model.num_classes else None)
    result, notes = evaluate_dataset(model, data, args.batch_size, args.fid_samples_per_class if args.fid else 0, args.fid_dims, args.seed)
    for note in notes:
        print(note, file=sys.stderr)
    if args.heatmap:
        result["heatmap"] = str(likelihood_map(args.heatmap, model, data, names, args.heatmap_n, args.batch_size))
    if args.json:
        print(json.dumps(rounded(result)))
        return 0
    for key in ("n", "bpd", "accuracy", "fid"):
        value = result[key]
        print(f"{key:>9}: {value:.4f}" if isinstance(value, float) else f"{key:>9}: {value}")
    return 0
