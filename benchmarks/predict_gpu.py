"""PREDICTED H100 times of the GPU code, from bytes, FLOPs and launch counts — not measurements.

    python -m benchmarks.predict_gpu [--out benchmarks/results/gpu-prediction.json] [--markdown]

- DMoL and gated-FiLM kernels: the fewest bytes a fused pass moves (each benchmark's own
  ``traffic_bytes``) at the benchmark shapes, divided by the H100 SXM's 3.35 TB/s HBM3 peak:
  a memory-bound kernel cannot be faster than this; a good one gets to 70–90 % of it.
- Cached CUDA sampler: kernel launches per sampling run (from the schedule, exactly what
  csrc/cached_sampler_launch.h issues), times an assumed per-launch latency, against the
  arithmetic of one forward pass at an assumed sustained FP32 rate. Sampling is launch-bound
  when the first is larger.
- Training epoch (CIFAR-10, the paper's 5/160/10): FLOPs of forward + backward over 50,000 images,
  at the fraction of peak the public PyTorch port sustained on a TITAN X (its published ~50 min
  per epoch), applied to the H100's FP32 and TF32 peaks.
- Training step (5/160/10, batch 64, 32×32 RGB, FiLM, dropout 0.5, bf16 autocast: the shape
  scripts/gpu_check.sh times) for eager, torch.compile, Triton and compile+Triton: one step traced
  on fake tensors (no data, no device) counts the convolution FLOPs, the bytes every kernel reads
  and writes and the kernels launched; predicted = FLOPs at the bf16 tensor-core peak times the
  sustained fraction above + all bytes at the HBM peak + kernels × the stream launch latency.
  Eager and Triton are counted as traced (the fused kernels are cpixelcnn's custom ops); for the
  compiled variants the element-wise work between convolutions is taken as perfectly fused — each
  convolution's input written once and its output read once — a floor inductor approaches.
The resource table (registers, spills, occupancy) is read from benchmarks/results/kernel-resources.json.
Measured numbers are owed: scripts/gpu_check.sh on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SMOKE_ARGS = []  # cheap already: it reads the committed kernel-resources.json
HBM_BYTES_PER_S = 3.35e12  # H100 SXM5 HBM3 peak
ELEM = {"float32": 4, "bfloat16": 2}
LAUNCH_S = {"graph": 1.5e-6, "stream": 4e-6}  # ASSUMED latency per dependent launch: CUDA-graph node / plain stream launch
FP32_FLOPS = 40e12  # ASSUMED sustained FP32 (non-tensor-core) rate for small convs; the H100 SXM peak is 67 TFLOP/s
# Training-epoch prediction, calibrated on a published figure: the pclucas14 PyTorch port's ~50 min per CIFAR-10 epoch on
# a Maxwell TITAN X (6.6 TFLOP/s FP32 peak) implies the fraction of peak such a model sustains; the same fraction is applied
# to the H100 SXM's FP32 peak (67 TFLOP/s) and, for PyTorch's default TF32 cuDNN convolutions, its dense TF32 peak (495 TFLOP/s).
TITANX_FP32_PEAK, H100_FP32_PEAK, H100_TF32_PEAK = 6.6e12, 67e12, 495e12
H100_BF16_PEAK = 989e12  # dense bf16 tensor-core peak (H100 SXM)
PORT_EPOCH_S = 50 * 60  # published (pclucas14/pixel-cnn-pp README), not measured here
CIFAR10_TRAIN = 50_000
RESULTS = Path(__file__).resolve().parent / "results"


def kernel_predictions() -> list[dict]:
    """Every registered op's GPU cases (``benchmarks/bench_<op>.py``'s ``gpu_traffic``) as predicted times at HBM bandwidth."""
    import importlib

    from cpixelcnn.ops import OPS

    rows = []
    for op in OPS:
        bench = importlib.import_module(f"benchmarks.bench_{op}")
        for shape, dtype, pixels, passes in bench.gpu_traffic(ELEM):
            for name, nbytes in passes.items():
                rows.append(
                    {"op": op, "shape": shape, "dtype": dtype, "pass": name, "bytes_per_pixel": round(nbytes / pixels, 1), "bytes": nbytes,
                     "predicted_us": nbytes / HBM_BYTES_PER_S * 1e6}
                )  # fmt: skip
    return rows


def forward_macs(model, height: int, width: int, batch: int) -> int:
    """Multiply-accumulates of one batched forward pass (convs, transposed convs, nin)."""
    from cpixelcnn.sampling.cached_sampler import _lower

    g = _lower(model, height, width)
    macs = 0
    for op in g.ops:
        if "weight" not in op:
            continue
        kh, kw, cin, cout = op["weight"].shape
        _, h_out, w_out = g.nodes[op["out"]]
        per_position = kh * kw * cin * cout if op["type"] == "conv" else (kh * kw * cin * cout) // (op["stride"] ** 2)
        macs += per_position * h_out * w_out
    return macs * batch


def sampler_predictions(models=("1/40/5", "5/160/10"), size=32, batch=16) -> list[dict]:
    from cpixelcnn import ConditionalPixelCNN
    from cpixelcnn.sampling.cached_sampler import kernel_launches

    rows = []
    for name in models:
        n, f, k = (int(v) for v in name.split("/"))
        model = ConditionalPixelCNN(nr_resnet=n, nr_filters=f, nr_logistic_mix=k, num_classes=4, dropout=0.0).eval()
        launches = kernel_launches(model, size, size)
        flops = 2 * forward_macs(model, size, size, batch)
        rows.append(
            dict(
                model=name,
                size=f"{size}x{size}",
                batch=batch,
                launches=launches,
                sampling_launches=size * size,
                launch_floor_graph_s=launches * LAUNCH_S["graph"],
                launch_floor_stream_s=launches * LAUNCH_S["stream"],
                forward_gflop=flops / 1e9,
                compute_floor_s=flops / FP32_FLOPS,
            )
        )
    return rows


def epoch_predictions(size: int = 32) -> list[dict]:
    """PREDICTED seconds per CIFAR-10 epoch of the paper's 5/160/10 model (training: forward +
    backward = 3 forwards of FLOPs, 4 with --checkpoint-activations)."""
    from cpixelcnn import ConditionalPixelCNN

    model = ConditionalPixelCNN(nr_resnet=5, nr_filters=160, nr_logistic_mix=10, num_classes=10, dropout=0.0).eval()
    forward_flop = 2 * forward_macs(model, size, size, 1)
    sustained = 3 * forward_flop * CIFAR10_TRAIN / PORT_EPOCH_S / TITANX_FP32_PEAK  # the fraction of peak the port reached
    rows = []
    for recompute in (False, True):
        epoch_flop = (4 if recompute else 3) * forward_flop * CIFAR10_TRAIN
        rows.append(
            dict(
                model="5/160/10",
                size=f"{size}x{size}",
                checkpoint_activations=recompute,
                forward_gflop_per_image=forward_flop / 1e9,
                epoch_pflop=epoch_flop / 1e15,
                fraction_of_peak=sustained,
                h100_fp32_epoch_s=epoch_flop / (sustained * H100_FP32_PEAK),
                h100_tf32_epoch_s=epoch_flop / (sustained * H100_TF32_PEAK),
            )
        )
    return rows


MATMUL_OPS = {"convolution", "convolution_backward", "mm", "addmm", "bmm", "baddbmm"}
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "lift_fresh", "_local_scalar_dense"}


def step_traffic(backend: str, arch=(5, 160, 10), batch: int = 64, size: int = 32) -> dict:
    """One training step (bf16-autocast forward, exact DMoL loss, backward; torch's dropout, as on
    a GPU) traced on fake tensors: per kind of kernel ("matmul": convolutions and matrix products,
    "fused": cpixelcnn's custom ops, "other") the kernels launched and the bytes they move, and
    the convolution FLOPs. Views and allocations launch nothing and move nothing."""
    from unittest import mock

    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten
    from torch.utils.flop_counter import FlopCounterMode

    from cpixelcnn import ConditionalPixelCNN, dmol_log_prob
    from cpixelcnn.ops.dropout import Dropout

    def nbytes(tree) -> int:
        return sum(t.numel() * t.element_size() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor))

    class Kernels(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.kinds = {kind: dict(kernels=0, bytes=0) for kind in ("matmul", "fused", "other")}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func._schema.name.split("::")[-1]
            if func.namespace in ("aten", "cpixelcnn") and not func.is_view and name not in NO_KERNEL:
                kind = self.kinds["matmul" if name in MATMUL_OPS else "fused" if func.namespace == "cpixelcnn" else "other"]
                kind["kernels"] += 1
                kind["bytes"] += nbytes((args, kwargs)) + nbytes(out)
            return out

    n, f, k = arch
    # No data: the model's label-range check (a host read) is skipped as under torch.compile, and
    # backend="triton" takes the custom ops on these CPU fake tensors (their fake versions run, no kernel).
    with (
        FakeTensorMode(),
        mock.patch("torch.compiler.is_compiling", lambda: True),
        mock.patch("cpixelcnn.ops.backend.triton_unavailable_reason", lambda device=None: None),
    ):
        model = ConditionalPixelCNN(nr_resnet=n, nr_filters=f, nr_logistic_mix=k, num_classes=4, dropout=0.5, backend=backend).train()
        for module in model.modules():
            if isinstance(module, Dropout):
                module.backend = "eager"
        x, y = torch.zeros(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
        kernels, flops = Kernels(), FlopCounterMode(display=False)
        with flops, kernels:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                params = model(x, y)
            (-dmol_log_prob(x, params, backend=backend, check=False).mean()).backward()
    return dict(flop=flops.get_total_flops(), **{f"{kind}_{key}": v for kind, row in kernels.kinds.items() for key, v in row.items()})


def train_step_predictions(batch: int = 64, size: int = 32) -> list[dict]:
    """PREDICTED H100 step times of eager / torch.compile / Triton / compile+Triton (see the module docstring)."""
    sustained = epoch_predictions(size)[0]["fraction_of_peak"]
    traced = {backend: step_traffic(backend, batch=batch, size=size) for backend in ("eager", "triton")}
    rows = []
    for variant, backend, compiled in (
        ("eager", "eager", False),
        ("torch.compile", "eager", True),
        ("triton", "triton", False),
        ("torch.compile + triton", "triton", True),
    ):
        t = traced[backend]
        if compiled:  # perfect fusion: a fused kernel writes each convolution's input and reads its output
            other_bytes, other_kernels = t["matmul_bytes"], 2 * t["matmul_kernels"]
        else:
            other_bytes, other_kernels = t["other_bytes"], t["other_kernels"]
        nbytes = t["matmul_bytes"] + t["fused_bytes"] + other_bytes
        kernels = t["matmul_kernels"] + t["fused_kernels"] + other_kernels
        compute_s, memory_s, launch_s = t["flop"] / (sustained * H100_BF16_PEAK), nbytes / HBM_BYTES_PER_S, kernels * LAUNCH_S["stream"]
        rows.append(
            dict(
                variant=variant,
                model="5/160/10",
                batch=batch,
                size=f"{size}x{size}",
                step_tflop=t["flop"] / 1e12,
                gbytes=nbytes / 1e9,
                kernels=kernels,
                compute_s=compute_s,
                memory_s=memory_s,
                launch_s=launch_s,
                predicted_step_s=compute_s + memory_s + launch_s,
            )
        )
    for row in rows:
        row["predicted_speedup_vs_eager"] = rows[0]["predicted_step_s"] / row["predicted_step_s"]
    return rows


def resource_table(report: Path) -> list[dict]:
    """Worst case over each kernel's specializations, per (kernel, dtype, target)."""
    entries = json.loads(report.read_text())["kernels"]
    table: dict[tuple, dict] = {}
    for e in entries:
        key = (e["source"], e["kernel"], e["dtype"])
        row = table.setdefault(key, dict(source=e["source"], kernel=e["kernel"], dtype=e["dtype"], specializations=0))
        t = e["target"]
        row["specializations"] += 1
        row[f"{t}_registers"] = max(row.get(f"{t}_registers", 0), e["registers"])
        row[f"{t}_spill_bytes"] = max(row.get(f"{t}_spill_bytes", 0), e["spill_bytes"])
        row[f"{t}_occupancy"] = min(row.get(f"{t}_occupancy", 1.0), e["occupancy"])
    return list(table.values())


def markdown(resources, kernels, sampler, epochs, steps=()) -> str:
    out = [
        "| kernel | dtype | specializations | sm_80 registers | sm_80 spills | sm_80 occupancy | sm_90 registers | sm_90 spills | sm_90 occupancy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in resources:
        out.append(
            f"| {r['kernel']} | {r['dtype']} | {r['specializations'] // 2} | {r['sm_80_registers']} | {r['sm_80_spill_bytes']} | "
            f"{r['sm_80_occupancy']:.0%} | {r['sm_90_registers']} | {r['sm_90_spill_bytes']} | {r['sm_90_occupancy']:.0%} |"
        )
    out += ["", "| op | shape | dtype | pass | bytes / pixel | **predicted** H100 µs at 3.35 TB/s |", "|---|---|---|---|---|---|"]
    for r in kernels:
        out.append(f"| {r['op']} | {r['shape']} | {r['dtype']} | {r['pass']} | {r['bytes_per_pixel']:g} | {r['predicted_us']:.1f} |")
    out += [
        "",
        "| model | image | batch | kernel launches | of which sampling | **predicted** launch floor (graph, 1.5 µs) | (stream, 4 µs) | forward GFLOP | **predicted** compute floor (40 TFLOP/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sampler:
        out.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['launches']:,} | {r['sampling_launches']:,} | {r['launch_floor_graph_s'] * 1e3:.0f} ms | "
            f"{r['launch_floor_stream_s'] * 1e3:.0f} ms | {r['forward_gflop']:.1f} | {r['compute_floor_s'] * 1e3:.1f} ms |"
        )
    out += [
        "",
        "| model | --checkpoint-activations | forward GFLOP / image | epoch PFLOP | sustained fraction of peak (from the port's TITAN X epoch) | "
        "**predicted** H100 epoch, FP32 | **predicted** H100 epoch, TF32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in epochs:
        out.append(
            f"| {r['model']} | {'on' if r['checkpoint_activations'] else 'off'} | {r['forward_gflop_per_image']:.1f} | {r['epoch_pflop']:.2f} | "
            f"{r['fraction_of_peak']:.0%} | {r['h100_fp32_epoch_s'] / 60:.1f} min | {r['h100_tf32_epoch_s'] / 60:.1f} min |"
        )
    if steps:
        out += [
            "",
            "| training step, 5/160/10, batch 64, bf16 | TFLOP | GB moved | kernels | compute | memory | launches (4 µs) | **predicted** H100 step | vs eager |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in steps:
            out.append(
                f"| {r['variant']} | {r['step_tflop']:.2f} | {r['gbytes']:.1f} | {r['kernels']:,} | {r['compute_s'] * 1e3:.1f} ms | {r['memory_s'] * 1e3:.1f} ms | "
                f"{r['launch_s'] * 1e3:.1f} ms | **{r['predicted_step_s'] * 1e3:.0f} ms** | {r['predicted_speedup_vs_eager']:.2f}× |"
            )
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", default=str(RESULTS / "kernel-resources.json"))
    parser.add_argument("--out", default=str(RESULTS / "gpu-prediction.json"))
    parser.add_argument("--markdown", action="store_true", help="print the tables of docs/gpu.md")
    args = parser.parse_args(argv)
    resources, kernels, sampler, epochs = resource_table(Path(args.report)), kernel_predictions(), sampler_predictions(), epoch_predictions()
    steps = train_step_predictions()
    assumptions = {
        "hbm_bytes_per_s": HBM_BYTES_PER_S,
        "launch_s": LAUNCH_S,
        "fp32_flops": FP32_FLOPS,
        "port_titanx_epoch_s": PORT_EPOCH_S,
        "titanx_fp32_peak": TITANX_FP32_PEAK,
        "h100_fp32_peak": H100_FP32_PEAK,
        "h100_tf32_peak": H100_TF32_PEAK,
        "h100_bf16_peak": H100_BF16_PEAK,
    }
    result = {
        "kind": "PREDICTION (no GPU measured)",
        "assumptions": assumptions,
        "resources": resources,
        "kernels": kernels,
        "sampler": sampler,
        "training_epoch": epochs,
        "training_step": steps,
    }
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(markdown(resources, kernels, sampler, epochs, steps) if args.markdown else json.dumps(result["sampler"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
