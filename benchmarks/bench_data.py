"""Data at scale: how long ``cpixelcnn train`` takes to reach its first step, how fast it decodes, how
much memory one process and two torchrun ranks hold, and how long a step waits for its batch —
with today's loader (the data cache, the fast PNG path, the prefetch thread) and the loader before
it (``--baseline REV``, default a6829d2, run from a copy of that commit) side by side in one run.

    python -m benchmarks.bench_data [--scratch DIR] [--folders 50000,250000] [--folders64 50000]
                                    [--imagenet 1281167] [--baseline a6829d2] [--smoke] [--out FILE]

Synthetic data (written once into ``--scratch``, reused by later runs): class-folder trees of
32×32 PNGs (and 64×64), smooth random images that compress like photographs; a downsampled-
ImageNet npz layout of ``--imagenet`` 32×32 images with the published batch sizes. Every figure
comes from a fresh ``python -m cpixelcnn train`` process (1/40/5, batch 16, CPU, validation off):

- ``cold_s``: launch to the first step with an empty cache (decoding and caching included);
  ``warm_s`` with the cache built (the baseline has no cache: every start is cold);
- ``decode_per_core``: images decoded per second per process that decoded (cold start only);
- ``peak_rss_mb``: the process's peak resident memory (VmHWM), and ``beyond_model_mb`` that less
  the same run's on 16 built-in images (torch, the model, the optimizer);
- ``pss_mb`` of two torchrun ranks that each read every image once (as an epoch does), together,
  against one rank's (``/proc/PID/smaps_rollup``), and the part of it that is image data;
- ``data_ms_per_step`` and ``data_share``: what the trainer logs (time the step waited for its batch).

The baseline cannot read the npz layout: its time at that scale is extrapolated from its rate on
the largest folder, and labelled so. ``--smoke``: tiny sets, one step, no torchrun (CI).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import device_info, write_results

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_BATCHES = [128_116] * 9 + [128_123]  # the published training batch sizes (1,281,167 images)
MODEL = ["--nr-resnet", "1", "--nr-filters", "40", "--nr-mix", "5", "--batch-size", "16", "--device", "cpu", "--val-data", "none", "--log-every", "1"]

HOOK = """
import atexit, os, sys, time
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024
def _report(line):  # one write per line: two torchrun ranks share the stream, print's separate newline let them interleave
    os.write(2, f"BENCH {line}\\n".encode())
atexit.register(lambda: _report(f"peak_rss_mb {_status('VmHWM')}"))
import cpixelcnn.training.trainer as _t
_real, _first = _t.Trainer.step, [True]
def _step(self, *args, **kwargs):
    if _first[0]:
        _first[0] = False
        _report(f"first_step {time.time()}")
        if os.environ.get("BENCH_PSS") == "1":
            _touch_and_measure(self)
    return _real(self, *args, **kwargs)
_t.Trainer.step = _step
def _touch_and_measure(self):
    import torch
    stored = getattr(self.data, "stored", None)
    stored = self.data.images if stored is None else stored
    total = 0
    for start in range(0, stored.shape[0], 4096):  # every image read once, as an epoch reads them
        total += int(stored[start : start + 4096].reshape(-1)[::4096].sum())
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    pss = data = 0
    with open("/proc/self/smaps") as f:
        mapping = ""
        for line in f:
            if not line[0].isupper() or ":" not in line.split()[0]:
                mapping = line.split()[-1] if len(line.split()) >= 6 else ""
            elif line.startswith("Pss:"):
                kb = int(line.split()[1])
                pss += kb
                data += kb if "cpixelcnn-" in mapping else 0
    _report(f"pss_mb {pss / 1024} {data / 1024}")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
"""


# -- synthetic data ---------------------------------------------------------------------------------


def _smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """n images (n, size, size, 3): a few random low-frequency waves per channel plus a little noise."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        f = rng.uniform(0.5, 4.0, (3, 3, 2)).astype(np.float32)
        phase = rng.uniform(0, 6.3, (3, 3)).astype(np.float32)
        field = sum(np.sin(2 * np.pi * (f[:, k, 0, None, None] * yy + f[:, k, 1, None, None] * xx) + phase[:, k, None, None]) for k in range(3))
        img = 128 + 40 * field + rng.normal(0, 6, (3, size, size))
        out[i] = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return out


