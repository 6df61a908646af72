"""``cpixelcnn complete``: keep the top rows of data images and let the model complete them."""

from __future__ import annotations

from cpixelcnn.commands.options import TEMPERATURE_HELP, cache_of, checkpoint_options, data_options, image_size, load_checkpoint, sampler_options
from cpixelcnn.settings import Bounded

NAME, HELP = "complete", "complete the top rows of data images, once per class, into a PNG grid"


def add_arguments(p) -> None:
    checkpoint_options(p)
    data_options(p)
    p.add_argument("--split", default="test", help="the split whose first --n images are completed")
    p.add_argument("--rows", type=int, required=True, help="image rows kept from the top (0 .. image height)")
    p.add_argument("--n", type=Bounded(int, 1, 10_000), default=4, help="images to complete (the first N of the split)")
    p.add_argument("--samples", type=Bounded(int, 1, 1000), default=4, help="completions per image for an unconditional model")
    p.add_argument("--out", required=True, help="PNG file")
    sampler_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler: the same seed, the same completions")
    p.add_argument("--temperature", type=float, default=1.0, help=TEMPERATURE_HELP)
    p.add_argument("--scale", type=Bounded(int, 1, 32), default=4, help="PNG upscaling factor")


def run(args) -> int:
    """Grid row per image: original | kept | completions (one per class, or --samples of them)."""
    from cpixelcnn.atomic_io import image_grid, save_png
    from cpixelcnn.data import load_dataset, to_model_range, to_uint8
    from cpixelcnn.sampling import check_rows, complete_images

    model, config = load_checkpoint(args)
    size = image_size(config)
    check_rows(args.rows, size)  # before the data are read
    names = config["class_names"]
    data = load_dataset(args.data, args.split, size, model.in_channels, class_names=names if model.num_classes else None, cache=cache_of(args))
    tiles = complete_images(
        model,
        to_model_range(data.images[: args.n]),
        args.rows,
        args.samples,
        args.seed,
        method=args.method,
        engine=args.engine,
        temperature=args.temperature,
    )
    path = save_png(args.out, image_grid(to_uint8(tiles.flatten(0, 1)), nrow=tiles.shape[1]), scale=args.scale)
    columns = ", ".join(names) if model.num_classes else f"{tiles.shape[1] - 2} samples"
    print(f"{tiles.shape[0]} images, top {args.rows} of {size} rows kept, columns: original | kept | {columns} -> {path}")
    return 0
