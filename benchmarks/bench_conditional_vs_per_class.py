"""One class-conditional model against per-class unconditional models at the same total steps.

Real images that ship inside packages (``cpixelcnn[real-data]``; nothing is downloaded): digits
(8×8 grey, 10 classes), textures (16×16 grey patches of brick / grass / gravel), micrographs
(16×16 colour patches of three scikit-image micrographs), photos (bench_photo_task's 16×16
checkerboard patches of four scikit-image photographs); held-out patches come from regions
disjoint from the training patches. Both sides use the package's model, exact DMoL loss and its
optimizer settings (Adam β = 0.95, 0.9995, per-step decay 0.999995), the same batch size and seed.
The per-class models are trained round-robin, so at every evaluation each has had 1/C of the steps.
Held-out accuracy is the Bayes rule — argmax_c log p(x | c) for the conditional model,
argmax_c log p_c(x) for the per-class ones — and bits/dim is each test image's under its own class.

Each setting runs over several seeds (``--seeds``) with dropout as the CLI trains by default (0.5)
and without (``--dropout 0.5 0``); the summary gives the mean and the worst held-out accuracy.

    python -m benchmarks.bench_conditional_vs_per_class            # 600 steps, evaluated every 150
    python -m benchmarks.bench_conditional_vs_per_class --data digits --seeds 0 1 2 3 4
    python -m benchmarks.bench_conditional_vs_per_class --smoke    # a few steps: the harness works
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from benchmarks import common

DATASETS = {"digits": (8, 1), "textures": (16, 1), "micrographs": (16, 3), "photos": (16, 3)}


def _load(dataset: str):
    """(train, test) of a packaged set, or of ``photos``: bench_photo_task's checkerboard task
    (16×16 patches of four scikit-image photographs, 32-pixel blocks, 300 training / 60 test
    patches per class)."""
    from cpixelcnn.data import load_dataset

    size, channels = DATASETS[dataset]
    if dataset != "photos":
        return load_dataset(dataset, "train", size, channels), load_dataset(dataset, "test", size, channels)
    import tempfile
    from pathlib import Path

    from benchmarks.bench_photo_task import write_task

    with tempfile.TemporaryDirectory(prefix="cpixelcnn-photos-") as scratch:
        root = write_task(Path(scratch), size, block=32)
        return tuple(load_dataset(str(root / split), split, size, channels) for split in ("train", "test"))  # decoded before the folder goes


def _bayes(models_logprob, images, num_classes: int, batch: int = 128):
    """(N, C) log-likelihoods in nats: models_logprob(x, c) → (B,) for every class c."""
    import torch

    from cpixelcnn.data import to_model_range

    out = torch.empty(images.shape[0], num_classes, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            x = to_model_range(images[start : start + batch])
            for c in range(num_classes):
                out[start : start + batch, c] = models_logprob(x, c).double()
    return out


def run(dataset: str, steps: int, eval_every: int, arch: dict, batch: int, lr: float, seed: int, dropout: float, ema: float = 0.0, log=print,
        test_limit: int | None = None) -> list[dict]:  # fmt: skip
    import torch

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob
    from cpixelcnn.data import to_model_range
    from cpixelcnn.training import PolyakAverage

    size, channels = DATASETS[dataset]
    train, test = _load(dataset)
    if test_limit is not None:  # smoke mode: the harness, not the figure
        test.images, test.labels = test.images[:test_limit], test.labels[:test_limit]
    names = train.class_names
    num_classes = len(names)
    dims = channels * size * size

    averages = {}  # model id → its Polyak average (the weights evaluated, as the CLI's classify does)

    def make(num):
        torch.manual_seed(seed)
        model = ConditionalPixelCNN(in_channels=channels, num_classes=num, dropout=dropout, **arch)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.95, 0.9995))
        if ema:  # averaging starts from the initial weights, as in training
            averages[id(model)] = PolyakAverage(model, ema, None)
        return model, optimizer, torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999995)

    def step(model, optimizer, scheduler, idx, labels):
        model.train()
        x = to_model_range(train.images[idx])
        loss = -dmol_log_prob(x, model(x, labels), bits=model.bits, check=False).mean() / dims
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema:
            averages[id(model)].update(model)

    def averaged(model):
        if not ema:
            return model
        copy = ConditionalPixelCNN(**model.config)
        copy.load_state_dict(averages[id(model)].state)
        return copy.eval()

    def evaluate(method, logprob, done, seconds):
        for m in models(method):
            m.eval()
        loglik = _bayes(logprob, test.images, num_classes)
        accuracy = (loglik.argmax(1) == test.labels).double().mean().item()
        own = loglik.gather(1, test.labels[:, None])[:, 0]
        bpd = (-own / (dims * math.log(2))).mean().item()
        row = dict(
            dataset=dataset,
            method=method,
            dropout=dropout,
            ema=ema,
            seed=seed,
            steps=done,
            accuracy=accuracy,
            test_bpd=bpd,
            train_seconds=seconds,
            n_test=len(test),
        )
        log(
            f"{dataset:>11} dropout {dropout:g} seed {seed} {method:>12} steps {done:>5}: held-out accuracy {accuracy:.1%}, bits/dim {bpd:.3f} ({seconds:.0f} s)"
        )
        return row

    conditional = make(num_classes)
    per_class = [make(0) for _ in range(num_classes)]
    members = [torch.nonzero(train.labels == c)[:, 0] for c in range(num_classes)]

    def models(method):
        return [conditional[0]] if method == "conditional" else [m for m, _, _ in per_class]

    rows, timers = [], {"conditional": 0.0, "per-class": 0.0}
    order = torch.Generator().manual_seed(seed)
    for done in range(1, steps + 1):
        idx = torch.randint(0, len(train), (batch,), generator=order)
        t0 = time.perf_counter()
        step(*conditional, idx, train.labels[idx])
        timers["conditional"] += time.perf_counter() - t0
        c = (done - 1) % num_classes  # round-robin: each per-class model gets every C-th step
        own = members[c][torch.randint(0, len(members[c]), (batch,), generator=order)]
        t0 = time.perf_counter()
        step(*per_class[c], own, None)
        timers["per-class"] += time.perf_counter() - t0
        if done % eval_every == 0 or done == steps:
            cond_eval = averaged(conditional[0])
            rows.append(
                evaluate(
                    "conditional",
                    lambda x, c: dmol_log_prob(x, cond_eval(x, torch.full((x.shape[0],), c)), bits=cond_eval.bits),
                    done,
                    timers["conditional"],
                )
            )
            class_eval = [averaged(m) for m, _, _ in per_class]
            rows.append(
                evaluate("per-class", lambda x, c: dmol_log_prob(x, class_eval[c](x, None), bits=class_eval[c].bits), done, timers["per-class"])
            )
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and worst accuracy, mean bits/dim over seeds, per (dataset, dropout, steps, method)."""
    return common.over_seeds(rows, ("dataset", "dropout", "steps", "method"), best_of=("accuracy",), mean_of=("test_bpd",))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="*", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--steps", type=int, default=600, help="total steps for each side")
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.5, 0.0], help="dropout settings (default: the CLI's 0.5, and none)")
    parser.add_argument("--ema", type=float, default=0.9995, help="Polyak averaging as the CLI trains by default (evaluated weights); 0: off")
    parser.add_argument("--test-limit", type=int, help="classify only the first N test images (default: all)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    arch = dict(nr_resnet=1, nr_filters=32, nr_logistic_mix=5)
    if args.smoke:
        args.steps, args.eval_every, args.batch_size, args.data, args.seeds, args.test_limit = 6, 3, 4, ["digits"], [0, 1], 30
        arch = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2)
    rows = []
    for dataset in args.data:
        for dropout in args.dropout:
            for seed in args.seeds:
                rows += run(dataset, args.steps, args.eval_every, arch, args.batch_size, args.lr, seed, dropout, args.ema, test_limit=args.test_limit)
    summary = summarize(rows)
    payload = dict(benchmark="conditional_vs_per_class", mode="smoke" if args.smoke else "measured", device_info=common.device_info(),
                   config=dict(steps=args.steps, batch=args.batch_size, lr=args.lr, seeds=args.seeds, dropout=args.dropout, ema=args.ema, **arch),
                   rows=rows, summary=summary)  # fmt: skip
    path = common.write_results("conditional-vs-per-class", payload, args.out)
    if not args.smoke:
        from cpixelcnn.plot import line_chart_png

        series = {}
        for r in summary:
            series.setdefault(f"{r['dataset']} {r['method']} dropout {r['dropout']:g}", []).append((r["steps"], 100 * r["mean_accuracy"]))
        print(
            f"plot -> {line_chart_png(path.with_suffix('.png'), 'held-out Bayes accuracy at equal total steps (mean over seeds)', series, 'total steps', 'accuracy (%)')}"
        )
    print(
        f"\n| data | dropout | steps | conditional: mean / worst acc, bpd | per-class: mean / worst acc, bpd |  ({len(args.seeds)} seeds)\n| --- | --- | --- | --- | --- |"
    )
    by_key = {(r["dataset"], r["dropout"], r["steps"], r["method"]): r for r in summary}
    for dataset, dropout, done, method in by_key:
        if method != "conditional":
            continue
        c, p = by_key[(dataset, dropout, done, "conditional")], by_key[(dataset, dropout, done, "per-class")]
        print(f"| {dataset} | {dropout:g} | {done} | {c['mean_accuracy']:.1%} / {c['worst_accuracy']:.1%}, {c['mean_test_bpd']:.3f} "
              f"| {p['mean_accuracy']:.1%} / {p['worst_accuracy']:.1%}, {p['mean_test_bpd']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