def _write_pngs(task) -> None:
    from PIL import Image

    root, size, start, stop = task
    images = _smooth_images(stop - start, size, seed=start)
    for i, image in zip(range(start, stop), images):
        Image.fromarray(image).save(Path(root) / f"class{i % 10}" / f"{i:07d}.png")


def make_folder(root: Path, n: int, size: int) -> Path:
    """A class-folder tree of n size×size PNGs in 10 classes (kept once written: a stamp file says it is whole)."""
    stamp = root / ".complete"
    if stamp.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
    import multiprocessing

    tasks = [(str(root), size, s, min(s + 2000, n)) for s in range(0, n, 2000)]
    with multiprocessing.get_context("fork").Pool() as pool:
        pool.map(_write_pngs, tasks)
    stamp.write_text("ok")
    return root


def make_imagenet(root: Path, total: int, side: int = 32) -> Path:
    """The downsampled-ImageNet npz layout with ``total`` training images split as the release splits
    its 1,281,167 (scaled down proportionally for smaller totals) and a validation file."""
    stamp = root / ".complete"
    if stamp.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    counts = [round(c * total / sum(IMAGENET_BATCHES)) for c in IMAGENET_BATCHES]
    rng = np.random.default_rng(0)
    template = _smooth_images(4096, side, seed=1).transpose(0, 3, 1, 2).reshape(4096, -1)  # rows in the release's layout: all red, green, blue
    for i, n in enumerate(counts, 1):
        data = template[rng.integers(0, 4096, n)]
        np.savez(root / f"train_data_batch_{i}.npz", data=data, labels=rng.integers(1, 1001, n), mean=data.mean(0))
    n_val = max(100, total // 25)
    np.savez(root / "val_data.npz", data=template[rng.integers(0, 4096, n_val)], labels=rng.integers(1, 1001, n_val))
    stamp.write_text("ok")
    return root


# -- one measured process ---------------------------------------------------------------------------


def baseline_tree(rev: str, scratch: Path) -> Path:
    """The package as it was at ``rev`` (a copy of its cpixelcnn/ and kernels/), importable from the returned folder."""
    tree = scratch / f"baseline-{rev}"
    if not (tree / "cpixelcnn").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "cpixelcnn", "kernels"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run_train(
    data: str,
    *,
    scratch: Path,
    cache: Path | None,
    steps: int,
    baseline: Path | None = None,
    torchrun: bool = False,
    pss: bool = False,
    image_size: int = 32,
) -> dict:
    """One ``cpixelcnn train`` process (or two torchrun ranks): its BENCH lines and metrics."""
    hook = scratch / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    out = Path(tempfile.mkdtemp(dir=scratch, prefix="run-"))
    paths = [str(hook)] + ([str(baseline)] if baseline else []) + [str(ROOT)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS=str(1 if torchrun else os.cpu_count()), BENCH_PSS="1" if pss else "0")
    args = ["train", "--data", data, "--out", str(out / "run"), "--max-steps", str(steps), "--image-size", str(image_size), *MODEL]
    if baseline is None:
        args += ["--data-cache", str(cache)] if cache else ["--no-cache"]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "cpixelcnn"]
        if torchrun
        else [sys.executable, "-m", "cpixelcnn"]
    )
    start = time.time()
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({proc.returncode}): {proc.stderr[-3000:]}")
    lines = [
        m.split() for m in re.findall(r"BENCH ([a-z_]+(?: [\d.e+-]+)+)", proc.stderr)
    ]  # wherever a line starts (a rank's warning may precede it)
    lines = [["BENCH", *parts] for parts in lines]
    firsts = [float(parts[2]) for parts in lines if parts[1] == "first_step"]
    result = dict(to_first_step_s=min(firsts) - start, peak_rss_mb=max(float(p[2]) for p in lines if p[1] == "peak_rss_mb"))
    if pss:
        ranks = [(float(p[2]), float(p[3])) for p in lines if p[1] == "pss_mb"]
        result.update(pss_mb=sum(r[0] for r in ranks), data_pss_mb=sum(r[1] for r in ranks), ranks=len(ranks))
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in records if "images_per_s" in r][1:]  # the first step carries one-time costs
    if steps_logged and "data_ms_per_step" in steps_logged[0]:
        result["data_ms_per_step"] = float(np.median([r["data_ms_per_step"] for r in steps_logged]))
        result["step_ms"] = float(np.median([1e3 * 16 / r["images_per_s"] for r in steps_logged]))
        result["data_share"] = result["data_ms_per_step"] / result["step_ms"]
    decoded = [line for line in proc.stderr.splitlines() if line.startswith("cpixelcnn: decoded ")]
    if decoded:
        count, rate = re.search(r"decoded ([\d,]+) images in [\d.]+ s \(([\d,]+) images/s\)", decoded[-1]).groups()
        result["decode_s"] = int(count.replace(",", "")) / int(rate.replace(",", ""))  # the rate's digits: the seconds are rounded to 0.1
    shutil.rmtree(out, ignore_errors=True)
    return result


