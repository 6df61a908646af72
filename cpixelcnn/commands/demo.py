"""The README's first command: train a small model on data that is already on the machine,
sample per class, classify held-out images.

Default: scikit-learn's handwritten digits (real images, 10 classes, 8×8 grey; nothing is
downloaded) with a 1/32/5 conditional model — a minute of CPU time gives a Bayes classifier near
99 % on held-out digits and samples that read as their digit. ``--data demo`` runs the built-in
procedural shapes instead (16×16 colour); docs/classification.md ("Classification quality in short runs") says why a
short run does not classify those well. It runs the same code as ``cpixelcnn train / sample / classify``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from cpixelcnn.atomic_io import atomic_write_json
from cpixelcnn.classifier import classification_report, classify
from cpixelcnn.data import load_dataset, to_uint8
from cpixelcnn.metrics import dataset_bpd
from cpixelcnn.rundir import RunLock, claim, is_run, load_run
from cpixelcnn.sampling import fastest_method, write_sample_grid
from cpixelcnn.settings import Bounded
from cpixelcnn.training import TrainConfig, train

NAME, HELP = "demo", "train a small model on data already on the machine, sample per class, classify"

# data set → (image size, channels, what it is)
DEMO_DATA = {
    "digits": (8, 1, "scikit-learn's handwritten digits (8x8 grey)"),
    "micrographs": (16, 3, "patches of scikit-image's colour micrographs (16x16)"),
    "textures": (16, 1, "patches of scikit-image's grey texture photographs (16x16)"),
    "demo": (16, 3, "the built-in procedural shapes (16x16 colour)"),
}
DEMO_RECIPE = dict(nr_resnet=1, nr_filters=32, nr_logistic_mix=5, batch_size=32, lr=2e-3)  # dropout 0.5 and the rest: the CLI's defaults
DEMO_STEPS = 300  # with DEMO_RECIPE on the digits: the classification guard's run (benchmarks/quality_digits.py, tests/test_quality.py)
UNTRAINED_BPD = 8.0  # a model that knows nothing spreads mass over all 256 levels: 8 bits per dimension


def run_demo(
    out_dir: str | Path = "cpixelcnn-demo",
    steps: int = DEMO_STEPS,
    seconds: float | None = None,
    samples_per_class: int = 8,
    seed: int = 0,
    data: str = "digits",
    log=print,
    max_steps: int | None = None,
) -> dict:
    """Train for ``steps`` (a number of steps, not a time: the report is the same on a busy machine
    as on an idle one; ``seconds`` stops it earlier; ``max_steps`` is the older name of ``steps``),
    then sample and classify the held-out split. Writes the run to ``out_dir/run`` and
    ``out_dir/samples.png``, ``out_dir/report.json``."""
    steps = max_steps if max_steps is not None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive number of training steps, got {steps!r}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"seconds must be a positive training time, got {seconds!r}")
    if data not in DEMO_DATA:
        raise ValueError(f"the demo runs on {', '.join(DEMO_DATA)}, not {data!r}")
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    size, channels, about = DEMO_DATA[data]
    out_dir = Path(out_dir)
    run_dir = out_dir / "run"
    claim(out_dir, "demo", kind="demo")  # refuses a folder that is not the demo's own
    if is_run(run_dir):  # the demo's own previous run (checked: never a foreign folder): start afresh
        with RunLock(run_dir):
            shutil.rmtree(run_dir)
    cfg = TrainConfig(
        data=data,
        out=str(run_dir),
        image_size=size,
        in_channels=channels,
        **DEMO_RECIPE,
        epochs=1000,
        max_steps=steps,
        max_seconds=seconds,
        log_every=25,
        seed=seed,
        val_data="none",
    )
    cap = f" (at most {seconds:g} s)" if seconds else ""
    log(f"demo: a 1/32/5 conditional PixelCNN++ on {about}, {steps} steps of training{cap}")
    start = time.monotonic()
    summary = train(cfg, log=log)
    train_seconds = time.monotonic() - start
    log(f"trained {summary['steps']} steps in {train_seconds:.0f} s")
    result = _assess(run_dir, out_dir, data, samples_per_class, seed, log) | dict(
        steps=summary["steps"], train_bpd=summary["train_bpd"], train_seconds=train_seconds
    )
    log(
        f"report -> {atomic_write_json(out_dir / 'report.json', result)}; model -> {run_dir} (try: cpixelcnn sample --checkpoint {run_dir} --out grid.png)"
    )
    return result


def _assess(run_dir: Path, out_dir: Path, data: str, samples_per_class: int, seed: int, log) -> dict:
    """The trained demo model's held-out bits/dim and Bayes accuracy, its samples (into
    ``out_dir/samples.png``) and how many of them the classifier gives the class they were drawn for."""
    size, channels, _ = DEMO_DATA[data]
    model, config = load_run(run_dir)
    names = config["class_names"]
    test = load_dataset(data, "test", size, channels, seed=seed)
    test_bpd = dataset_bpd(model, test.images, test.labels)
    labels = torch.arange(len(names)).repeat_interleave(samples_per_class)
    t0 = time.monotonic()
    method = fastest_method(model)
    grid_path, samples = write_sample_grid(
        out_dir / "samples.png", model, samples_per_class, size, seed=seed, scale=4 if size >= 16 else 8, method=method
    )
    sample_seconds = time.monotonic() - t0
    # do the samples look like their class? The Bayes classifier's verdict on each generated image
    sample_predicted, _ = classify(model, to_uint8(samples))
    sample_accuracy = (sample_predicted == labels).sum().item() / labels.shape[0]
    predicted, _ = classify(model, test.images)
    report = classification_report(predicted, test.labels, names)
    log(f"held-out bits/dim {test_bpd:.3f} (an untrained model: about {UNTRAINED_BPD:.0f})")
    log(
        f"sampled {samples.shape[0]} images ({method} sampler), one row of {samples_per_class} per class ({', '.join(names)}), "
        f"in {sample_seconds:.2f} s -> {grid_path}"
    )
    log(f"Bayes classifier on {len(test)} held-out images: accuracy {report['accuracy']:.1%} (chance {1 / len(names):.0%})")
    log("  per class: " + ", ".join(f"{k} {v:.0%}" for k, v in report["per_class_accuracy"].items() if v is not None))
    log(f"sample accuracy {sample_accuracy:.1%}: the share of the samples that the Bayes classifier assigns to the class they were drawn for")
    return dict(
        data=data,
        test_bpd=test_bpd,
        accuracy=report["accuracy"],
        per_class_accuracy=report["per_class_accuracy"],
        confusion_matrix=report["confusion_matrix"],
        classes=names,
        samples=str(grid_path),
        sample_seconds=sample_seconds,
        sample_accuracy=sample_accuracy,
        samples_per_class=samples_per_class,
        run_dir=str(run_dir),
        image_size=size,
        channels=channels,
    )


def add_arguments(p) -> None:
    p.add_argument("--out", default="cpixelcnn-demo", help="output folder (default: %(default)s)")
    p.add_argument(
        "--max-steps",
        type=Bounded(int, 1, 10**9),
        default=DEMO_STEPS,
        help="training steps (default: %(default)s; a number of steps: the same report on any machine)",
    )
    p.add_argument(
        "--seconds", type=float, default=None, help="stop training earlier, after this many seconds (the report then depends on the machine)"
    )
    p.add_argument("--seed", type=int, default=0, help="seeds training and sampling")
    p.add_argument(
        "--data",
        choices=list(DEMO_DATA),
        default="digits",
        help="; ".join(f"{name}: {about}" for name, (_, _, about) in DEMO_DATA.items()) + " (default: %(default)s)",
    )
    p.add_argument("--samples-per-class", type=Bounded(int, 1, 1000), default=8, help="images per class in the sample grid")


def run(args) -> int:
    run_demo(out_dir=args.out, steps=args.max_steps, seconds=args.seconds, seed=args.seed, data=args.data, samples_per_class=args.samples_per_class)
    return 0
