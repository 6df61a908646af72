"""Exact sampling from a PixelCNN++ model.

Random numbers: all drawn up front, in one fixed layout, so that every sampler given the same
generator produces the same image::

    noise = torch.rand((B, H, W, 1 + C), generator=generator, dtype=torch.float64,
                       device=generator.device)         # CPU when generator is None

``noise[b, i, j, 0]`` picks the mixture component of pixel (i, j) of image b by inverse CDF of
the softmax of the logits; ``noise[b, i, j, 1 + c]`` is the uniform turned into a logistic
draw for colour c. Image b's noise does not depend on the batch size.

A pixel is sampled exactly from the discretized distribution: pick component k, for each colour
in order draw ``m + s·logit(u)`` (the mean m already shifted by the *quantised* earlier colours),
round to the nearest of the 2^bits levels and clamp to [-1, 1]. Rounding a continuous logistic
draw to the nearest level gives each level exactly the mass of its bin (the end levels their
tails), which is the likelihood of :func:`cpixelcnn.dmol_log_prob`.

Temperature T (``sample(..., temperature=T)``): the mixture logits are divided by T and every
logistic scale is multiplied by T, then the pixel is sampled exactly as above from that tempered
distribution (the common choice for DMoL models; T < 1 sharpens, T > 1 flattens). At T = 1 both
are exact no-ops, so the images are bit for bit those of the untempered sampler.

Which sampler runs is two choices, each with one ``auto``: ``method`` (:data:`METHODS`: the naive
reference, one forward pass per pixel, or the cached sampler; ``auto`` is :func:`fastest_method`)
and, for the cached sampler, ``engine`` (the engines registered in :mod:`cpixelcnn.sampling.engines`: the
C++ loop on the CPU, the CUDA kernels, those kernels emulated on the CPU; ``auto`` picks by the
model's device). The same default, ``auto``, in the API and on the command line. Every engine is
checked against the naive sampler in :mod:`cpixelcnn.sampling.engines` (the fast paths ``engine:NAME`` of :mod:`cpixelcnn.gate`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from cpixelcnn import gate
from cpixelcnn.atomic_io import image_grid, save_png
from cpixelcnn.data.types import to_uint8
from cpixelcnn.devices import float64_math, supports_float64, to_float64
from cpixelcnn.dmol_layout import COEFF, LOG_SCALE, LOG_SCALE_MIN, MEAN, num_mixtures, params_per_mixture, roles_per_colour
from cpixelcnn.likelihood import evaluating
from cpixelcnn.ops.dmol import grid_levels
from cpixelcnn.per_class_model import PerClassPixelCNN
from cpixelcnn.sampling.engines import auto_engine, engine_choices, unavailable_reason

METHODS = ("auto", "naive", "cached")
MAX_TEMPERATURE = 100.0


def draw_noise(batch: int, channels: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The sampler's random numbers in the documented layout: (B, H, W, 1 + C) float64."""
    device = generator.device if generator is not None else torch.device("cpu")
    with float64_math():
        return torch.rand((batch, height, width, 1 + channels), generator=generator, dtype=torch.float64, device=device)


def sample_pixel(params: torch.Tensor, noise: torch.Tensor, channels: int, bits: int, temperature: float = 1.0) -> torch.Tensor:
    """Sample one pixel per row. params (N, n_out), noise (N, 1 + C) → values (N, C) on the grid,
    at ``temperature`` (see the module docstring).

    Computed in float64 whatever the params' dtype: on the params' device, or on the host (and
    returned there) when that device has no float64.
    """
    with float64_math():
        params = to_float64(params)
        return _sample_pixel(params, noise.to(device=params.device, dtype=torch.float64), channels, bits, temperature)