def _read_once(data: str) -> None:
    """Read every file of a data set once, so that the page cache holds it for every loader alike."""
    root = Path(data.split(":", 1)[1] if data.startswith("imagenet") else data)
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


def measure_set(
    name: str, data: str, n: int, *, scratch: Path, baseline: Path | None, steps: int, image_size: int, workers: int, torchrun: bool
) -> list[dict]:
    """Cold and warm starts with today's loader, and the baseline's (cold every time), on one data set."""
    rows = []
    cache = scratch / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    _read_once(data)  # every loader decodes from the page cache, none from the disk
    cold = run_train(data, scratch=scratch, cache=cache, steps=steps, image_size=image_size)
    warm = run_train(data, scratch=scratch, cache=cache, steps=steps, image_size=image_size)
    row = dict(
        set=name,
        images=n,
        loader="cached",
        cold_s=cold["to_first_step_s"],
        warm_s=warm["to_first_step_s"],
        peak_rss_mb=warm["peak_rss_mb"],
        cold_peak_rss_mb=cold["peak_rss_mb"],
        data_ms_per_step=warm.get("data_ms_per_step"),
        step_ms=warm.get("step_ms"),
        data_share=warm.get("data_share"),
    )
    if "decode_s" in cold:
        row["decode_per_core"] = n / cold["decode_s"] / workers
    rows.append(row)
    if baseline is not None and not data.startswith("imagenet"):
        _read_once(data)
        base = run_train(data, scratch=scratch, cache=None, steps=steps, baseline=baseline, image_size=image_size)
        rows.append(
            dict(
                set=name,
                images=n,
                loader="baseline",
                cold_s=base["to_first_step_s"],
                warm_s=base["to_first_step_s"],
                peak_rss_mb=base["peak_rss_mb"],
                cold_peak_rss_mb=base["peak_rss_mb"],
            )
        )
    if torchrun:
        one = run_train(data, scratch=scratch, cache=cache, steps=2, pss=True, image_size=image_size)
        two = run_train(data, scratch=scratch, cache=cache, steps=2, pss=True, torchrun=True, image_size=image_size)
        row.update(
            pss_one_rank_mb=one["pss_mb"],
            pss_two_ranks_mb=two["pss_mb"],
            data_pss_one_rank_mb=one["data_pss_mb"],
            data_pss_two_ranks_mb=two["data_pss_mb"],
        )
        if baseline is not None and not data.startswith("imagenet"):
            b_one = run_train(data, scratch=scratch, cache=None, steps=2, pss=True, baseline=baseline, image_size=image_size)
            b_two = run_train(data, scratch=scratch, cache=None, steps=2, pss=True, torchrun=True, baseline=baseline, image_size=image_size)
            rows[-1].update(pss_one_rank_mb=b_one["pss_mb"], pss_two_ranks_mb=b_two["pss_mb"])
    for r in rows[-2:] if baseline is not None else rows[-1:]:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scratch", default=str(Path(tempfile.gettempdir()) / "cpixelcnn-bench-data"), help="where the synthetic data and caches live"
    )
    parser.add_argument("--folders", default="50000,250000", help="sizes of the 32x32 PNG folder trees")
    parser.add_argument("--folders64", default="50000", help="sizes of the 64x64 PNG folder trees")
    parser.add_argument("--imagenet", type=int, default=sum(IMAGENET_BATCHES), help="training images of the 32x32 npz layout (0: none)")
    parser.add_argument("--baseline", default="a6829d2", help="the commit whose loader is the baseline ('none': no baseline)")
    parser.add_argument("--steps", type=int, default=12, help="training steps per process")
    parser.add_argument("--smoke", action="store_true", help="tiny sets, no torchrun: checks the script runs (CI)")
    parser.add_argument("--out")
    parser.add_argument(
        "--warm-ab", metavar="COMMIT", help="only: warm starts at --imagenet images, COMMIT's cache against today's, interleaved (--rounds)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="--warm-ab: rounds of one warm start each")
    args = parser.parse_args(argv)
    if args.warm_ab:
        return warm_ab(args)
    scratch = Path(args.scratch)
    if args.smoke:
        scratch = Path(tempfile.mkdtemp(prefix="bench-data-smoke-"))
        args.folders, args.folders64, args.imagenet, args.steps = "2400", "", 2400, 3
    scratch.mkdir(parents=True, exist_ok=True)
    from cpixelcnn.data.cache import workers

    baseline = _baseline(args.baseline, scratch)
    reference = run_train("demo", scratch=scratch, cache=scratch / "cache", steps=args.steps)  # torch, the model, 1,200 built-in images
    rows = _measure_all(args, scratch, baseline, workers())
    for row in rows:
        row["beyond_model_mb"] = row["peak_rss_mb"] - reference["peak_rss_mb"]
        if row["loader"] == "baseline":  # its decoding: the time to the first step less that of the built-in set
            row["decode_per_core"] = row["images"] / max(row["cold_s"] - reference["to_first_step_s"], 1e-9)
    summary = _summary(rows, args.imagenet)
    print(json.dumps(summary, indent=1))
    payload = dict(
        mode="smoke" if args.smoke else "measured",
        device_info=device_info(),
        workers=workers(),
        baseline=args.baseline,
        model="1/40/5 batch 16",
        reference=reference,
        rows=rows,
        summary=summary,
    )
    write_results("data", payload, args.out)
    if args.smoke:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def warm_ab(args) -> int:
    """Warm start (a fresh train process to its first step, the entry built already) at --imagenet
    npz images: COMMIT's data cache against today's (whose every open checks checksums), in
    interleaved rounds on one machine; the ratio of the medians is the figure."""
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    root = make_imagenet(scratch / f"imagenet32-{args.imagenet}", args.imagenet)
    data, old = f"imagenet32:{root}", baseline_tree(args.warm_ab, scratch)
    caches = {"before": scratch / "cache-before", "after": scratch / "cache-after"}
    for cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)
    _read_once(data)

    def one(which: str) -> float:
        os.environ["CPIXELCNN_DATA_CACHE"] = str(caches[which])  # the baseline reads the environment
        before = which == "before"
        return run_train(data, scratch=scratch, cache=None if before else caches[which], steps=3, baseline=old if before else None)["to_first_step_s"]

    cold = {which: one(which) for which in caches}
    rounds: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(args.rounds):
        for which in ("before", "after") if i % 2 == 0 else ("after", "before"):
            rounds[which].append(one(which))
    summary = {w: dict(cold_s=cold[w], warm_median_s=float(np.median(v)), warm_min_s=min(v), warm_max_s=max(v), rounds=v) for w, v in rounds.items()}
    summary["warm_median_after_over_before"] = summary["after"]["warm_median_s"] / summary["before"]["warm_median_s"]
    print(json.dumps(summary, indent=1))
    payload = dict(mode="measured", device_info=device_info(), baseline=args.warm_ab, images=args.imagenet, summary=summary)
    write_results("data-open-check", payload, args.out)
    return 0


