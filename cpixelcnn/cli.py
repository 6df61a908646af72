"""Command line: ``cpixelcnn <command>`` (also ``python -m cpixelcnn``).

Commands: train, sample, complete, classify, evaluate, score, demo, bench, import, doctor. Errors a user can cause print
one line ``cpixelcnn: error: …`` and exit with status 2; Ctrl-C exits 130 (training saves first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cpixelcnn.data import data_help
from cpixelcnn.ops.backend import BACKENDS

TEMPERATURE_HELP = "sampling temperature T in (0, 100]: mixture logits / T, logistic scales x T (1: the model's own distribution)"
DATA_HELP = data_help()


def _load(run_dir: str, device: str = "cpu", backend: str | None = None, use_ema: bool = True):
    from cpixelcnn.devices import resolve_device
    from cpixelcnn.rundir import load_run

    model, config = load_run(run_dir, map_location=resolve_device(device), use_ema=use_ema)
    if backend:
        model.backend = backend
    return model, config


def _image_size(config: dict) -> int:
    return int(config.get("train", {}).get("image_size", 32))


# -- commands --------------------------------------------------------------------------------------


def _cmd_train(args) -> int:
    from cpixelcnn.training import TrainingInterrupted, train
    from cpixelcnn.training.config import from_arguments
    from cpixelcnn.training.distributed import StopSignals, is_main_process, record_for_torchrun
    from cpixelcnn.training.errors import REQUEUE_STATUS, TrainingPreempted

    cfg = from_arguments(args)
    try:
        with StopSignals():  # held until the command ends: a rank that stops is not killed while it says so
            train(cfg, asked=args.given_settings)
    except (TrainingInterrupted, TrainingPreempted) as err:  # every rank stopped; rank 0 says so
        if is_main_process():
            print(f"cpixelcnn: {err}", file=sys.stderr)
        record_for_torchrun(f"cpixelcnn: {err}")
        return 130 if isinstance(err, TrainingInterrupted) else REQUEUE_STATUS
    return 0


def _cmd_sample(args) -> int:
    from cpixelcnn.sampling import write_sample_grid

    model, config = _load(args.checkpoint, args.device, args.backend, not args.no_ema)
    names = config["class_names"]
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    classes = None
    if model.num_classes and args.cls != "all":
        if args.cls not in names:
            raise ValueError(f"--class {args.cls!r} is not a class of this model ({', '.join(names)}, or 'all')")
        classes = [names.index(args.cls)]
    size = args.image_size if args.image_size is not None else _image_size(config)
    path, images = write_sample_grid(args.out, model, args.n, size, classes, seed=args.seed, scale=args.scale, method=args.method, engine=args.engine,
                                     temperature=args.temperature)  # fmt: skip
    print(f"{images.shape[0]} samples -> {path}")
    return 0


def _cmd_complete(args) -> int:
    """Keep the top rows of data images and let the model complete them: once per class
    (conditional) or --samples times (unconditional). Grid row per image: original | kept | completions."""
    from cpixelcnn.data import load_dataset, to_model_range, to_uint8
    from cpixelcnn.io import image_grid, save_png
    from cpixelcnn.sampling import complete_images

    model, config = _load(args.checkpoint, args.device, args.backend, not args.no_ema)
    size = _image_size(config)
    if not 0 <= args.rows <= size:
        raise ValueError(f"--rows must be in [0, {size}] (the image height), got {args.rows}")
    if not (1 <= args.n <= 10_000 and 1 <= args.samples <= 1000):
        raise ValueError(f"--n and --samples must be >= 1 (and at most 10000 and 1000), got {args.n} and {args.samples}")
    names = config["class_names"]
    data = load_dataset(args.data, args.split, size, model.in_channels, class_names=names if model.num_classes else None)
    tiles = complete_images(model, to_model_range(data.images[: args.n]), args.rows, args.samples, args.seed, method=args.method, engine=args.engine,
                            temperature=args.temperature)  # fmt: skip
    path = save_png(args.out, image_grid(to_uint8(tiles.flatten(0, 1)), nrow=tiles.shape[1]), scale=args.scale)
    columns = ", ".join(names) if model.num_classes else f"{tiles.shape[1] - 2} samples"
    print(f"{tiles.shape[0]} images, top {args.rows} of {size} rows kept, columns: original | kept | {columns} -> {path}")
    return 0


def _cmd_classify(args) -> int:
    from cpixelcnn.classifier import classify_dataset, predictions_csv
    from cpixelcnn.data import load_dataset
    from cpixelcnn.io import atomic_write_bytes

    model, config = _load(args.checkpoint, args.device, args.backend, not args.no_ema)
    if model.num_classes == 0:
        raise ValueError(f"{args.checkpoint} holds an unconditional model: it cannot classify")
    names = config["class_names"]
    data = load_dataset(args.data, args.split, _image_size(config), model.in_channels, class_names=names)
    predicted, loglik, report = classify_dataset(model, data, args.batch_size)
    out = args.predictions or str(Path(args.checkpoint) / f"predictions_{args.split}.csv")
    atomic_write_bytes(out, predictions_csv(data, predicted, loglik, names).encode())
    result = {"n": len(data), "predictions": out, "accuracy": None, "per_class_accuracy": None, **(report or {})}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"classified {len(data)} images -> {out}")
    if report is None:
        print("labels unknown for this split: no accuracy")
        return 0
    print(f"accuracy {result['accuracy']:.2%}")
    width = max(len(n) for n in names)
    print(" " * (width + 2) + " ".join(f"{n[:8]:>8}" for n in names) + "   (rows: true, columns: predicted)")
    for name, row in zip(names, result["confusion_matrix"]):
        print(f"{name:>{width}}  " + " ".join(f"{v:>8d}" for v in row))
    return 0


def _cmd_evaluate(args) -> int:
    from cpixelcnn.data import load_dataset
    from cpixelcnn.metrics import evaluate_dataset
    from cpixelcnn.scoring import likelihood_map

    model, config = _load(args.checkpoint, args.device, args.backend, not args.no_ema)
    names = config["class_names"]
    data = load_dataset(args.data, args.split, _image_size(config), model.in_channels, class_names=names if model.num_classes else None)
    result, notes = evaluate_dataset(model, data, args.batch_size, args.fid_samples_per_class if args.fid else 0, args.fid_dims, args.seed)
    for note in notes:
        print(note, file=sys.stderr)
    if args.heatmap:
        result["heatmap"] = str(likelihood_map(args.heatmap, model, data, names, args.heatmap_n, args.batch_size))
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("n", "bpd", "accuracy", "fid"):
            value = result[key]
            print(f"{key:>9}: {value:.4f}" if isinstance(value, float) else f"{key:>9}: {value}")
    return 0


def _cmd_score(args) -> int:
    from cpixelcnn.data import load_dataset
    from cpixelcnn.io import atomic_write_bytes
    from cpixelcnn.scoring import score_dataset, scores_csv, scores_summary

    model, config = _load(args.checkpoint, args.device, args.backend, not args.no_ema)
    background = _load(args.background, args.device, args.backend, not args.no_ema)[0] if args.background else None
    data = load_dataset(args.data, args.split, _image_size(config), model.in_channels)
    rows = score_dataset(model, data, config["class_names"], background, args.batch_size)
    if args.json:
        print(json.dumps({"n": len(rows), "summary": scores_summary(rows), "rows": rows}))
    if args.out:
        atomic_write_bytes(args.out, scores_csv(rows).encode())
        print(f"scores of {len(rows)} images -> {args.out}", file=sys.stderr)
    elif not args.json:
        sys.stdout.write(scores_csv(rows))
    return 0


def _cmd_demo(args) -> int:
    from cpixelcnn.demo import run_demo

    run_demo(
        out_dir=args.out, seconds=args.seconds, max_steps=args.max_steps, seed=args.seed, data=args.data, samples_per_class=args.samples_per_class
    )
    return 0


def _cmd_doctor(args) -> int:
    from cpixelcnn import doctor

    return doctor.run_command(args)


def _cmd_bench(args) -> int:
    from cpixelcnn.bench import run_benchmarks

    return run_benchmarks(args.only, smoke=args.smoke)


def _cmd_import(args) -> int:
    from cpixelcnn.pixelcnnpp_port import PORT_NOTE, import_pixelcnnpp
    from cpixelcnn.rundir import RunDirError, RunLock, claim, is_run, replace_run, save_run

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):
        if not is_run(out):
            claim(out, "import")  # raises: not ours
        if not args.replace:
            raise RunDirError(
                f"--out {out} already holds a cpixelcnn run: pass --replace to replace it whole (weights, EMA, state, checkpoints), or choose another --out"
            )
    arch = dict(nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, nr_logistic_mix=args.nr_mix, in_channels=args.in_channels)
    model = import_pixelcnnpp(args.checkpoint, **{k: v for k, v in arch.items() if v is not None})
    extra = {"imported_from": "pixelcnnpp", "source": str(args.checkpoint), "note": PORT_NOTE}
    if is_run(out):
        with RunLock(out):
            replace_run(out, lambda directory: save_run(directory, model, class_names=[], extra=extra), "import")
    else:
        with RunLock(claim(out, "import")):
            save_run(out, model, class_names=[], extra=extra)
    cfg = model.config
    print(f"imported {args.checkpoint}: nr_resnet={cfg['nr_resnet']} nr_filters={cfg['nr_filters']} "
          f"nr_logistic_mix={cfg['nr_logistic_mix']} in_channels={cfg['in_channels']} -> {args.out}")  # fmt: skip
    print(f"note: {PORT_NOTE}")
    return 0


# -- parser ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``cpixelcnn: error: …``, exit 2) instead of usage dumps."""

    def error(self, message):
        from cpixelcnn.training.distributed import is_main_process

        self.exit(2, f"cpixelcnn: error: {message} (see {self.prog} --help)\n" if is_main_process() else None)  # under torchrun: said once


