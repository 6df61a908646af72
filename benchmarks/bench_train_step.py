"""Full training step (forward, exact DMoL loss, backward, Adam): images per second.

Variants: eager, torch.compile(eager), Triton kernels, torch.compile + Triton.
    python benchmarks/bench_train_step.py          # GPU: 5/160/10, batch 64, 32x32, bf16 autocast
    python benchmarks/bench_train_step.py --smoke  # CPU: a tiny model, one step each, losses compared
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (GPU)")
    args = parser.parse_args(argv)
    smoke = args.smoke or common.setup_smoke_mode()
    import torch

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob

    device = "cuda" if common.on_gpu() and not args.smoke else "cpu"
    arch = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=3) if smoke else dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10)
    batch, size = (2, 8) if smoke else (64, 32)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (batch, 3, size, size), generator=gen) / 127.5 - 1).to(device)
    y = torch.randint(0, 4, (batch,), generator=gen).to(device)
    rows = []
    for name, backend, use_compile in (("eager", "eager", False), ("compile", "eager", True), ("triton", "triton", False), ("compile+triton", "triton", True)):
        torch.manual_seed(0)
        model = ConditionalPixelCNN(dropout=0.0 if smoke else 0.5, backend=backend, **arch).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        forward = torch.compile(model, backend="aot_eager" if smoke else "inductor") if use_compile else model

        def step():
            with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
                params = forward(x, y)
            loss = -dmol_log_prob(x, params, backend=backend, check=False).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        first_loss = float(step())
        row = dict(variant=name, first_loss=first_loss)
        if not smoke:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - start) / args.steps
            row.update(step_ms=1e3 * seconds, images_per_s=batch / seconds, peak_memory_gb=torch.cuda.max_memory_allocated() / 2**30)
            torch.cuda.reset_peak_memory_stats()
        rows.append(row)
        common.print_row(row)
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
    payload = dict(benchmark="train_step", mode="smoke" if smoke else "timed", device_info=common.device_info(),
                   config=dict(batch=batch, image=size, amp="bf16" if device == "cuda" else None, **arch), rows=rows)  # fmt: skip
    path = common.write_results("train_step", payload, args.out)
    if not smoke:
        common.plot_bars(path, "training step images/s", rows, "variant", "images_per_s", "variant")
    return 0


if __name__ == "__main__":
    sys.exit(main())
