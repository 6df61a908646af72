"""``cpixelcnn sample``: images from a trained model into a PNG grid, one row per class."""

from __future__ import annotations

from cpixelcnn.commands.options import TEMPERATURE_HELP, checkpoint_options, image_size, load_checkpoint, sampler_options
from cpixelcnn.settings import Bounded

NAME, HELP = "sample", "sample images into a PNG grid (one row per class)"


def add_arguments(p) -> None:
    checkpoint_options(p)
    p.add_argument("--class", dest="cls", default="all", help="class name or 'all'")
    p.add_argument("--n", type=Bounded(int, 1, 10_000), default=4, help="samples per class")
    p.add_argument("--out", required=True, help="PNG file")
    sampler_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler: the same seed, the same images")
    p.add_argument("--temperature", type=float, default=1.0, help=TEMPERATURE_HELP)
    p.add_argument("--image-size", type=Bounded(int, 1, 512), help="default: the training size")
    p.add_argument("--scale", type=Bounded(int, 1, 32), default=4, help="PNG upscaling factor")


def run(args) -> int:
    from cpixelcnn.sampling import write_sample_grid

    model, config = load_checkpoint(args)
    names = config["class_names"]
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    classes = None
    if model.num_classes and args.cls != "all":
        if args.cls not in names:
            raise ValueError(f"--class {args.cls!r} is not a class of this model ({', '.join(names)}, or 'all')")
        classes = [names.index(args.cls)]
    size = args.image_size if args.image_size is not None else image_size(config)
    path, images = write_sample_grid(
        args.out, model, args.n, size, classes, seed=args.seed, scale=args.scale, method=args.method, engine=args.engine, temperature=args.temperature
    )
    print(f"{images.shape[0]} samples -> {path}")
    return 0
