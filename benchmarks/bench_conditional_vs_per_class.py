"""Which classifier to train: one class-conditional model, or per-class models (``--per-class``), at
equal compute — both through the command line, as a user runs them.

Each (data set, seed) trains ``cpixelcnn train`` twice with the same recipe (1/32/5, batch 32,
lr 2e-3, the CLI's defaults otherwise: dropout 0.5, Polyak averaging 0.9995) and the same total
``--max-steps``: once class-conditional, once ``--per-class`` (the steps split over the classes by
their training images). Then ``cpixelcnn evaluate --json`` on the held-out split gives the Bayes
classifier's accuracy (the per-class one with the training data's class priors) and bits/dim (each
image under its own class), with the averaged weights, as ``classify`` would use them.

Real images that ship inside packages (``cpixelcnn[real-data]``; nothing is downloaded): digits
(8×8 grey, 10 classes), textures (16×16 grey patches of brick / grass / gravel), micrographs
(16×16 colour patches of three scikit-image micrographs), photos (bench_photo_task's 16×16
checkerboard patches of four scikit-image photographs, as an image-folder tree); held-out patches
come from regions disjoint from the training patches.

``--speed`` also times, interleaved on the same machine: a training step of an unconditional model
against a class-conditional one of the same size, and ``--per-class`` against its members trained
one after another by hand (``train --only-class NAME --max-steps n_c`` per class).

    python -m benchmarks.bench_conditional_vs_per_class --seeds 0 1 2 3 4 --speed
    python -m benchmarks.bench_conditional_vs_per_class --data photos --steps 800 --out photos.json
    python -m benchmarks.bench_conditional_vs_per_class --data --rows-from digits.json photos.json --speed   # one table of several runs

The results file is rewritten after every run, so an interrupted benchmark keeps what it measured.
    python -m benchmarks.bench_conditional_vs_per_class --smoke    # a few steps: the harness works
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import common

DATASETS = {"digits": (8, 1), "textures": (16, 1), "micrographs": (16, 3), "photos": (16, 3)}
RECIPE = ["--nr-resnet", "1", "--nr-filters", "32", "--nr-mix", "5", "--batch-size", "32", "--lr", "2e-3", "--val-data", "none"]


def data_values(dataset: str, scratch: Path) -> tuple[str, str]:
    """(--data for training, --data for the held-out split): a packaged set's name, or the photo task written into ``scratch``."""
    if dataset != "photos":
        return dataset, dataset
    from benchmarks.bench_photo_task import write_task

    root = scratch / "photos"
    if not root.exists():
        write_task(root, DATASETS["photos"][0], block=32)
    return str(root / "train"), str(root / "test")


def _load(dataset: str):
    """(train, test) Datasets of ``dataset`` as the benchmark's runs read them."""
    from cpixelcnn.data import load_dataset

    size, channels = DATASETS[dataset]
    with tempfile.TemporaryDirectory(prefix="cpixelcnn-photos-") as scratch:
        train_data, test_data = data_values(dataset, Path(scratch))
        return load_dataset(train_data, "train", size, channels), load_dataset(test_data, "test", size, channels)  # decoded before the folder goes


def cli(argv: list[str]) -> str:
    """``cpixelcnn ARGV`` in this process; its standard output (an error exits the benchmark)."""
    from cpixelcnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # progress lines stay quiet unless it fails
        code = main(argv)
    if code != 0:
        raise SystemExit(f"cpixelcnn {' '.join(argv)} exited with {code}: {err.getvalue()[-2000:]}")
    return out.getvalue()


def shape_args(dataset: str) -> list[str]:
    size, channels = DATASETS[dataset]
    return ["--image-size", str(size), "--channels", str(channels)]