def build_parser() -> argparse.ArgumentParser:
    from cpixelcnn.training.config import add_arguments
    from cpixelcnn.training.presets import PRESETS

    parser = _Parser(prog="cpixelcnn", description="Fast, exact class-conditional PixelCNN++")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a model; writes a run directory")
    add_arguments(
        t, with_defaults=False
    )  # generated from TrainConfig: one declaration per setting; what is not given is absent (defaults or a preset fill it)
    t.add_argument("--preset", choices=sorted(PRESETS), help="a published recipe; it fills in the settings not given on the command line")
    _cache_options(t)
    t.set_defaults(func=_cmd_train)
    _add_model_commands(sub)
    _add_tool_commands(sub)
    return parser


def _common(p, checkpoint=True):
    """The options of every command that loads a run."""
    if checkpoint:
        p.add_argument("--checkpoint", required=True, help="run directory (config.json + checkpoint.safetensors)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps (Apple GPU) or auto (default: cuda, then mps, then cpu)")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="override the model's backend")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the run has Polyak-averaged ones")


def _cache_options(p) -> None:
    """Where decoded images are kept (cpixelcnn.data.cache): the options of every command that reads --data."""
    from cpixelcnn.data.cache import ENV_LOCATION

    p.add_argument("--data-cache", metavar="DIR", help=f"decode image sources once into DIR and map them from there (default: ${ENV_LOCATION}, "
                   "else ~/.cache/cpixelcnn/data)")  # fmt: skip
    p.add_argument("--no-cache", action="store_true", help="decode the images into memory, every time")


