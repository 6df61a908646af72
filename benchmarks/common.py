"""Shared benchmark plumbing: device facts, timing, peak bandwidth, JSON results, plots.

On a CUDA device, times are medians of ``triton.testing.do_bench`` (CUDA events, warm-up
excluded) and memory-bound ops are reported against the copy bandwidth measured on the same
device in the same run. Without CUDA the scripts run a *smoke* mode: every variant runs once on
small shapes and is checked against the eager reference; no speed is claimed.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def on_gpu() -> bool:
    return torch.cuda.is_available()


def setup_smoke_mode() -> bool:
    """True without CUDA; then the Triton kernels run in the interpreter (set before importing them)."""
    if on_gpu():
        return False
    os.environ.setdefault("TRITON_INTERPRET", "1")
    return True


def device_info() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if on_gpu():
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, sms=props.multi_processor_count, memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        from cpixelcnn.devices import cpu_name

        info.update(device=f"cpu ({os.cpu_count()} cores)", cpu=cpu_name())
    return info


def time_ms(fn, warmup_ms: int = 50, rep_ms: int = 300) -> float:
    """Median milliseconds of ``fn()`` on the GPU."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def peak_bandwidth_gbs(nbytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), in GB/s."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def time_fwd_bwd(row: dict, forward, backward, traffic_bytes, peak_gbs: float) -> dict:
    """Time ``forward()`` and ``backward()`` (a forward plus its backward); add ms, GB/s and % of
    peak to ``row``. ``traffic_bytes(with_backward)`` is the fewest bytes each must move."""
    for mode, fn, with_backward in (("fwd", forward, False), ("fwd+bwd", backward, True)):
        ms = time_ms(fn)
        gbs = traffic_bytes(with_backward) / (ms * 1e-3) / 1e9
        row.update({f"{mode}_ms": ms, f"{mode}_GBps": gbs, f"{mode}_pct_peak": 100 * gbs / peak_gbs})
    return row


def add_speedups(rows: list[dict], baseline: str) -> None:
    """``speedup_vs_<baseline>_fwd+bwd`` on every row, against the baseline variant of the same shape."""
    for row in rows:
        base = next(r for r in rows if r["shape"] == row["shape"] and r["variant"] == baseline)
        row[f"speedup_vs_{baseline}_fwd+bwd"] = base["fwd+bwd_ms"] / row["fwd+bwd_ms"]


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp(min=1e-300))


def print_row(row: dict) -> None:
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def agrees(row: dict, tol: float) -> bool:
    """False (with a message) when the row's ``rel_error`` against the float64 reference exceeds tol."""
    if row["rel_error"] > tol:
        print(f"FAIL: {row['variant']} disagrees with the float64 reference ({row['rel_error']:.2e} > {tol})", file=sys.stderr)
        return False
    return True


def over_seeds(rows: list[dict], by: tuple[str, ...], best_of: tuple[str, ...] = (), mean_of: tuple[str, ...] = ()) -> list[dict]:
    """A quality figure over seeds: the rows (one per seed) that agree on the ``by`` fields form a
    group; each group gives its ``by`` fields, ``seeds`` (how many rows), ``mean_<k>`` and
    ``worst_<k>`` (the lowest) of every higher-is-better key in ``best_of``, and ``mean_<k>`` of
    every key in ``mean_of``. Groups keep the order in which they first appear in ``rows``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    summary = []
    for key, group in groups.items():
        entry = dict(zip(by, key), seeds=len(group))
        for k in best_of:
            values = [r[k] for r in group]
            entry[f"mean_{k}"], entry[f"worst_{k}"] = sum(values) / len(values), min(values)
        for k in mean_of:
            entry[f"mean_{k}"] = sum(r[k] for r in group) / len(group)
        summary.append(entry)
    return summary


def write_results(name: str, payload: dict, out: str | None = None) -> Path:
    """Write ``results/<name>-<device>.json`` (or ``out``) atomically; returns the path."""
    from cpixelcnn.atomic_io import atomic_write_json

    device = payload.get("device_info", {}).get("device", "unknown")
    slug = "".join(ch if ch.isalnum() else "-" for ch in device).strip("-").lower()
    suffix = "-smoke" if payload.get("mode") == "smoke" else ""  # never overwrite measured results
    path = Path(out) if out else RESULTS / f"{name}-{slug}{suffix}.json"
    atomic_write_json(path, payload)
    print(f"results -> {path}")
    return path


def plot_bars(path: Path, title: str, rows: list[dict], label_key: str, value_key: str, group_key: str) -> Path:
    """A grouped bar chart of ``value_key`` per ``label_key`` (PNG beside the JSON)."""
    from cpixelcnn.plot import bar_chart_png

    png = bar_chart_png(path.with_suffix(".png"), title, rows, label_key, value_key, group_key)
    print(f"plot -> {png}")
    return png