def _baseline(rev: str, scratch: Path) -> Path | None:
    if rev == "none":
        return None
    try:
        return baseline_tree(rev, scratch)
    except subprocess.CalledProcessError:  # a copy without the git history (an sdist, a shallow clone)
        print(f"no baseline: commit {rev} is not in this checkout's history", flush=True)
        return None


def _measure_all(args, scratch: Path, baseline: Path | None, n_workers: int) -> list[dict]:
    """Every folder tree (written first when missing), then the npz layout; torchrun on the largest 32x32 folder and the npz layout."""
    largest = max((int(v) for v in filter(None, args.folders.split(","))), default=0)
    sets = [(f"folders-{n // 1000}k-32px", n, 32) for n in map(int, filter(None, args.folders.split(",")))]
    sets += [(f"folders-{n // 1000}k-64px", n, 64) for n in map(int, filter(None, args.folders64.split(",")))]
    rows = []
    for name, n, size in sets:
        started = time.time()
        root = make_folder(scratch / name, n, size)
        print(f"{name}: data ready in {time.time() - started:.0f} s", flush=True)
        torchrun = not args.smoke and n == largest and size == 32
        rows += measure_set(
            name, str(root), n, scratch=scratch, baseline=baseline, steps=args.steps, image_size=size, workers=n_workers, torchrun=torchrun
        )
    if args.imagenet:
        started = time.time()
        root = make_imagenet(scratch / f"imagenet32-{args.imagenet}", args.imagenet)
        print(f"imagenet32 npz: data ready in {time.time() - started:.0f} s", flush=True)
        rows += measure_set(
            f"imagenet32-npz-{args.imagenet / 1e6:.2f}M",
            f"imagenet32:{root}",
            args.imagenet,
            scratch=scratch,
            baseline=baseline,
            steps=args.steps,
            image_size=32,
            workers=n_workers,
            torchrun=not args.smoke,
        )
    return rows


