"""Gated-resnet activation + FiLM + residual: eager vs torch.compile(eager) vs Triton.

python -m benchmarks.bench_gated_film          # GPU: timings, GB/s, % of measured copy bandwidth
python -m benchmarks.bench_gated_film --smoke  # CPU (default without CUDA): correctness only
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import common

GPU_CASES = [
    (64, 160, 32, 32, "float32"),
    (64, 160, 32, 32, "bfloat16"),
    (64, 160, 16, 16, "bfloat16"),
    (64, 160, 8, 8, "bfloat16"),
    (16, 160, 64, 64, "bfloat16"),
]
SMOKE_CASES = [(2, 3, 5, 7, "float32"), (1, 4, 8, 8, "bfloat16")]


def traffic_bytes(b, f, h, w, elem, backward):
    """fwd: x, a, b in, out out (4F planes); bwd: grad, a, b in, d(a, b) out (5F planes)."""
    plane = b * h * w * elem
    return plane * f * (4 + (5 if backward else 0))


def gpu_traffic(elem_bytes: dict[str, int]):
    """(shape, dtype, pixels, {pass: fewest bytes}) of every GPU case: what predict_gpu turns into times."""
    for b, f, h, w, dtype in GPU_CASES:
        passes = {name: traffic_bytes(b, f, h, w, elem_bytes[dtype], backward) for name, backward in (("fwd", False), ("fwd+bwd", True))}
        yield f"B{b} F{f} {h}x{w}", dtype, b * h * w, passes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    smoke = args.smoke or common.setup_smoke_mode()
    import torch

    from cpixelcnn.ops.gated_film import gated_film_eager, gated_film_triton

    device = "cuda" if common.on_gpu() and not args.smoke else "cpu"
    compiled = torch.compile(gated_film_eager, backend="aot_eager" if smoke else "inductor")
    variants = {"eager": gated_film_eager, "compile": compiled, "triton": gated_film_triton}
    peak = None if smoke else common.peak_bandwidth_gbs()
    rows = []
    for b, f, h, w, dtype_name in SMOKE_CASES if smoke else GPU_CASES:
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(b, f, h, w, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
        hh = torch.randn(b, 2 * f, h, w, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
        gamma = (1 + 0.1 * torch.randn(b, 2 * f, generator=gen)).to(device).requires_grad_(True)
        beta = (0.1 * torch.randn(b, 2 * f, generator=gen)).to(device).requires_grad_(True)
        ref = gated_film_eager(x.double(), hh.double(), gamma.double(), beta.double())
        for name, fn in variants.items():
            out = fn(x, hh, gamma, beta)
            torch.autograd.grad(out.float().sum(), (x, hh, gamma, beta))
            row = dict(variant=name, shape=f"{b}x{f}x{h}x{w} {dtype_name}", rel_error=common.relative_error(out, ref))
            if not smoke:
                grad = torch.randn_like(out)
                common.time_fwd_bwd(
                    row,
                    lambda fn=fn: fn(x, hh, gamma, beta),
                    lambda fn=fn: torch.autograd.grad(fn(x, hh, gamma, beta), (x, hh, gamma, beta), grad),
                    lambda with_backward: traffic_bytes(b, f, h, w, x.element_size(), with_backward),
                    peak,
                )
            rows.append(row)
            common.print_row(row)
            if not common.agrees(row, 1e-6 if dtype_name == "float32" else 1e-2):
                return 1
    if not smoke:
        common.add_speedups(rows, "compile")
    payload = dict(benchmark="gated_film", mode="smoke" if smoke else "timed", device_info=common.device_info(), peak_copy_GBps=peak, rows=rows)
    path = common.write_results("gated_film", payload, args.out)
    if not smoke:
        common.plot_bars(path, "gate + FiLM + residual fwd+bwd", rows, "shape", "fwd+bwd_ms", "variant")
    return 0


if __name__ == "__main__":
    sys.exit(main())