def _sample_pixel(params: torch.Tensor, noise: torch.Tensor, channels: int, bits: int, temperature: float = 1.0) -> torch.Tensor:
    n = params.shape[0]
    k = num_mixtures(channels, params.shape[1])
    levels = grid_levels(bits)
    half_range = (levels - 1) / 2.0

    logits = params[:, :k]
    weights = torch.exp((logits - logits.max(dim=1, keepdim=True).values) / temperature)
    cumulative = torch.cumsum(weights, dim=1)
    threshold = noise[:, :1] * cumulative[:, -1:]
    component = (cumulative <= threshold).sum(dim=1, keepdim=True).clamp(max=k - 1)  # first k with u < cdf_k

    roles = roles_per_colour(channels)
    chosen = params[:, k:].reshape(n, channels, roles, k).gather(3, component[:, None, None, :].expand(n, channels, roles, 1))[..., 0]
    means = chosen[:, :, MEAN]
    scales = torch.exp(chosen[:, :, LOG_SCALE].clamp(min=LOG_SCALE_MIN)) * temperature
    coeffs = torch.tanh(chosen[:, :, COEFF]) if channels == 3 else None

    u = noise[:, 1:]
    out = torch.empty(n, channels, dtype=torch.float64, device=params.device)
    for c in range(channels):
        mean = means[:, c]
        if c == 1:
            mean = mean + coeffs[:, 0] * out[:, 0]
        elif c == 2:
            mean = mean + coeffs[:, 1] * out[:, 0] + coeffs[:, 2] * out[:, 1]
        draw = mean + scales[:, c] * (torch.log(u[:, c]) - torch.log1p(-u[:, c]))
        level = torch.clamp(torch.round((draw + 1.0) * half_range), 0, levels - 1)
        out[:, c] = level / half_range - 1.0
    return out


def fastest_method(model, image_pixels: int | None = None) -> str:
    """``"cached"`` where it can run, else ``"naive"`` — saying once per process why, and how much slower.

    The cached sampler runs a float32/64 model with the engine ``auto`` picks for its device, when
    the compiled extension has it — a gated engine (the CUDA kernels) once it has passed its
    self-check on that device (:mod:`cpixelcnn.gate`)."""
    from cpixelcnn.notices import warn_once

    param = next(model.parameters())
    cost = f"about {image_pixels:,}x slower" if image_pixels else "about H*W times slower"
    engine = auto_engine(param.device.type)
    if param.dtype not in (torch.float32, torch.float64):
        reason = f"the cached sampler runs float32/float64 models, this one is {param.dtype}"
    elif engine is None:
        reason = f"no engine of the cached sampler runs {param.device.type} models"
    else:
        reason = unavailable_reason(engine.name)
        if reason is None and (not engine.gated or gate.trusted(param.device, f"engine:{engine.name}")):
            return "cached"
        reason = reason or f"the {engine.name} engine of the cached sampler failed its self-check on this device (see `cpixelcnn doctor`)"
    warn_once(
        f"sampler-naive-{reason}",
        f"cpixelcnn: method='auto' samples with the naive sampler (one forward pass per pixel, {cost} than the cached sampler) because {reason}",
    )
    return "naive"


def _batch_and_labels(model, labels, batch_size):
    if model.num_classes == 0:
        if labels is not None:
            raise ValueError("the model is unconditional (num_classes=0): pass labels=None and batch_size=N")
        if batch_size is None or isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"an unconditional model needs batch_size >= 1, got {batch_size!r}")
        return batch_size, None
    if not isinstance(labels, torch.Tensor):
        raise TypeError("labels must be an integer tensor of shape (B,) for a class-conditional model")
    if labels.dim() != 1 or labels.shape[0] < 1:
        raise ValueError(f"labels must have shape (B,) with B >= 1, got {tuple(labels.shape)}")
    return labels.shape[0], labels


def _check_prefix(prefix, prefix_pixels, batch: int, channels: int, height: int, width: int, bits: int):
    """The given first pixels of an image completion, validated: (B, C, H, W) float64 on the grid, or None."""
    if isinstance(prefix_pixels, bool) or not isinstance(prefix_pixels, int) or not 0 <= prefix_pixels <= height * width:
        raise ValueError(f"prefix_pixels must be an integer in [0, H·W] = [0, {height * width}], got {prefix_pixels!r}")
    if prefix is None:
        if prefix_pixels:
            raise ValueError(f"prefix_pixels={prefix_pixels} needs the prefix images (prefix=...)")
        return None
    if not isinstance(prefix, torch.Tensor) or tuple(prefix.shape) != (batch, channels, height, width):
        got = tuple(prefix.shape) if isinstance(prefix, torch.Tensor) else type(prefix).__name__
        raise ValueError(f"prefix must be a (B, C, H, W) = {(batch, channels, height, width)} tensor, got {got}")
    from cpixelcnn.ops.dmol import quantize_to_grid

    try:
        with float64_math():
            _, on_grid = quantize_to_grid(to_float64(prefix.detach()), bits)
    except ValueError as err:
        raise ValueError(f"prefix: {str(err).removeprefix('x ')}") from None
    return on_grid