def _sampler_options(p) -> None:
    from cpixelcnn.sampling import ENGINES, METHODS

    p.add_argument("--method", choices=METHODS, default="auto", help="naive: one forward pass per pixel (the reference); cached: every activation "
                   "once; auto (default): cached where it can run, else naive")  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default="auto", help="how the cached sampler runs: cpu, cuda, or cuda-emulated (the CUDA kernels "
                   "on the CPU, slow, for checking); auto (default): by the model's device")  # fmt: skip


def _add_model_commands(sub) -> None:
    """sample, complete, classify, evaluate: commands that use a trained model."""
    s = sub.add_parser("sample", help="sample images into a PNG grid (one row per class)")
    _common(s)
    s.add_argument("--class", dest="cls", default="all", help="class name or 'all'")
    s.add_argument("--n", type=int, default=4, help="samples per class")
    s.add_argument("--out", required=True, help="PNG file")
    _sampler_options(s)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--temperature", type=float, default=1.0, help=TEMPERATURE_HELP)
    s.add_argument("--image-size", type=int, help="default: the training size")
    s.add_argument("--scale", type=int, default=4, help="PNG upscaling factor")
    s.set_defaults(func=_cmd_sample)

    cp = sub.add_parser("complete", help="complete the top rows of data images, once per class, into a PNG grid")
    _common(cp)
    cp.add_argument("--data", required=True, help=DATA_HELP)
    _cache_options(cp)
    cp.add_argument("--split", default="test")
    cp.add_argument("--rows", type=int, required=True, help="image rows kept from the top (0 .. image height)")
    cp.add_argument("--n", type=int, default=4, help="images to complete (the first N of the split)")
    cp.add_argument("--samples", type=int, default=4, help="completions per image for an unconditional model")
    cp.add_argument("--out", required=True, help="PNG file")
    _sampler_options(cp)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--temperature", type=float, default=1.0, help=TEMPERATURE_HELP)
    cp.add_argument("--scale", type=int, default=4, help="PNG upscaling factor")
    cp.set_defaults(func=_cmd_complete)

    commands = (("classify", _cmd_classify, "Bayes-classify a data split"), ("evaluate", _cmd_evaluate, "bits/dim, accuracy and FID on a split"),
                ("score", _cmd_score, "per-image bits/dim, Bayes class and margin, and the likelihood ratio to a background model"))  # fmt: skip
    for name, func, helptext in commands:
        c = sub.add_parser(name, help=helptext)
        _common(c)
        c.add_argument("--data", required=True, help=DATA_HELP)
        _cache_options(c)
        c.add_argument("--split", default="validation" if name == "evaluate" else "test")
        c.add_argument("--json", action="store_true", help="print one JSON object")
        c.add_argument("--batch-size", type=int, default=64)
        if name == "classify":
            c.add_argument("--predictions", help="CSV path (default RUN_DIR/predictions_<split>.csv)")
        elif name == "evaluate":
            c.add_argument("--fid", action="store_true", help="also FID of generated samples against the split")
            c.add_argument("--fid-dims", type=int, default=192, choices=[64, 192, 768, 2048])
            c.add_argument("--fid-samples-per-class", type=int, default=25)
            c.add_argument("--seed", type=int, default=0)
            c.add_argument("--heatmap", metavar="OUT.png", help="bits per pixel of the first --heatmap-n images, beside each image")
            c.add_argument("--heatmap-n", type=int, default=8, help="images in the --heatmap figure (default: %(default)s)")
        else:
            c.add_argument("--background", metavar="RUN", help="a background model's run: adds its bits/dim and the likelihood ratio")
            c.add_argument("--out", metavar="FILE.csv", help="write the scores as CSV (default: CSV on standard output, or --json)")
        c.set_defaults(func=func)


