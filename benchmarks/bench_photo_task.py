"""Short-run classification on natural photographs, over seeds (issue 25's harness).

The task: four classes of RGB patches cut from scikit-image photographs that the package uses
nowhere else (astronaut, chelsea, coffee, rocket; nothing is downloaded). Each photo is cut into
BLOCK × BLOCK blocks assigned to train or test like a checkerboard and every SIZE × SIZE patch lies
inside one block, so train and test regions are disjoint but alike; 300 training and 60 test
patches per class, written as an image-folder tree. Each seed trains the user's recipe (1/32/5,
batch 32, lr 2e-3, 400 steps, CLI defaults otherwise) with ``cpixelcnn train``'s own options —
``--train-args`` adds more, e.g. ``"--lr-schedule cosine"`` — and classifies the test patches with
the raw and the averaged weights. ``--ceiling`` also trains a small discriminative CNN (three 3×3
conv layers, flips, 1,500 Adam steps) on the same patches: how separable the task is at all.

    python -m benchmarks.bench_photo_task --seeds 0 1 2 3 4               # 16x16, 32-pixel blocks
    python -m benchmarks.bench_photo_task --train-args "--dropout 0" --seeds 0 1 2
    python -m benchmarks.bench_photo_task --size 32 --block 64 --ceiling
    python -m benchmarks.bench_photo_task --smoke                          # the harness works

Results: JSON (per seed, mean and worst) with device info. One thread per process is what the
docs' figures used (``OMP_NUM_THREADS=1``); accuracy does not depend on it, time does.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import device_info, over_seeds, write_results

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
RECIPE = ["--nr-resnet", "1", "--nr-filters", "32", "--nr-mix", "5", "--batch-size", "32", "--lr", "2e-3", "--max-steps", "400", "--val-data", "none"]


def write_task(root: Path, size: int, block: int, n_train: int = 300, n_test: int = 60, seed: int = 123) -> Path:
    """The checkerboard photo task as ``root/{train,test}/<photo>/NNNN.png``; returns ``root``."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in PHOTOS:
        photo = getattr(skimage.data, name)()[..., :3]
        blocks = [(by, bx) for by in range(photo.shape[0] // block) for bx in range(photo.shape[1] // block)]
        for split, parity, count in (("train", 0, n_train), ("test", 1, n_test)):
            own = [b for b in blocks if (b[0] + b[1]) % 2 == parity]
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                by, bx = own[rng.integers(len(own))]
                y, x = by * block + rng.integers(0, block - size + 1), bx * block + rng.integers(0, block - size + 1)
                Image.fromarray(photo[y : y + size, x : x + size]).save(folder / f"{i:04d}.png")
    return root


def pixelcnn_accuracy(task: Path, run: Path, size: int, seed: int, argv: list[str]) -> dict:
    """Train one seed with the CLI's options ``argv`` and classify the test split with the raw and
    (when the run has them) the averaged weights."""
    from cpixelcnn import load_run
    from cpixelcnn.classifier import classify
    from cpixelcnn.data import load_dataset
    from cpixelcnn.training import train
    from cpixelcnn.training.config import add_arguments, from_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = from_arguments(parser.parse_args(["--data", str(task / "train"), "--out", str(run), "--image-size", str(size), "--seed", str(seed), *argv]))
    start = time.perf_counter()
    result = train(cfg, log=lambda *a, **k: None)
    seconds = time.perf_counter() - start
    row = dict(seed=seed, steps=result["steps"], train_seconds=seconds)
    test = None
    for key, use_ema in (("raw_accuracy", False), ("averaged_accuracy", True)):
        model, config = load_run(run, use_ema=use_ema)
        if use_ema and config["weights"] != "ema.safetensors":
            continue
        if test is None:  # read once, classified with both weights
            test = load_dataset(str(task / "test"), "test", size, 3, class_names=config["class_names"])
        predicted, _ = classify(model, test.images)
        row[key] = (predicted == test.labels).double().mean().item()
    return row


def cnn_accuracy(task: Path, size: int, seed: int, steps: int = 1500) -> float:
    """Held-out accuracy of a small discriminative CNN trained on the same patches."""
    from cpixelcnn.data import load_dataset, to_model_range

    train, test = (load_dataset(str(task / split), split, size, 3) for split in ("train", "test"))
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, len(train.class_names)),
    )
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x_train, x_test = to_model_range(train.images), to_model_range(test.images)
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (32,))
        x = torch.where(torch.rand(32, 1, 1, 1) < 0.5, x_train[idx].flip(3), x_train[idx])
        loss = torch.nn.functional.cross_entropy(net(x), train.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (net(x_test).argmax(1) == test.labels).double().mean().item()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16, help="patch size (the user's task: 32)")
    parser.add_argument("--block", type=int, default=32, help="checkerboard block size (>= --size)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--train-args", default="", help="more 'cpixelcnn train' options, as one string")
    parser.add_argument("--ceiling", action="store_true", help="also train the discriminative CNN per seed")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.block < args.size:
        parser.error(f"--block must be >= --size ({args.size}), got {args.block}")
    recipe, counts, cnn_steps = list(RECIPE), dict(n_train=300, n_test=60), 1500
    if args.smoke:  # the harness, not the figure
        args.size, args.block, args.seeds, args.ceiling = 8, 16, [0, 1], True
        recipe += ["--max-steps", "3", "--nr-filters", "8", "--nr-mix", "2", "--batch-size", "8"]
        counts, cnn_steps = dict(n_train=12, n_test=6), 5
    extra = shlex.split(args.train_args)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cpixelcnn-photo-task-") as scratch:
        task = write_task(Path(scratch) / "task", args.size, args.block, **counts)
        for seed in args.seeds:
            row = pixelcnn_accuracy(task, Path(scratch) / f"run-{seed}", args.size, seed, recipe + extra)
            if args.ceiling:
                row["cnn_accuracy"] = cnn_accuracy(task, args.size, seed, cnn_steps)
            rows.append(row)
            print(
                f"seed {seed}: "
                + ", ".join(f"{k} {v:.1%}" for k, v in row.items() if k.endswith("accuracy"))
                + f" ({row['train_seconds']:.0f} s training)"
            )
    keys = tuple(k for k in ("raw_accuracy", "averaged_accuracy", "cnn_accuracy") if k in rows[0])
    (summary,) = over_seeds(rows, (), best_of=keys)
    for key in keys:
        print(f"{key}: mean {summary['mean_' + key]:.1%}, worst {summary['worst_' + key]:.1%} over {summary['seeds']} seeds")
    payload = dict(
        benchmark="photo_task",
        mode="smoke" if args.smoke else "measured",
        device_info=device_info(),
        config=dict(size=args.size, block=args.block, seeds=args.seeds, train_args=recipe + extra, photos=PHOTOS, **counts),
        rows=rows,
        summary=summary,
    )
    write_results("photo-task", payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
