"""Out-of-distribution detection with the likelihood, on packaged real images: AUROC of bits/dim
and of the likelihood ratio to a background model (Ren et al. 2019).

    python -m benchmarks.bench_ood [--seeds 0 1 2] [--steps 300] [--smoke] [--out FILE]

All images are 8×8 grey: scikit-learn's handwritten digits, tiles of scikit-image's textures
(brick, grass, gravel) and micrographs, and uniform noise. Two in-distribution tasks: digits
(against textures, micrographs, noise) and textures (against digits, micrographs, noise) — the
second is the known failure of raw likelihood, where simpler out-of-distribution images (digits:
mostly flat background) get *lower* bits/dim than the training data. Per task and seed two models
train on the task's train split with the quality guard's recipe (1/32/5, batch 32, lr 2e-3, the
CLI defaults otherwise): the model, and the background model on the same images with
``--mutation-rate 0.2``. Test splits are scored. Scores: bits/dim under the model (higher: out) and
the likelihood ratio in bits/dim (lower: out). AUROC per seed, mean and worst over seeds.
``--smoke``: one seed, a few steps, fewer images — checks the pipeline, claims nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import device_info, over_seeds, write_results

RECIPE = dict(image_size=8, in_channels=1, nr_resnet=1, nr_filters=32, nr_logistic_mix=5, batch_size=32, lr=2e-3, val_data="none", log_every=1000)
TASKS = {"digits": ("textures", "micrographs", "noise"), "textures": ("digits", "micrographs", "noise")}
LIMIT = 300  # images scored per set (a fixed random subset)


def scored_sets(limit: int) -> dict[str, torch.Tensor]:
    """uint8 (N, 1, 8, 8) test images per set (at most ``limit``, a fixed random subset)."""
    from cpixelcnn.data import load_dataset

    named = dict.fromkeys([*TASKS, *(out for outs in TASKS.values() for out in outs)])  # the sets the tasks name, in order
    sets = {name: load_dataset(name, "test", 8, 1).images for name in named if name != "noise"}
    sets["noise"] = torch.randint(0, 256, (limit, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for name, images in sets.items():
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:limit].sort().values
        sets[name] = images[keep]
    return sets


def one_seed(task: str, seed: int, steps: int, sets: dict[str, torch.Tensor], root: Path) -> list[dict]:
    from cpixelcnn.rundir import load_run
    from cpixelcnn.scoring import auroc, score_images
    from cpixelcnn.training import TrainConfig, train

    runs = {}
    for role, rate in (("model", 0.0), ("background", 0.2)):
        out = root / f"{task}-{role}-{seed}"
        train(TrainConfig(data=task, out=str(out), seed=seed, max_steps=steps, mutation_rate=rate, **RECIPE), log=lambda *a: None)
        runs[role] = load_run(out)[0]
    scores = {name: score_images(runs["model"], sets[name], background=runs["background"]) for name in (task, *TASKS[task])}
    rows = []
    for name in TASKS[task]:
        rows.append(
            dict(
                in_set=task,
                out_set=name,
                seed=seed,
                steps=steps,
                n_in=len(sets[task]),
                n_out=len(sets[name]),
                auroc_bpd=auroc(scores[task]["bpd"], scores[name]["bpd"]),
                auroc_llr=auroc([-v for v in scores[task]["llr_bpd"]], [-v for v in scores[name]["llr_bpd"]]),
                mean_bpd_in=statistics.fmean(scores[task]["bpd"]),
                mean_bpd_out=statistics.fmean(scores[name]["bpd"]),
            )
        )
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """AUROC mean and worst over seeds, per (in-distribution set, out-of-distribution set)."""
    return over_seeds(rows, ("in_set", "out_set"), best_of=("auroc_bpd", "auroc_llr"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="one seed, 5 steps, 30 images per set")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    limit = LIMIT
    if args.smoke:
        args.seeds, args.steps, limit = [0], 5, 30
    sets = scored_sets(limit)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in TASKS:
            for seed in args.seeds:
                rows += one_seed(task, seed, args.steps, sets, Path(tmp))
    summary = summarise(rows)
    for entry in summary:
        print(
            f"{entry['in_set']:>8} vs {entry['out_set']:<11}: AUROC bits/dim mean {entry['mean_auroc_bpd']:.3f} worst {entry['worst_auroc_bpd']:.3f} | "
            f"likelihood ratio mean {entry['mean_auroc_llr']:.3f} worst {entry['worst_auroc_llr']:.3f} ({entry['seeds']} seeds)"
        )
    write_results(
        "ood",
        dict(mode="smoke" if args.smoke else "measured", device_info=device_info(), recipe=RECIPE, steps=args.steps, rows=rows, summary=summary),
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
