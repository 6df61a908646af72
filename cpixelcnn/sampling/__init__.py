"""Sampling, in one place: :mod:`~cpixelcnn.sampling.sampler` (``sample``: the naive reference or
the cached sampler, grids, completion), :mod:`~cpixelcnn.sampling.cached_sampler` (the model
lowered to ops for the compiled cached sampler) and :mod:`~cpixelcnn.sampling.engines` (the
engines that run it, and their self-checks). The engines register when this package is imported."""

from cpixelcnn.sampling import engines  # noqa: F401  (registers the engines and their self-checks)
from cpixelcnn.sampling.cached_sampler import cached_sample, kernel_launches
from cpixelcnn.sampling.engines import ENGINES, Engine, engine_choices, register_engine
from cpixelcnn.sampling.sampler import (
    MAX_TEMPERATURE,
    METHODS,
    check_rows,
    check_temperature,
    complete_images,
    draw_noise,
    fastest_method,
    per_class_samples,
    sample,
    sample_pixel,
    write_sample_grid,
)

__all__ = [
    "ENGINES",
    "Engine",
    "MAX_TEMPERATURE",
    "METHODS",
    "cached_sample",
    "check_rows",
    "check_temperature",
    "complete_images",
    "draw_noise",
    "engine_choices",
    "fastest_method",
    "kernel_launches",
    "per_class_samples",
    "register_engine",
    "sample",
    "sample_pixel",
    "write_sample_grid",
]