def _summary(rows: list[dict], imagenet: int) -> dict:
    """The targets: warm start at the largest set, cold decoding against the baseline's rate, memory, data time."""
    cached = [r for r in rows if r["loader"] == "cached"]
    base = [r for r in rows if r["loader"] == "baseline"]
    summary = {}
    largest_base = max(base, key=lambda r: r["images"], default=None)
    if largest_base is not None:
        rate = largest_base["decode_per_core"]  # the baseline decodes on one core
        summary["baseline_decode_per_core"] = rate
        same = next(r for r in cached if r["set"] == largest_base["set"])
        if "decode_per_core" in same:
            summary["cold_decode_per_core_vs_baseline"] = same["decode_per_core"] / rate
            summary["cold_start_vs_baseline"] = largest_base["cold_s"] / same["cold_s"]
        if imagenet:  # at the baseline's rate to its first step on the largest folder
            summary["baseline_extrapolated_start_s_at_imagenet"] = imagenet * largest_base["cold_s"] / largest_base["images"]
    npz = next((r for r in cached if r["set"].startswith("imagenet")), None)
    if npz is not None:
        summary.update(
            imagenet_images=npz["images"], warm_start_s=npz["warm_s"], cold_start_s=npz["cold_s"], warm_beyond_model_mb=npz["beyond_model_mb"]
        )
        if "pss_two_ranks_mb" in npz:
            summary["data_pss_two_ranks_over_one"] = npz["data_pss_two_ranks_mb"] / max(npz["data_pss_one_rank_mb"], 1e-9)
    shares = [r["data_share"] for r in cached if r.get("data_share") is not None]
    if shares:
        summary["worst_data_share"] = max(shares)
    return summary


if __name__ == "__main__":
    sys.exit(main())
