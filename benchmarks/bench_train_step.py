"""Full training step (forward, exact DMoL loss, backward, Adam): images per second.

Variants: eager, torch.compile(eager), Triton kernels, torch.compile + Triton.
    python -m benchmarks.bench_train_step          # GPU: 5/160/10, batch 64, 32x32, bf16 autocast
    python -m benchmarks.bench_train_step --smoke  # CPU: a tiny model, one step each, losses compared
    python -m benchmarks.bench_train_step --cpu [--port DIR]
        # CPU: 1/40/5, batch 16, 32x32, dropout 0.5, Adam; ours (cheap element-wise dropout mask),
        # ours with torch's dropout, ours under torch.compile as `train --compile` runs it (forward
        # and loss one graph, inductor's C++ wrapper; class-conditional with FiLM, and
        # unconditional: the port's architecture), and the PyTorch port eager and under
        # torch.compile (pclucas14/pixel-cnn-pp checked out in DIR; channel-wise Dropout2d) —
        # interleaved rounds, the order rotating each round; each variant's per-round speed against
        # the compiled port (median, and in how many rounds it was ahead); each compiled variant's
        # graph count and compile time (its first step less a timed one; compiled cold: the
        # compiler's on-disk cache is a fresh folder unless TORCHINDUCTOR_CACHE_DIR is set).
        # The port's utils.py has one Python 2 line (`print e`): make it `print(e)` in the scratch copy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmarks import common


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (GPU); per variant and round (--cpu)")
    parser.add_argument("--cpu", action="store_true", help="the CPU comparison (see above)")
    parser.add_argument("--port", help="a checkout of pclucas14/pixel-cnn-pp to time beside ours (--cpu)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (--cpu)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (--cpu)")
    args = parser.parse_args(argv)
    if args.cpu:
        return cpu_main(args)
    smoke = args.smoke or common.setup_smoke_mode()
    import torch

    device = "cuda" if common.on_gpu() and not args.smoke else "cpu"
    arch = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=3) if smoke else dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10)
    batch, size = (2, 8) if smoke else (64, 32)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (batch, 3, size, size), generator=gen) / 127.5 - 1).to(device)
    y = torch.randint(0, 4, (batch,), generator=gen).to(device)
    rows = []
    for name, backend, use_compile in (
        ("eager", "eager", False),
        ("compile", "eager", True),
        ("triton", "triton", False),
        ("compile+triton", "triton", True),
    ):
        rows.append(dict(variant=name, **_time_variant(backend, use_compile, arch, x, y, device, smoke, args.steps)))
        common.print_row(rows[-1])
    base = rows[0]["first_loss"]
    for row in rows:
        if abs(row["first_loss"] - base) > (1e-4 if smoke else 2e-2) * abs(base):
            print(f"FAIL: first-step loss of {row['variant']} ({row['first_loss']}) differs from eager ({base})", file=sys.stderr)
            return 1
    if not smoke:
        eager_ms = rows[0]["step_ms"]
        compile_ms = rows[1]["step_ms"]
        for row in rows:
            row["speedup_vs_eager"] = eager_ms / row["step_ms"]
            row["speedup_vs_compile"] = compile_ms / row["step_ms"]
    payload = dict(
        benchmark="train_step",
        mode="smoke" if smoke else "timed",
        device_info=common.device_info(),
        config=dict(batch=batch, image=size, amp="bf16" if device == "cuda" else None, **arch),
        rows=rows,
    )
    path = common.write_results("train_step", payload, args.out)
    if not smoke:
        common.plot_bars(path, "training step images/s", rows, "variant", "images_per_s", "variant")
    return 0


def _port_step(port_dir: str, x, arch: dict, use_compile: bool = False):
    """A training step of the PyTorch port (its model, its loss: summed over the batch), on the CPU;
    ``use_compile``: its model under torch.compile, as a user would try first."""
    import torch

    sys.path.insert(0, str(Path(port_dir).resolve()))
    try:
        from model import PixelCNN  # the port's modules, imported from its checkout
        from utils import discretized_mix_logistic_loss
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = PixelCNN(nr_resnet=arch["nr_resnet"], nr_filters=arch["nr_filters"], nr_logistic_mix=arch["nr_logistic_mix"], input_channels=3)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if use_compile else model

    def step():
        cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self  # its loss moves a zeros tensor with .cuda(): keep it on the CPU
        try:
            loss = discretized_mix_logistic_loss(x, forward(x))
        finally:
            torch.Tensor.cuda = cuda
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _our_step(x, y, arch: dict, dropout_backend: str, use_compile: bool, num_classes: int = 4):
    """One training step of our model as the trainer runs it (fused Adam; compiled as ``train --compile`` compiles)."""
    import torch

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob
    from cpixelcnn.ops.dropout import Dropout
    from cpixelcnn.training.objectives import adam
    from cpixelcnn.training.trainer import compile_options

    torch.manual_seed(0)
    model = ConditionalPixelCNN(dropout=0.5, num_classes=num_classes, **arch)
    labels = y if num_classes else None
    for module in model.modules():
        if isinstance(module, Dropout):
            module.backend = dropout_backend
    model.train()
    opt = adam(model.parameters(), lr=1e-3)  # as the trainer builds it (fused)

    def objective(x, labels):
        return -dmol_log_prob(x, model(x, labels), check=False).mean()

    if use_compile:  # as `train --compile` does: forward and loss as one graph, the trainer's inductor options
        objective = torch.compile(objective, options=compile_options(x.device))

    def step():
        loss = objective(x, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _warm_up(variants: dict) -> tuple[dict, dict]:
    """Two steps of every variant outside the timing (compilation happens in the first): its seconds, and the graphs compiled."""
    from torch._dynamo.utils import counters

    first_step, graphs = {}, {}
    for name, step in variants.items():
        before = counters["stats"]["unique_graphs"]
        start = time.perf_counter()
        step()
        first_step[name] = time.perf_counter() - start
        graphs[name] = counters["stats"]["unique_graphs"] - before if "compile" in name else None
        step()
        print(
            f"warmed up: {name} (first step {first_step[name]:.1f} s" + (f", {graphs[name]} graphs)" if graphs[name] is not None else ")"), flush=True
        )
    return first_step, graphs


def _interleaved(variants: dict, rounds: int, steps: int) -> dict[str, list[float]]:
    """Seconds per step of every variant in every round, the order rotated each round (no variant always runs after the same one)."""
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            for _ in range(steps):
                variants[name]()
            times[name].append((time.perf_counter() - start) / steps)
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), flush=True)
    return times


def _cpu_rows(times: dict, first_step: dict, graphs: dict, batch: int) -> list[dict]:
    """Each variant's median step, its speed against ours eager, the port, and the compiled port paired by round."""
    import statistics

    rows = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        compiled = graphs[name] is not None
        rows.append(
            dict(
                variant=name,
                step_s=median,
                step_s_min=min(seconds),
                step_s_max=max(seconds),
                images_per_s=batch / median,
                graphs=graphs[name],
                compile_s=first_step[name] - median if compiled else None,
            )
        )
    port = next((r for r in rows if r["variant"].startswith("port")), None)
    port_compiled = times.get("port, torch.compile")
    for row in rows:
        if port is not None:
            row["speed_vs_port"] = port["step_s"] / row["step_s"]  # > 1: faster than the port's eager step
        row["speed_vs_ours_eager"] = rows[0]["step_s"] / row["step_s"]
        if port_compiled is not None:  # paired by round: each round's ratio, then their median
            ratios = [theirs / mine for mine, theirs in zip(times[row["variant"]], port_compiled)]
            row["speed_vs_port_compiled"] = statistics.median(ratios)
            row["rounds_ahead_of_port_compiled"] = f"{sum(q > 1 for q in ratios)}/{len(ratios)}"
        common.print_row(row)
    return rows


