"""Held-out Bayes accuracy on scikit-learn's digits with the classification guard's recipe — the one
measurement behind every digits accuracy in the README and the docs, and the recipe
``tests/test_quality.py`` guards (it imports RECIPE from here).

    python -m benchmarks.quality_digits            # seeds 0-4 -> benchmarks/results/quality-digits-cpu--2-cores.json

Each seed trains 1/32/5 for 300 steps (the CLI's defaults otherwise: dropout 0.5, Polyak
averaging; ``cpixelcnn demo --seed N`` trains the same) and classifies the 270 held-out test digits with the averaged weights (what
``classify`` uses) and with the raw weights. Accuracy depends on the steps, not on the machine's
speed; the time is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cpixelcnn.commands.demo import DEMO_RECIPE, DEMO_STEPS  # noqa: E402  (the demo's digits run is this recipe's seed 0)

RECIPE = dict(data="digits", image_size=8, in_channels=1, **DEMO_RECIPE, max_steps=DEMO_STEPS, val_data="none", log_every=1000)
SEEDS = (0, 1, 2, 3, 4)
RESULT = "quality-digits-cpu--2-cores.json"


def held_out_accuracy(run: Path, use_ema: bool = True) -> float:
    """The Bayes accuracy of a trained run on the digits' test split."""
    from cpixelcnn.classifier import classify
    from cpixelcnn.data import load_dataset
    from cpixelcnn.rundir import load_run

    test = load_dataset("digits", "test", 8, 1)
    model, _ = load_run(run, use_ema=use_ema)
    predicted, _ = classify(model, test.images)
    return (predicted == test.labels).double().mean().item()


def measure(seed: int, folder: Path, steps: int = RECIPE["max_steps"]) -> dict:
    from cpixelcnn.training import TrainConfig, train

    run = folder / f"seed{seed}"
    start = time.perf_counter()
    train(TrainConfig(out=str(run), seed=seed, **(RECIPE | {"max_steps": steps})), log=lambda *a: None)
    seconds = time.perf_counter() - start
    return dict(seed=seed, accuracy=held_out_accuracy(run), raw_accuracy=held_out_accuracy(run, use_ema=False), train_s=seconds)


def summary(rows: list[dict]) -> dict:
    accuracy, raw = [r["accuracy"] for r in rows], [r["raw_accuracy"] for r in rows]
    return dict(
        seeds=len(rows),
        steps=RECIPE["max_steps"],
        mean_accuracy=sum(accuracy) / len(accuracy),
        worst_accuracy=min(accuracy),
        best_accuracy=max(accuracy),
        mean_raw_accuracy=sum(raw) / len(raw),
        worst_raw_accuracy=min(raw),
        model=f"{RECIPE['nr_resnet']}/{RECIPE['nr_filters']}/{RECIPE['nr_logistic_mix']}",
    )


def main(argv=None) -> int:
    from benchmarks.common import RESULTS, device_info

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--out", default=None, help=f"results file (default: benchmarks/results/{RESULT})")
    parser.add_argument("--smoke", action="store_true", help="one seed, 3 steps: checks the script runs (no figure)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = "0"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(measure(seed, Path(scratch), steps=3 if args.smoke else RECIPE["max_steps"]))
            print(f"seed {seed}: {rows[-1]['accuracy']:.1%} (raw {rows[-1]['raw_accuracy']:.1%}), {rows[-1]['train_s']:.0f} s", flush=True)
    mode = "smoke" if args.smoke else "measured"
    payload = dict(benchmark="quality-digits", mode=mode, recipe=RECIPE, rows=rows, summary=summary(rows), device_info=device_info())
    out = Path(args.out) if args.out else RESULTS / (RESULT if not args.smoke else RESULT.replace(".json", "-smoke.json"))
    out.write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps(payload["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
