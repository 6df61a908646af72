"""The discretized logistic mixture's parameter layout, defined once for the eager reference, the
samplers and the Triton kernels (the C++ sampler mirrors it in csrc/sample_pixel.h; the tests
compare every implementation with the reference).

params (B, n_out, H, W), n_out = K · params_per_mixture(C): first the K mixture logits, then per
colour c its roles — mean, log-scale and (RGB only) the autoregressive colour coefficient — each
K channels: channel ``slot(c, role, k, K, C)`` holds component k's value.
"""

from __future__ import annotations

import math

LOG_SCALE_MIN = -7.0  # log-scales are clamped below at this (the paper's)
LN2 = math.log(2.0)
MEAN, LOG_SCALE, COEFF = 0, 1, 2  # roles of a colour's parameters


def roles_per_colour(channels: int) -> int:
    """3 for RGB (mean, log-scale, coefficient), 2 for grey (no coefficient)."""
    if channels == 3:
        return 3
    if channels == 1:
        return 2
    raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {channels}")


def params_per_mixture(channels: int) -> int:
    """Number of parameter channels per mixture component: 10 for RGB, 3 for grey."""
    return 1 + channels * roles_per_colour(channels)


def num_mixtures(channels: int, n_params: int) -> int:
    """K from the image channel count and the parameter channel count."""
    per = params_per_mixture(channels)
    if n_params <= 0 or n_params % per:
        kind = "RGB" if channels == 3 else "grey"
        raise ValueError(f"params has {n_params} channels, but {kind} images need {per}*K channels (K = number of mixtures)")
    return n_params // per


def slot(colour: int, role: int, k: int, mixtures: int, channels: int) -> int:
    """The parameter channel of component ``k``'s ``role`` for ``colour`` (logits are channels 0 .. K-1)."""
    return (1 + colour * roles_per_colour(channels) + role) * mixtures + k