def _time_variant(backend: str, use_compile: bool, arch: dict, x, y, device: str, smoke: bool, steps: int) -> dict:
    """One variant's first-step loss and (on a GPU) its step time, throughput and peak memory."""
    import torch

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob
    from cpixelcnn.training.objectives import adam

    torch.manual_seed(0)
    model = ConditionalPixelCNN(dropout=0.0 if smoke else 0.5, backend=backend, **arch).to(device)
    opt = adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model, backend="aot_eager" if smoke else "inductor") if use_compile else model

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            params = forward(x, y)
        loss = -dmol_log_prob(x, params, backend=backend, check=False).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    row = dict(first_loss=float(step()))
    if not smoke:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
        row.update(step_ms=1e3 * seconds, images_per_s=x.shape[0] / seconds, peak_memory_gb=torch.cuda.max_memory_allocated() / 2**30)
        torch.cuda.reset_peak_memory_stats()
    return row


def cpu_main(args) -> int:
    """Median seconds per training step of each variant over interleaved rounds (noisy machines:
    the ratio to the port is the figure)."""
    import os
    import tempfile

    if not args.no_compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # compile times are cold compiles
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-train-step-inductor-")

    import torch

    arch = dict(nr_resnet=1, nr_filters=40, nr_logistic_mix=5)
    batch, size = 16, 32
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, size, size), generator=gen) / 127.5 - 1
    y = torch.randint(0, 4, (batch,), generator=gen)
    variants = {"ours": _our_step(x, y, arch, "auto", False), "ours, torch dropout": _our_step(x, y, arch, "eager", False)}
    if not args.no_compile:
        variants["ours, torch.compile"] = _our_step(x, y, arch, "auto", True)
        variants["ours unconditional, torch.compile"] = _our_step(x, y, arch, "auto", True, num_classes=0)
    if args.port:
        variants["port (Dropout2d)"] = _port_step(args.port, x, arch)
        if not args.no_compile:
            variants["port, torch.compile"] = _port_step(args.port, x, arch, use_compile=True)
    first_step, graphs = _warm_up(variants)
    times = _interleaved(variants, args.rounds, args.steps)
    rows = _cpu_rows(times, first_step, graphs, batch)
    payload = dict(
        benchmark="train_step",
        mode="cpu",
        device_info=common.device_info(),
        config=dict(
            batch=batch,
            image=size,
            dropout=0.5,
            optimizer="Adam",
            rounds=args.rounds,
            steps_per_round=args.steps,
            threads=torch.get_num_threads(),
            **arch,
        ),
        rows=rows,
    )
    path = common.write_results("train_step-cpu", payload, args.out)
    common.plot_bars(path, "CPU training step, 1/40/5, batch 16, 32x32, dropout 0.5 (images/s)", rows, "variant", "images_per_s", "variant")
    return 0


if __name__ == "__main__":
    sys.exit(main())
