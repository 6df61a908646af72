"""DMoL log-likelihood: eager vs torch.compile(eager) vs Triton, forward and forward+backward.

python -m benchmarks.bench_dmol            # GPU: timings, GB/s, % of measured copy bandwidth
python -m benchmarks.bench_dmol --smoke    # CPU (default without CUDA): correctness only
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import common

GPU_CASES = [  # (B, C, H, W, K, params dtype)
    (64, 3, 32, 32, 10, "float32"),
    (64, 3, 32, 32, 10, "bfloat16"),
    (256, 3, 32, 32, 10, "float32"),
    (64, 3, 64, 64, 10, "bfloat16"),
    (64, 1, 32, 32, 10, "float32"),
]
SMOKE_CASES = [(2, 3, 5, 7, 3, "float32"), (1, 1, 4, 4, 2, "bfloat16")]


def traffic_bytes(b, c, h, w, k, elem, backward):
    """Fewest bytes a fused pass must move: params and x in, three per-pixel floats out (+ backward:
    params, x, grad and the two saved log-sum-exps in, d(params) out)."""
    n_params = (10 if c == 3 else 3) * k
    pixels = b * h * w
    fwd = pixels * (n_params * elem + c * 4 + 3 * 4)
    bwd = pixels * (2 * n_params * elem + c * 4 + 3 * 4)
    return fwd + (bwd if backward else 0)


def gpu_traffic(elem_bytes: dict[str, int]):
    """(shape, dtype, pixels, {pass: fewest bytes}) of every GPU case: what predict_gpu turns into times."""
    for b, c, h, w, k, dtype in GPU_CASES:
        passes = {name: traffic_bytes(b, c, h, w, k, elem_bytes[dtype], backward) for name, backward in (("fwd", False), ("fwd+bwd", True))}
        yield f"B{b} C{c} {h}x{w} K{k}", dtype, b * h * w, passes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="correctness only (the default without CUDA)")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/dmol-<device>.json)")
    args = parser.parse_args(argv)
    smoke = args.smoke or common.setup_smoke_mode()
    import torch

    from cpixelcnn.ops.dmol import dmol_log_prob_eager, dmol_log_prob_triton

    device = "cuda" if common.on_gpu() and not args.smoke else "cpu"
    compiled = torch.compile(dmol_log_prob_eager, backend="aot_eager" if smoke else "inductor")
    variants = {
        "eager": lambda x, p: dmol_log_prob_eager(x, p, check=False),
        "compile": lambda x, p: compiled(x, p, check=False),
        "triton": lambda x, p: dmol_log_prob_triton(x, p, check=False),
    }
    peak = None if smoke else common.peak_bandwidth_gbs()
    rows = []
    for b, c, h, w, k, dtype_name in SMOKE_CASES if smoke else GPU_CASES:
        dtype = getattr(torch, dtype_name)
        gen = torch.Generator().manual_seed(0)
        x = (torch.randint(0, 256, (b, c, h, w), generator=gen) / 127.5 - 1).to(device)
        params = torch.randn(b, (10 if c == 3 else 3) * k, h, w, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
        ref = dmol_log_prob_eager(x.double(), params.double())
        for name, fn in variants.items():
            out = fn(x, params)
            (grad,) = torch.autograd.grad(out.sum(), params)
            row = dict(variant=name, shape=f"{b}x{c}x{h}x{w} K={k} {dtype_name}", rel_error=common.relative_error(out, ref))
            if not smoke:
                common.time_fwd_bwd(
                    row,
                    lambda fn=fn: fn(x, params),
                    lambda fn=fn: torch.autograd.grad(fn(x, params).sum(), params),
                    lambda with_backward: traffic_bytes(b, c, h, w, k, params.element_size(), with_backward),
                    peak,
                )
            rows.append(row)
            common.print_row(row)
            if not common.agrees(row, 1e-5 if dtype_name == "float32" else 1e-4):
                return 1
    if not smoke:
        common.add_speedups(rows, "eager")
    payload = dict(benchmark="dmol", mode="smoke" if smoke else "timed", device_info=common.device_info(), peak_copy_GBps=peak, rows=rows)
    path = common.write_results("dmol", payload, args.out)
    if not smoke:
        common.plot_bars(path, "DMoL log-likelihood fwd+bwd", rows, "shape", "fwd+bwd_ms", "variant")
    return 0


if __name__ == "__main__":
    sys.exit(main())