@torch.no_grad()
def sample(
    model,
    labels: torch.Tensor | None,
    image_size=(32, 32),
    method: str = "auto",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    prefix: torch.Tensor | None = None,
    prefix_pixels: int = 0,
    temperature: float = 1.0,
    engine: str = "auto",
) -> torch.Tensor:
    """Draw images from ``model``: (B, C, H, W) on the 2^bits grid of [-1, 1].

    labels: (B,) integer class per image (None for an unconditional model, with ``batch_size``).
    method: ``"naive"`` runs one full forward pass per pixel (the reference); ``"cached"``
        computes every activation once (C++ extension; same images as naive given the same
        generator — identical in float64, rarely a flipped level in float32); ``"auto"`` (the
        default, as on the command line) the fastest that can run (:func:`fastest_method`).
    engine: how the cached sampler runs (:func:`cpixelcnn.sampling.engines.engine_choices`; ``"auto"``: by
        the model's device); naming one with ``method="auto"`` asks for the cached sampler.
    generator: the source of all randomness (see the module docstring for the layout).
    prefix, prefix_pixels: image completion — the first ``prefix_pixels`` pixels in raster order
        are copied from ``prefix`` (B, C, H, W on the 2^bits grid) and the rest are sampled from
        the model given them. The random numbers keep their layout: the given pixels simply do
        not use theirs, so naive and cached agree as for plain sampling.
    temperature: T in (0, 100]; logits / T and logistic scales × T (module docstring). 1 is
        the model's own distribution, bit for bit the untempered sampler's images.
    The model runs in eval mode (dropout off) and is put back in its previous mode afterwards.
    """
    height, width = _image_size(image_size)
    method = _method(model, method, engine, height * width)
    temperature = check_temperature(temperature)
    batch, labels = _batch_and_labels(model, labels, batch_size)
    channels = model.in_channels
    params_per_mixture(channels)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    noise = draw_noise(batch, channels, height, width, generator)
    if supports_float64(device):
        noise = noise.to(device)  # else the draws stay on the host, where sample_pixel works
    given = _check_prefix(prefix, prefix_pixels, batch, channels, height, width, model.bits)
    if labels is not None:
        labels = labels.to(device)
        model.check_inputs(torch.zeros(batch, channels, 1, 1, device=device, dtype=dtype), labels)
    draw = functools.partial(_draw, height=height, width=width, prefix_pixels=prefix_pixels, temperature=temperature, method=method, engine=engine)
    if not isinstance(model, PerClassPixelCNN):
        return draw(model, labels, noise, given)
    x = torch.empty(batch, channels, height, width, device=device, dtype=dtype)
    for c, rows in model.class_rows(labels):  # each class's images from its member, with the random numbers of their places in the batch
        x[rows] = draw(model.members[c], None, noise[rows.to(noise.device)], None if given is None else given[rows.to(given.device)]).to(dtype)
    return x