def _add_tool_commands(sub) -> None:
    """demo, bench, doctor, import."""
    d = sub.add_parser("demo", help="train a small model on data already on the machine, sample per class, classify")
    d.add_argument("--out", default="cpixelcnn-demo", help="output folder (default: %(default)s)")
    d.add_argument("--seconds", type=float, default=60.0, help="training time in seconds (default: %(default)s)")
    d.add_argument("--max-steps", type=int, default=None, help="train for this many steps instead")
    d.add_argument("--seed", type=int, default=0)
    from cpixelcnn.demo import DEMO_DATA

    d.add_argument("--data", choices=list(DEMO_DATA), default="digits", help="; ".join(f"{name}: {about}" for name, (_, _, about) in DEMO_DATA.items())
                   + " (default: %(default)s)")  # fmt: skip
    d.add_argument("--samples-per-class", type=int, default=8)
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="run the benchmark suite (smoke mode without CUDA)")
    from cpixelcnn.bench import benchmark_modules

    b.add_argument("--smoke", action="store_true", help="each benchmark's quick mode (its SMOKE_ARGS), results to a temporary folder")
    b.add_argument("--only", nargs="*", choices=list(benchmark_modules()) or None, help="these benchmarks (default: every module of benchmarks/)")
    b.set_defaults(func=_cmd_bench)

    doc = sub.add_parser("doctor", help="versions, device, compiled pieces, and a self-check of every fast path against the eager reference")
    from cpixelcnn.doctor import add_arguments as doctor_arguments

    doctor_arguments(doc)
    doc.set_defaults(func=_cmd_doctor)

    imp = sub.add_parser("import", help="import a checkpoint of another implementation into a run directory")
    imp.add_argument("checkpoint", help="the checkpoint file (.pth state dict)")
    imp.add_argument("--from", dest="source", required=True, choices=["pixelcnnpp"], help="pixelcnnpp: the pclucas14/pixel-cnn-pp PyTorch port")
    imp.add_argument("--out", required=True, help="run directory to write (new or empty)")
    imp.add_argument("--replace", action="store_true", help="replace an existing run in --out whole (its weights, EMA, state and checkpoints go)")
    imp.add_argument("--nr-resnet", type=int, help="check against this (inferred from the tensors otherwise)")
    imp.add_argument("--nr-filters", type=int)
    imp.add_argument("--nr-mix", type=int)
    imp.add_argument("--in-channels", type=int)
    imp.set_defaults(func=_cmd_import)


