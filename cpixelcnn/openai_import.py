"""Import openai/pixel-cnn's TensorFlow checkpoints (the released CIFAR-10 model included) as a
:class:`~cpixelcnn.ConditionalPixelCNN`, without TensorFlow (:mod:`cpixelcnn.tf_checkpoint`).

openai's ``model_spec`` creates its weight-normalised layers with ``tf.get_variable`` under
``model/``, each kind numbered in creation order: ``conv2d_N`` and ``deconv2d_N`` (``V``, ``g``,
``b``), ``dense_N`` for the network-in-network layers, ``conditional_weights_N/hw`` in every gated
resnet of a class-conditional model. Walking the network in that order names every variable's
layer here; the layers are this package's, so outputs agree to float32 rounding:

- conv ``V`` [kh, kw, in, out], normalised over (0, 1, 2): W = g · V/‖V‖, as (out, in, kh, kw);
- deconv ``V`` [kh, kw, out, in], normalised per output channel over (0, 1, 3), as (in, out, kh, kw);
- dense ``V`` [in, out], normalised over 0: a 1×1 convolution (out, in, 1, 1);
- ``hw`` [K, 2F]: ``c2 += onehot(y) @ hw`` before the gate — this package's additive conditioning
  (β = hw[y], γ = 1) in every gated resnet (fusion "middle": all of them).

The Polyak averages (``…/ExponentialMovingAverage``, which the paper evaluates and samples with)
are taken by default, the raw weights with ``ema=False``. Anything else the checkpoint holds
(Adam's moments, saved as ``Variable``, ``Variable_1``, …; the step) is not read.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from cpixelcnn.model import ConditionalPixelCNN
from cpixelcnn.tf_checkpoint import CheckpointError, read_index, read_tensors

EMA_SUFFIX = "/ExponentialMovingAverage"
SCOPE = "model/"
NOTE = (
    "imported from openai/pixel-cnn (TensorFlow); outputs match its model_spec in eval mode. Its DMoL loss "
    "approximates a bin whose probability is below 1e-5 by the density at its centre; this package's likelihood is exact."
)


class OpenAIImportError(CheckpointError):
    """A checkpoint that is not openai/pixel-cnn's, or does not fit the architecture asked for."""


def layer_order(nr_resnet: int, conditional: bool) -> list[tuple[str, str, str]]:
    """(openai variable scope, our module path, kind) for every layer, in model_spec's creation
    order; kind is conv, deconv, dense or cond."""
    counters: dict[str, int] = {}
    order = []

    def add(kind: str, ours: str) -> None:
        scope = {"conv": "conv2d", "deconv": "deconv2d", "dense": "dense", "cond": "conditional_weights"}[kind]
        order.append((f"{SCOPE}{scope}_{counters.get(scope, 0)}", ours, kind))
        counters[scope] = counters.get(scope, 0) + 1

    def gated(path: str, skip: bool) -> None:  # conv(x), nin(a), conv(c1), then h @ hw
        add("conv", f"{path}.conv_in.conv")
        if skip:
            add("dense", f"{path}.nin_skip.conv")
        add("conv", f"{path}.conv_out.conv")
        if conditional:
            add("cond", f"{path}.cond_head")

    add("conv", "u_init.conv")
    add("conv", "ul_init_above.conv")
    add("conv", "ul_init_left.conv")
    for stage in range(3):
        for i in range(nr_resnet):
            gated(f"up_stages.{stage}.u_stream.{i}", skip=False)
            gated(f"up_stages.{stage}.ul_stream.{i}", skip=True)
        if stage < 2:
            add("conv", f"downsize_u.{stage}.conv")
            add("conv", f"downsize_ul.{stage}.conv")
    for stage, count in enumerate([nr_resnet, nr_resnet + 1, nr_resnet + 1]):
        for i in range(count):
            gated(f"down_stages.{stage}.u_stream.{i}", skip=True)
            gated(f"down_stages.{stage}.ul_stream.{i}", skip=True)
        if stage < 2:
            add("deconv", f"upsize_u.{stage}.deconv")
            add("deconv", f"upsize_ul.{stage}.deconv")
    add("dense", "nin_out.conv")
    return order


