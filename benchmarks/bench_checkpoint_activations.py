"""Peak memory and step time of a training step with and without ``--checkpoint-activations``.

    python -m benchmarks.bench_checkpoint_activations [--model 5/160/10 --batch 16 --size 32] [--smoke] [--out FILE]

Each mode runs in a fresh process (so one mode's peak cannot hide the other's):
- ``saved_activation_mb``: the bytes autograd keeps for the backward pass (every tensor a
  ``saved_tensors_hooks`` pack sees, parameters excluded) — exact, on any device;
- ``peak_step_mb``: on CUDA the caching allocator's own peak (``max_memory_allocated``) above what
  was allocated before the step; on the CPU (no allocator counters) the process's peak resident
  memory (``ru_maxrss``) above its resident memory before the step — it includes the gradients and
  the backward pass's temporaries;
- ``step_s``: median of the timed forward+backward steps after the measured one (a one-image
  step runs first, so one-time costs are not counted as memory).
The same run checks, in float64 on a small model with dropout on, that the loss and every gradient
are identical with and without checkpointing. ``--smoke``: a small model, one timed step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import device_info, write_results


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def measure(model_name: str, batch: int, size: int, steps: int, recompute: bool, device: str) -> dict:
    """One mode, in this process: saved activations, peak step memory and step time."""
    from cpixelcnn import ConditionalPixelCNN
    from cpixelcnn.ops.dmol import dmol_log_prob

    n, f, k = (int(v) for v in model_name.split("/"))
    torch.manual_seed(0)
    model = ConditionalPixelCNN(nr_resnet=n, nr_filters=f, nr_logistic_mix=k, num_classes=4, dropout=0.5, checkpoint_activations=recompute)
    model = model.to(device).train()
    x = (torch.randint(0, 256, (batch, 3, size, size)).float() / 127.5 - 1).to(device)
    y = (torch.arange(batch) % 4).to(device)
    params = {p.data_ptr() for p in model.parameters()}
    saved: dict = {}

    def pack(t):
        if t.data_ptr() not in params:
            saved[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    def step(hooked: bool = False, rows: int = batch):
        model.zero_grad(set_to_none=False)
        if hooked:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = -dmol_log_prob(x[:rows], model(x[:rows], y[:rows])).mean()
        else:
            loss = -dmol_log_prob(x[:rows], model(x[:rows], y[:rows])).mean()
        loss.backward()
        if device != "cpu":
            torch.cuda.synchronize()

    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # allocated before the step: the peak below is activations and temporaries
    step(rows=1)  # one-time costs (lazy imports, kernel caches) on one image, so the measured step holds the peak
    if device == "cpu":
        before = resident_mb()
        step(hooked=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    else:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
        step(hooked=True)
        peak = torch.cuda.max_memory_allocated() / 2**20 - before
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return dict(
        checkpoint_activations=recompute,
        saved_activation_mb=sum(saved.values()) / 2**20,
        peak_step_mb=peak,
        step_s=statistics.median(times),
        peak_counter="cuda max_memory_allocated" if device != "cpu" else "process ru_maxrss",
    )


def identical_in_float64() -> bool:
    """Loss and gradients of a small float64 model with dropout 0.5, with and without checkpointing."""
    from cpixelcnn import ConditionalPixelCNN
    from cpixelcnn.ops.dmol import dmol_log_prob

    torch.manual_seed(0)
    model = ConditionalPixelCNN(nr_resnet=2, nr_filters=8, nr_logistic_mix=3, num_classes=4, dropout=0.5).double().train()
    x = torch.randint(0, 256, (2, 3, 12, 12)).double() / 127.5 - 1
    y = torch.tensor([1, 3])
    results = []
    for recompute in (False, True):
        model.checkpoint_activations = recompute
        model.zero_grad()
        torch.manual_seed(7)
        loss = -dmol_log_prob(x, model(x, y)).mean()
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (l0, g0), (l1, g1) = results
    return l0 == l1 and all(torch.equal(a, b) for a, b in zip(g0, g1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="5/160/10", help="nr_resnet/nr_filters/nr_mix")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the measured first one")
    parser.add_argument("--smoke", action="store_true", help="a small model and one timed step (CI)")
    parser.add_argument("--out")
    parser.add_argument("--child", choices=["plain", "checkpointed"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.batch, args.size, args.steps = "1/16/3", 2, 16, 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child:
        print(json.dumps(measure(args.model, args.batch, args.size, args.steps, args.child == "checkpointed", device)))
        return 0
    rows = []
    for mode in ("plain", "checkpointed"):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_checkpoint_activations",
            "--child",
            mode,
            "--model",
            args.model,
            "--batch",
            str(args.batch),
            "--size",
            str(args.size),
            "--steps",
            str(args.steps),
        ]
        child = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = dict(model=args.model, batch=args.batch, size=args.size, **json.loads(child.stdout.strip().splitlines()[-1]))
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    plain, ckpt = rows
    summary = dict(
        saved_activation_ratio=ckpt["saved_activation_mb"] / plain["saved_activation_mb"],
        peak_step_ratio=ckpt["peak_step_mb"] / plain["peak_step_mb"],
        step_time_ratio=ckpt["step_s"] / plain["step_s"],
        identical_float64=identical_in_float64(),
    )
    print(json.dumps(summary))
    write_results(
        "checkpoint_activations", dict(mode="smoke" if args.smoke else "measured", device_info=device_info(), rows=rows, summary=summary), args.out
    )
    return 0 if summary["identical_float64"] else 1


if __name__ == "__main__":
    sys.exit(main())