def _apply_preset(args, given: set[str]) -> None:
    from cpixelcnn.training.presets import describe, preset_settings

    filled = preset_settings(args.preset, given)
    for name, value in filled.items():
        setattr(args, name, value)
    print(describe(args.preset, filled, given))


def main(argv: list[str] | None = None) -> int:
    from cpixelcnn.limits import check_range

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "no_cache"):
            from cpixelcnn.data.cache import configure

            if args.no_cache and args.data_cache:
                raise ValueError("--data-cache DIR and --no-cache contradict each other: give one")
            configure(args.data_cache, enabled=False if args.no_cache else None)
        own = {"complete": {"n", "samples"}}.get(args.command, set())  # complete names its own bounds (they depend on each other)
        for dest, value in vars(args).items():
            if dest not in own and args.command != "train":  # train: TrainConfig's checks, with each setting's own flag
                check_range(dest, value)
        if args.command == "train":
            from cpixelcnn.training.config import given_settings

            args.given_settings = given_settings(args)
            if args.preset:
                _apply_preset(args, args.given_settings)
        return args.func(args)
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        from cpixelcnn.training.distributed import record_for_torchrun

        message = getattr(err, "summary", None) or (str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        if not getattr(err, "quiet", False):  # under torchrun one rank says it
            print(f"cpixelcnn: error: {message}", file=sys.stderr)
        record_for_torchrun(f"cpixelcnn: error: {message}")
        return 2
    except KeyboardInterrupt:
        print("cpixelcnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