def _image_size(image_size) -> tuple[int, int]:
    try:
        height, width = (int(s) for s in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (H, W), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _method(model, method: str, engine: str, pixels: int) -> str:
    """The sampler that runs: ``naive`` or ``cached`` (``auto``: :func:`fastest_method`, or cached when an engine is named)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if engine not in engine_choices():
        raise ValueError(f"engine must be one of {', '.join(map(repr, engine_choices()))}, got {engine!r}")
    if engine != "auto" and method == "naive":
        raise ValueError(f"engine={engine!r} chooses how the cached sampler runs; method='naive' has no engine")
    if method == "auto":
        return "cached" if engine != "auto" else fastest_method(model, pixels)
    return method


def _draw(model, labels, noise, given, *, height, width, prefix_pixels, temperature, method, engine) -> torch.Tensor:
    """One model's images (``labels``: (B,) or None) from the drawn ``noise``, by ``method``, in eval mode."""
    batch, channels = noise.shape[0], model.in_channels
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    with evaluating(model):  # weight-norm weights computed once, not once per pixel
        if method == "cached":
            from cpixelcnn.sampling.cached_sampler import cached_sample

            return cached_sample(
                model, labels, batch, height, width, noise, prefix=given, prefix_pixels=prefix_pixels, temperature=temperature, engine=engine
            )
        return _naive_loop(model, labels, noise, batch, channels, height, width, device, dtype, given, prefix_pixels, temperature)


def check_temperature(temperature) -> float:
    """``temperature`` as a float, or a one-line ValueError: it must be a number in (0, 100] (above
    that the tempered scales make the draws meaningless)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature <= MAX_TEMPERATURE:
        raise ValueError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {temperature!r}")
    return float(temperature)


def _naive_loop(
    model, labels, noise, batch, channels, height, width, device, dtype, given=None, prefix_pixels: int = 0, temperature: float = 1.0
) -> torch.Tensor:
    """One full forward pass per pixel, in raster order; the first ``prefix_pixels`` are copied from ``given``."""
    x = torch.zeros(batch, channels, height, width, device=device, dtype=dtype)
    if prefix_pixels:
        x.view(batch, channels, -1)[:, :, :prefix_pixels] = given.to(dtype).to(device).reshape(batch, channels, -1)[:, :, :prefix_pixels]
    for t in range(prefix_pixels, height * width):
        i, j = divmod(t, width)
        params = model(x, labels)[:, :, i, j]
        x[:, :, i, j] = sample_pixel(params, noise[:, i, j], channels, model.bits, temperature).to(dtype).to(device)
    return x


def per_class_samples(model, n: int, image_size: int | tuple[int, int], classes: list[int] | None = None, seed: int = 0, **options) -> torch.Tensor:
    """``n`` samples of each class in ``classes`` (default: every class), class after class:
    (len(classes)·n, C, H, W) on the grid of [-1, 1]; an unconditional model gives ``n`` samples.
    ``options`` go to :func:`sample` (``method``, ``engine``, ``temperature``); the generator is seeded with ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"samples per class must be an integer >= 1, got {n!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    options.setdefault("method", "auto")
    generator = torch.Generator().manual_seed(seed)
    if model.num_classes == 0:
        return sample(model, None, image_size=size, generator=generator, batch_size=n, **options)
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    labels = torch.tensor(classes, dtype=torch.long).repeat_interleave(n).to(next(model.parameters()).device)
    return sample(model, labels, image_size=size, generator=generator, **options)


def write_sample_grid(
    path, model, n: int, image_size: int | tuple[int, int], classes: list[int] | None = None, seed: int = 0, scale: int = 4, **options
) -> tuple[Path, torch.Tensor]:
    """Sample with :func:`per_class_samples` and write a PNG grid, one row per class (rows of at
    most 8 for an unconditional model). Returns (the PNG's path, the samples)."""
    images = per_class_samples(model, n, image_size, classes, seed, **options)
    nrow = n if model.num_classes else min(n, 8)
    return save_png(path, image_grid(to_uint8(images), nrow=nrow), scale=scale), images


def check_rows(rows: int, height: int) -> None:
    """The rows a completion keeps must be in [0, height]: a one-line ValueError naming ``--rows`` otherwise."""
    if not 0 <= rows <= height:
        raise ValueError(f"--rows must be in [0, {height}] (the image height), got {rows}")


def complete_images(model, originals: torch.Tensor, rows: int, samples: int = 4, seed: int = 0, **options) -> torch.Tensor:
    """Keep the top ``rows`` rows of ``originals`` (N, C, H, W on the grid) and let the model draw
    the rest: once per class (conditional) or ``samples`` times (unconditional). Returns tiles
    (N, 2 + K, C, H, W) on the host: original | kept (mid grey below the kept rows) | K completions.
    ``options`` go to :func:`sample` (``method``, ``engine``, ``temperature``)."""
    n, _, height, width = originals.shape
    check_rows(rows, height)
    per_image = model.num_classes or samples
    labels = torch.arange(model.num_classes).repeat(n) if model.num_classes else None
    completions = sample(
        model,
        labels,
        image_size=(height, width),
        generator=torch.Generator().manual_seed(seed),
        batch_size=None if model.num_classes else n * per_image,
        prefix=originals.repeat_interleave(per_image, dim=0),
        prefix_pixels=rows * width,
        **options,
    ).cpu()
    originals = originals.cpu()
    kept = originals.clone()
    kept[:, :, rows:] = 0.0
    return torch.cat([originals[:, None], kept[:, None], completions.view(n, per_image, *originals.shape[1:]).to(originals.dtype)], dim=1)