def run(dataset: str, method: str, seed: int, steps: int, scratch: Path, recipe: list[str], log=print) -> dict:
    """Train one ``method`` (``conditional`` | ``per-class``) run through the CLI and evaluate it on the held-out split."""
    train_data, test_data = data_values(dataset, scratch)
    out = scratch / f"{dataset}-{method}-{seed}"
    argv = ["train", "--data", train_data, "--out", str(out), "--seed", str(seed), "--max-steps", str(steps), *shape_args(dataset), *recipe]
    start = time.perf_counter()
    cli(argv + (["--per-class"] if method == "per-class" else []))
    seconds = time.perf_counter() - start
    result = json.loads(cli(["evaluate", "--checkpoint", str(out), "--data", test_data, "--split", "test", "--json"]).strip().splitlines()[-1])
    row = dict(
        dataset=dataset,
        method=method,
        seed=seed,
        steps=steps,
        accuracy=result["accuracy"],
        test_bpd=result["bpd"],
        n_test=result["n"],
        train_seconds=seconds,
    )
    log(
        f"{dataset:>11} seed {seed} {method:>11} {steps} steps: held-out accuracy {row['accuracy']:.1%}, bits/dim {row['test_bpd']:.3f} ({seconds:.0f} s)"
    )
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and worst accuracy, mean bits/dim over seeds, per (dataset, steps, method)."""
    return common.over_seeds(rows, ("dataset", "steps", "method"), best_of=("accuracy",), mean_of=("test_bpd", "train_seconds"))


def verdicts(summary: list[dict]) -> list[dict]:
    """Per (dataset, steps): which approach wins on mean held-out accuracy, by how many points, and the same for bits/dim."""
    by_key = {(s["dataset"], s["steps"], s["method"]): s for s in summary}
    out = []
    for dataset, steps, method in by_key:
        if method != "conditional" or (dataset, steps, "per-class") not in by_key:
            continue
        c, p = by_key[(dataset, steps, "conditional")], by_key[(dataset, steps, "per-class")]
        gap = p["mean_accuracy"] - c["mean_accuracy"]
        out.append(
            dict(
                dataset=dataset,
                steps=steps,
                accuracy_winner="per-class" if gap > 0 else "conditional" if gap < 0 else "tie",
                accuracy_points=100 * abs(gap),
                bpd_winner="per-class" if p["mean_test_bpd"] < c["mean_test_bpd"] else "conditional",
                bpd_gap=abs(p["mean_test_bpd"] - c["mean_test_bpd"]),
            )
        )
    return out


# -- speed: unconditional against conditional steps, --per-class against its members by hand ---------


def step_times(rounds: int, steps: int, size: int = 32, batch: int = 16, arch: tuple[int, int, int] = (1, 40, 5)) -> dict:
    """Seconds per training step (forward, exact loss, backward, Adam) of a 4-class FiLM model and an
    unconditional one of the same size, interleaved round by round; the minimum over rounds of each."""
    import torch

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob

    x = torch.rand(batch, 3, size, size) * 2 - 1
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    labels = torch.arange(batch) % 4
    models = {}
    for name, classes in (("conditional", 4), ("unconditional", 0)):
        torch.manual_seed(0)
        model = ConditionalPixelCNN(num_classes=classes, nr_resnet=arch[0], nr_filters=arch[1], nr_logistic_mix=arch[2]).train()
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=1e-4), labels if classes else None)
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, (model, optimizer, y) in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                loss = -dmol_log_prob(x, model(x, y)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return dict(
        arch="/".join(map(str, arch)),
        batch=batch,
        size=size,
        rounds=rounds,
        steps=steps,
        conditional_s=best["conditional"],
        unconditional_s=best["unconditional"],
        unconditional_over_conditional=best["unconditional"] / best["conditional"],
    )


def per_class_overhead(dataset: str, steps: int, rounds: int, scratch: Path, recipe: list[str]) -> dict:
    """Wall time of ``train --per-class --max-steps steps`` against its members trained one after
    another by hand (``--only-class`` with each member's share of the steps), interleaved; minimum over rounds."""
    from cpixelcnn.training.per_class import split_by_counts

    train_data, _ = data_values(dataset, scratch)
    train, _ = _load(dataset)
    counts = [int((train.labels == c).sum()) for c in range(len(train.class_names))]
    shares = split_by_counts(steps, counts)
    base = ["train", "--data", train_data, *shape_args(dataset), *recipe]
    best = {"per-class": float("inf"), "by hand": float("inf")}
    for r in range(rounds):
        start = time.perf_counter()
        cli(base + ["--out", str(scratch / f"overhead-{r}"), "--per-class", "--max-steps", str(steps)])
        best["per-class"] = min(best["per-class"], time.perf_counter() - start)
        start = time.perf_counter()
        for k, name in enumerate(train.class_names):
            cli(base + ["--out", str(scratch / f"hand-{r}-{k}"), "--only-class", name, "--max-steps", str(shares[k])])
        best["by hand"] = min(best["by hand"], time.perf_counter() - start)
    return dict(
        dataset=dataset,
        steps=steps,
        rounds=rounds,
        per_class_s=best["per-class"],
        by_hand_s=best["by hand"],
        per_class_over_by_hand=best["per-class"] / best["by hand"],
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--steps", type=int, default=400, help="total training steps of each approach")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--speed", action="store_true", help="also time unconditional against conditional steps, and --per-class against by hand")
    parser.add_argument("--speed-data", choices=list(DATASETS), default="digits", help="the data set --per-class is timed on (default: digits)")
    parser.add_argument("--rows-from", nargs="*", default=[], help="results files of earlier runs whose rows join this one's table")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    recipe = list(RECIPE)
    if args.smoke:
        args.steps, args.data, args.seeds = 10, ["digits"], [0, 1]
        recipe = ["--nr-resnet", "1", "--nr-filters", "8", "--nr-mix", "2", "--batch-size", "8", "--val-data", "none"]
    rows, speed = [], {}
    for earlier in args.rows_from:
        rows += json.loads(Path(earlier).read_text())["rows"]

    def write() -> None:
        summary = summarize(rows)
        payload = dict(
            benchmark="conditional_vs_per_class",
            mode="smoke" if args.smoke else "measured",
            device_info=common.device_info(),
            config=dict(steps=args.steps, seeds=args.seeds, recipe=" ".join(recipe), rows_from=args.rows_from),
            rows=rows,
            summary=summary,
            verdicts=verdicts(summary),
            speed=speed,
        )
        common.write_results("conditional-vs-per-class", payload, args.out)

    with tempfile.TemporaryDirectory(prefix="cpixelcnn-bench-cvp-") as scratch:
        for dataset in args.data:
            for seed in args.seeds:
                for method in ("conditional", "per-class"):
                    rows.append(run(dataset, method, seed, args.steps, Path(scratch), recipe))
                    write()
        if args.speed or args.smoke:
            speed["step"] = step_times(rounds=2, steps=1, size=8, arch=(1, 8, 2)) if args.smoke else step_times(rounds=5, steps=10)
            overhead_data = args.data[0] if args.smoke else args.speed_data
            speed["per_class"] = per_class_overhead(overhead_data, args.steps if args.smoke else 200, 1 if args.smoke else 3, Path(scratch), recipe)
    write()
    _print_table(rows, speed)
    return 0


def _print_table(rows: list[dict], speed: dict) -> None:
    """The table of docs/per-class.md (mean / worst accuracy and bits/dim per data set and approach, which wins) and the speed lines."""
    summary = summarize(rows)
    print(
        f"\n| data | steps | conditional: mean / worst accuracy, bits/dim | per-class: mean / worst accuracy, bits/dim | which wins |  "
        f"(seeds {sorted({r['seed'] for r in rows})})\n| --- | --- | --- | --- | --- |"
    )
    by_key = {(s["dataset"], s["steps"], s["method"]): s for s in summary}
    for v in verdicts(summary):
        c, p = by_key[(v["dataset"], v["steps"], "conditional")], by_key[(v["dataset"], v["steps"], "per-class")]
        print(
            f"| {v['dataset']} | {v['steps']} | {c['mean_accuracy']:.1%} / {c['worst_accuracy']:.1%}, {c['mean_test_bpd']:.3f} "
            f"| {p['mean_accuracy']:.1%} / {p['worst_accuracy']:.1%}, {p['mean_test_bpd']:.3f} "
            f"| {v['accuracy_winner']} by {v['accuracy_points']:.1f} points; bits/dim: {v['bpd_winner']} by {v['bpd_gap']:.3f} |"
        )
    if speed:
        s, o = speed["step"], speed["per_class"]
        print(
            f"\nstep time ({s['arch']}, batch {s['batch']}, {s['size']}x{s['size']}): conditional {s['conditional_s']:.4f} s, unconditional "
            f"{s['unconditional_s']:.4f} s ({s['unconditional_over_conditional']:.2f}x)"
        )
        print(
            f"--per-class {o['steps']} steps on {o['dataset']}: {o['per_class_s']:.1f} s; its members by hand: {o['by_hand_s']:.1f} s "
            f"({o['per_class_over_by_hand']:.3f}x)"
        )


if __name__ == "__main__":
    sys.exit(main())