def architecture_from_shapes(shapes: dict[str, list[int]], where: str) -> dict:
    """nr_resnet, nr_filters, nr_logistic_mix, in_channels and num_classes from the variables' shapes."""
    first = shapes.get(f"{SCOPE}conv2d_0/V")
    if first is None:
        raise OpenAIImportError(f"{where} holds no PixelCNN++ variables (no {SCOPE}conv2d_0/V): not a checkpoint of openai/pixel-cnn's model")
    if len(first) != 4:
        raise OpenAIImportError(f"{where}: {SCOPE}conv2d_0/V has shape {first}, expected [2, 3, channels + 1, filters]")
    in_channels, nr_filters = first[2] - 1, first[3]
    if in_channels != 3:
        raise OpenAIImportError(f"{where}: {SCOPE}conv2d_0/V takes {first[2]} channels; openai's model reads RGB (3 + the ones channel)")
    convs = sum(1 for name in shapes if re.fullmatch(rf"{SCOPE}conv2d_\d+/V", name))
    # 3 first convs, 4 downsizing ones, 2 convs per gated resnet: 2·(3n) up + 2·(3n + 2) down
    nr_resnet, rest = divmod(convs - 3 - 4 - 8, 24)
    if rest or nr_resnet < 1:
        raise OpenAIImportError(f"{where}: {convs} conv2d layers fit no PixelCNN++ (3 + 4 + 24·nr_resnet + 8)")
    denses = sorted(int(m.group(1)) for name in shapes if (m := re.fullmatch(rf"{SCOPE}dense_(\d+)/V", name)))
    last = shapes.get(f"{SCOPE}dense_{denses[-1]}/V") if denses else None
    if last is None or len(last) != 2 or last[1] % 10:
        raise OpenAIImportError(f"{where}: no output layer {SCOPE}dense_N/V of [filters, 10·mixtures]")
    conditional = shapes.get(f"{SCOPE}conditional_weights_0/hw")
    num_classes = conditional[0] if conditional else 0
    from cpixelcnn.model_config import bounds_of

    arch = dict(nr_resnet=nr_resnet, nr_filters=nr_filters, nr_logistic_mix=last[1] // 10, in_channels=in_channels)
    for name, value in arch.items():
        low, high = (1, 3) if name == "in_channels" else bounds_of(name)
        if not low <= value <= high:
            raise OpenAIImportError(f"{where}: {name} = {value} read from the variables is outside [{low}, {high}]")
    return arch | dict(num_classes=num_classes)


FIRST_KERNELS = {"u_init.conv": (2, 3), "ul_init_above.conv": (1, 3), "ul_init_left.conv": (2, 1)}


def _kernel(ours: str) -> tuple[int, int]:
    """The u stream's convolutions are 2×3 (down-shifted), the ul stream's 2×2 (down-right-shifted)."""
    if ours in FIRST_KERNELS:
        return FIRST_KERNELS[ours]
    return (2, 3) if ".u_stream." in ours or ours.startswith(("downsize_u.", "upsize_u.")) else (2, 2)


def expected_shapes(nr_resnet: int, nr_filters: int, nr_logistic_mix: int, in_channels: int, num_classes: int) -> dict[str, list[int]]:
    """Every variable openai's model_spec makes for an architecture, with its shape."""
    f = nr_filters
    shapes = {}
    for scope, ours, kind in layer_order(nr_resnet, num_classes > 0):
        if kind == "cond":
            shapes[f"{scope}/hw"] = [num_classes, 2 * f]
            continue
        if kind == "dense":  # its input is concat_elu(skip): twice the skip's channels (down ul: [u, ul] stacked)
            if ours == "nin_out.conv":
                cin, cout = f, 10 * nr_logistic_mix
            else:
                cin, cout = (2 * f if ours.startswith("up_stages") or ".u_stream." in ours else 4 * f), f
            shapes[f"{scope}/V"] = [cin, cout]
        elif kind == "deconv":
            cout = f
            shapes[f"{scope}/V"] = [*_kernel(ours), f, f]
        else:
            cin = in_channels + 1 if ours in FIRST_KERNELS else (2 * f if ours.endswith(("conv_in.conv", "conv_out.conv")) else f)
            cout = 2 * f if ours.endswith("conv_out.conv") else f
            shapes[f"{scope}/V"] = [*_kernel(ours), cin, cout]
        shapes[f"{scope}/g"] = [cout]
        shapes[f"{scope}/b"] = [cout]
    return shapes


def _effective(kind: str, parts: dict[str, np.ndarray]) -> torch.Tensor:
    """The weight openai's layer computes (float64 for the normalisation), in our layer's layout."""
    v, g = parts["V"].astype(np.float64), parts["g"].astype(np.float64)
    if kind == "conv":
        w = g.reshape(1, 1, 1, -1) * v / np.sqrt((v**2).sum(axis=(0, 1, 2), keepdims=True))
        return torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    if kind == "deconv":
        w = g.reshape(1, 1, -1, 1) * v / np.sqrt((v**2).sum(axis=(0, 1, 3), keepdims=True))
        return torch.from_numpy(w.transpose(3, 2, 0, 1).copy())
    w = g.reshape(1, -1) * v / np.sqrt((v**2).sum(axis=0, keepdims=True))
    return torch.from_numpy(w.T.copy())[:, :, None, None]


@torch.no_grad()
def import_openai(prefix: str | os.PathLike, ema: bool = True, dropout: float = 0.5, **arch) -> tuple[ConditionalPixelCNN, dict]:
    """The model in openai/pixel-cnn's TensorFlow checkpoint ``prefix`` (``params_cifar.ckpt``):
    (model in eval mode, what was read: the architecture, whether the averages were used, the
    variables mapped). ``arch`` (nr_resnet, nr_filters, nr_logistic_mix, in_channels,
    num_classes), where given, must agree with the variables. One-line errors name the file."""
    index, entries = read_index(prefix)
    where = str(index)[: -len(".index")]
    shapes = {name: entry["shape"] for name, entry in entries.items()}
    inferred = architecture_from_shapes(shapes, where)
    for name, value in arch.items():
        if name not in inferred:
            raise TypeError(f"unknown architecture argument {name!r} (known: {', '.join(inferred)})")
        if value is not None and value != inferred[name]:
            raise OpenAIImportError(f"{name}={value} was given but the checkpoint's variables say {name}={inferred[name]} ({where})")
    expected = expected_shapes(**inferred)
    suffix = EMA_SUFFIX if ema else ""
    for name, shape in expected.items():
        stored = shapes.get(name + suffix)
        if stored is None:
            missing = name + suffix
            why = " (the checkpoint keeps no Polyak averages: import the raw weights with --no-ema)" if ema and name in shapes else ""
            raise OpenAIImportError(f"{where}: variable {missing} is missing{why}")
        if list(stored) != shape:
            raise OpenAIImportError(f"{where}: variable {name + suffix} has shape {list(stored)}, expected {shape}")
    tensors = read_tensors(prefix, [name + suffix for name in expected])
    sizes = {k: inferred[k] for k in ("nr_resnet", "nr_filters", "nr_logistic_mix", "in_channels")}
    model = ConditionalPixelCNN(
        num_classes=inferred["num_classes"], conditioning="additive", fusion="middle", embedding="onehot", dropout=dropout, **sizes
    )
    modules = dict(model.named_modules())
    from cpixelcnn.pixelcnnpp_port import _set_weight

    for scope, ours, kind in layer_order(inferred["nr_resnet"], inferred["num_classes"] > 0):
        module = modules[ours]
        if kind == "cond":
            module.weight.copy_(torch.from_numpy(tensors[f"{scope}/hw{suffix}"].T.copy()))
            continue
        parts = {role: tensors[f"{scope}/{role}{suffix}"] for role in ("V", "g", "b")}
        _set_weight(module, _effective(kind, parts).to(torch.float32))
        module.bias.copy_(torch.from_numpy(parts["b"]))
    return model.eval(), dict(architecture=inferred, ema=ema, variables=len(expected), checkpoint=where)
