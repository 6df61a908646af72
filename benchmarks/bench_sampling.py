"""Sampling: naive (one full forward pass per pixel) vs cached (every activation once).

    python -m benchmarks.bench_sampling             # the grid below; naive timed on a sample of passes
    python -m benchmarks.bench_sampling --target    # the issue's target: 32x32, batch 16, 1/40/5, full naive run
    python -m benchmarks.bench_sampling --smoke     # tiny shapes, correctness only

Naive sampling costs H·W full forward passes. Where that is too long, ``naive_passes_timed`` of
them are timed (forward on the partially filled image, exactly what naive runs) and the total is
extrapolated as H·W × the mean pass time; the JSON says so per row ("naive_extrapolated").

The cached sampler's arithmetic is one forward pass, so its figure of merit is
``cached_over_forward``: cached sampling time / the fastest of the timed batched forward passes
of the same model and batch (weight norm precomputed, as both samplers do), measured in the same
run. Cached sampling is the best of two runs where one takes under 5 s.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks import common

MODELS = {"1/40/5": (1, 40, 5), "3/80/10": (3, 80, 10), "5/160/10": (5, 160, 10)}
GRID = [  # (model, batch, size)
    ("1/40/5", 1, 32),
    ("1/40/5", 16, 16),
    ("1/40/5", 16, 32),
    ("1/40/5", 64, 32),
    ("1/40/5", 16, 64),
    ("3/80/10", 16, 32),
    ("5/160/10", 1, 32),
    ("5/160/10", 16, 32),
    ("5/160/10", 64, 32),
]  # fmt: skip  (naive: timed passes until 10 s, extrapolated to H·W passes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--target", action="store_true", help="only the target configuration, naive run in full")
    parser.add_argument(
        "--naive-passes",
        type=int,
        default=32,
        help="at most this many naive forward passes timed per row, stopping after 10 s (0: run naive in full)",
    )
    parser.add_argument("--models", nargs="*", choices=sorted(MODELS), help="only these model sizes")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the CUDA build of the cached sampler")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    import torch

    import cpixelcnn

    if not cpixelcnn.extension_available():
        print(f"the cached sampler needs the compiled extension: {cpixelcnn._extension.IMPORT_ERROR}", file=sys.stderr)
        return 1
    if args.smoke:
        grid, full_naive = [("1/8/2", 2, 8)], True
        models = {"1/8/2": (1, 8, 2)}
    elif args.target:
        grid, full_naive, models = [("1/40/5", 16, 32)], True, MODELS
    else:
        grid, full_naive, models = [r for r in GRID if not args.models or r[0] in args.models], args.naive_passes == 0, MODELS
    rows = []
    for name, batch, size in grid:
        rows.append(measure_row(name, models[name], batch, size, args.device, args.naive_passes, full_naive))
        common.print_row(rows[-1])
    info = dict(common.device_info(), torch_threads=torch.get_num_threads())
    if args.device == "cpu":  # which build of the CPU sampler's tile kernels ran
        info["cached_sampler_isa"] = cpixelcnn._extension._C.cached_sampler_isa()
    payload = dict(benchmark="sampling", mode="smoke" if args.smoke else ("target" if args.target else "grid"), device_info=info, rows=rows)
    if args.smoke and rows[0]["identical_pixels"] != 1.0:
        print("FAIL: cached and naive samples differ", file=sys.stderr)
        return 1
    path = common.write_results("sampling" if not args.target else "sampling-target", payload, args.out)
    if not args.smoke:
        _plot(path, rows)
    return 0


def measure_row(name: str, model_size, batch: int, size: int, device: str, naive_passes: int, full_naive: bool) -> dict:
    """One grid row: the cached sampler (best of two after a warm-up), one forward pass, and the
    naive sampler — run in full, or extrapolated from timed forward passes."""
    import torch

    from cpixelcnn import ConditionalPixelCNN, sample

    n, f, k = model_size
    torch.manual_seed(0)
    model = ConditionalPixelCNN(nr_resnet=n, nr_filters=f, nr_logistic_mix=k).eval().to(device)
    labels = (torch.arange(batch) % 4).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    sample(model, labels[:1], image_size=(size, size), method="cached", generator=torch.Generator().manual_seed(0))
    warmup = time.perf_counter() - start  # builds the (cached) schedule for this size
    cached_s = float("inf")
    for _ in range(2):
        sync()
        start = time.perf_counter()
        cached = sample(model, labels, image_size=(size, size), method="cached", generator=torch.Generator().manual_seed(0))
        sync()
        cached_s = min(cached_s, time.perf_counter() - start)
        if cached_s > 5.0:
            break
    row = dict(model=name, batch=batch, image=f"{size}x{size}", cached_s=cached_s, warmup_batch1_with_schedule_s=warmup)
    pass_times = _forward_passes(
        model, cached.clone(), labels, min(max(naive_passes, 3), size * size), sync
    )  # a filled image: every pass costs the same
    row["forward_s"] = min(pass_times)
    if full_naive:
        start = time.perf_counter()
        naive = sample(model, labels, image_size=(size, size), method="naive", generator=torch.Generator().manual_seed(0))
        sync()
        row.update(naive_s=time.perf_counter() - start, naive_extrapolated=False, identical_pixels=(naive == cached).float().mean().item())
    else:
        row.update(naive_s=sum(pass_times) / len(pass_times) * size * size, naive_extrapolated=True, naive_passes_timed=len(pass_times))
    row["speedup"] = row["naive_s"] / row["cached_s"]
    row["cached_over_forward"] = row["cached_s"] / row["forward_s"]
    return row


def _forward_passes(model, x, labels, most: int, sync) -> list[float]:
    """Seconds of up to ``most`` forward passes (at least 2; stopping after 10 s), after one untimed pass."""
    import torch

    pass_times = []
    with torch.no_grad(), torch.nn.utils.parametrize.cached():
        model(x, labels)
        budget = time.perf_counter() + 10.0
        while len(pass_times) < most and (len(pass_times) < 2 or time.perf_counter() < budget):
            sync()
            start = time.perf_counter()
            model(x, labels)
            sync()
            pass_times.append(time.perf_counter() - start)
    return pass_times


def _plot(path, rows):
    from cpixelcnn.plot import line_chart_png

    series = {}
    for method in ("naive_s", "cached_s"):
        label = method.replace("_s", "") + (" (extrapolated)" if method == "naive_s" and rows[0].get("naive_extrapolated") else "")
        series[label] = [(int(r["image"].split("x")[0]), r[method]) for r in rows if r["model"] == "1/40/5" and r["batch"] == 16]
    png = line_chart_png(
        path.with_suffix(".png"), "PixelCNN++ sampling on the CPU", series, "image size (H = W)", "seconds for a batch of 16 (1/40/5)", log_y=True
    )
    print(f"plot -> {png}")


if __name__ == "__main__":
    sys.exit(main())
