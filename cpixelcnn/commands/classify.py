"""``cpixelcnn classify``: Bayes-classify a data split; a predictions CSV and, for labelled data, a report."""

from __future__ import annotations

import json
from pathlib import Path

from cpixelcnn.commands.options import checkpoint_options, data_options, load_checkpoint, load_split, split_options

NAME, HELP = "classify", "Bayes-classify a data split"
STOPPABLE = True  # SIGTERM / SIGUSR1 end it between two batches (exit 75)


def add_arguments(p) -> None:
    checkpoint_options(p)
    data_options(p)
    split_options(p, "test")
    p.add_argument("--predictions", help="CSV path (default RUN_DIR/predictions_<split>.csv)")


def run(args) -> int:
    from cpixelcnn.atomic_io import atomic_write_bytes
    from cpixelcnn.classifier import classify_dataset, predictions_csv
    from cpixelcnn.rundir import write_predictions

    model, config = load_checkpoint(args)
    if model.num_classes == 0:
        raise ValueError(f"{args.checkpoint} holds an unconditional model: it cannot classify")
    names = config["class_names"]
    data = load_split(args, config, model.in_channels, class_names=names)
    predicted, loglik, report = classify_dataset(model, data, args.batch_size)
    text = predictions_csv(data, predicted, loglik, names)
    out = atomic_write_bytes(args.predictions, text.encode()) if args.predictions else write_predictions(Path(args.checkpoint), args.split, text)
    result = {"n": len(data), "predictions": str(out), "accuracy": None, "per_class_accuracy": None, **(report or {})}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"classified {len(data)} images -> {out}")
    if report is None:
        print("labels unknown for this split: no accuracy")
        return 0
    print(f"accuracy {result['accuracy']:.2%}")
    width = max(len(n) for n in names)
    print(" " * (width + 2) + " ".join(f"{n[:8]:>8}" for n in names) + "   (rows: true, columns: predicted)")
    for name, row in zip(names, result["confusion_matrix"]):
        print(f"{name:>{width}}  " + " ".join(f"{v:>8d}" for v in row))
    return 0
