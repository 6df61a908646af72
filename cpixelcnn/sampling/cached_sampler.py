"""The cached incremental sampler: lower the model to ops over activation caches, schedule every
activation at the step it becomes computable, and run the loop in C++ (``cpixelcnn._C``).

Availability: input pixel p (raster order) is final after step p, so it is *available* from
step p + 1; constant positions (the padding) from step 0. An activation is available at the
latest availability of the inputs it reads (shifted convs, strided convs and transposed convs
each define which). At step t the C++ loop computes exactly the positions available at t, for
every op in forward order, then samples pixel t — whose parameters are available at a step
≤ t because the network is causal (checked here when the schedule is built).

The schedule depends only on the architecture and (H, W) and is cached; weights, FiLM γ/β and
noise are handed over per call. Layouts: activation caches are NHWC per image; conv weights are
rearranged to (kh, kw, Cin, Cout) so that the innermost loop runs over output channels. The CPU
engine keeps the input and the DMoL parameters whole and every other activation as a ring of
the few rows live at once (sized by a dry run over the schedule in C++); the CUDA engines take
every activation whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.utils import parametrize

from cpixelcnn.devices import float64_math
from cpixelcnn.layers import DownRightShiftedConv2d, DownShiftedConv2d, NiN
from cpixelcnn.model import RESOLUTION_STEP
from cpixelcnn.sampling.engines import ENGINES, Engine, auto_engine, engine_choices, unavailable_reason

# The op vocabulary is the C++ engines' (csrc/cached_sampler_types.h); ops are recorded here by
# name and written into the engines' op_spec by the names _C exports (SPEC_COLUMNS, OP_TYPES, ...).


class _Lowering:
    """Walks the model in forward order, emitting ops and availability maps."""

    def __init__(self, height: int, width: int, channels: int):
        self.nodes: list[tuple[int, int, int]] = []  # (C, H, W)
        self.avail: list[np.ndarray] = []
        self.ops: list[dict] = []
        hp = math.ceil(height / RESOLUTION_STEP) * RESOLUTION_STEP
        wp = math.ceil(width / RESOLUTION_STEP) * RESOLUTION_STEP
        avail = np.zeros((hp, wp), dtype=np.int64)  # padding: constant, available at once
        avail[:height, :width] = np.arange(height * width).reshape(height, width) + 1
        self.input = self._node(channels + 1, avail)

    def _node(self, channels: int, avail: np.ndarray) -> int:
        self.nodes.append((channels, *avail.shape))
        self.avail.append(avail)
        return len(self.nodes) - 1

    # -- the executor interface of ConditionalPixelCNN.topology --------------------------------------

    def conv(self, layer, x: int) -> int:
        return self._conv(layer, [x])

    def add(self, a: int, b: int) -> int:
        return self.elementwise("add", a, b)

    def upsample(self, layer, x: int) -> int:
        return self.deconv(layer, x)

    def output(self, layer, x: int) -> int:
        return self._conv(layer, [x], transform="elu")

    def gated_resnet(self, block, x: int, skips: list[int]) -> int:
        h = self._conv(block.conv_in, [x], transform="concat_elu")
        if skips:
            s = self._conv(block.nin_skip, skips, mode="concat" if len(skips) > 1 else "single", transform="concat_elu")
            h = self._conv(block.conv_out, [h, s], mode="sum", transform="concat_elu")
        else:
            h = self._conv(block.conv_out, [h], transform="concat_elu")
        return self.elementwise("gated", x, h, block=block)

    # -- ops over activation caches -------------------------------------------------------------

    def _conv(self, layer, inputs: list[int], mode: str = "single", transform: str = "none") -> int:
        if isinstance(layer, NiN):
            kh, kw, stride, pad_top, pad_left, shift = 1, 1, 1, 0, 0, "none"
            conv = layer.conv
        else:
            conv = layer.conv
            kh, kw = layer.kernel_size
            stride = conv.stride[0]
            pad_top = kh - 1
            if isinstance(layer, DownShiftedConv2d):
                pad_left, pad_right = (kw - 1) // 2, (kw - 1) // 2
                shift = "down" if layer.shift_output_down else "none"
            else:
                assert isinstance(layer, DownRightShiftedConv2d)
                pad_left, pad_right = kw - 1, 0
                shift = "right" if layer.shift_output_right else "none"
        _, h_in, w_in = self.nodes[inputs[0]]
        pad_right = 0 if isinstance(layer, NiN) else pad_right
        h_out = (h_in + pad_top - kh) // stride + 1
        w_out = (w_in + pad_left + pad_right - kw) // stride + 1
        src = np.maximum.reduce([self.avail[n] for n in inputs])
        padded = np.zeros((h_in + pad_top + kh, w_in + pad_left + kw + stride), dtype=np.int64)
        padded[pad_top : pad_top + h_in, pad_left : pad_left + w_in] = src
        out = np.zeros((h_out, w_out), dtype=np.int64)
        for ki in range(kh):
            for kj in range(kw):
                out = np.maximum(out, padded[ki : ki + stride * h_out : stride, kj : kj + stride * w_out : stride][:h_out, :w_out])
        if shift == "down":
            out = np.concatenate([np.zeros((1, w_out), np.int64), out[:-1]], axis=0)
        elif shift == "right":
            out = np.concatenate([np.zeros((h_out, 1), np.int64), out[:, :-1]], axis=1)
        cin_eff = sum(self.nodes[n][0] for n in inputs) if mode == "concat" else self.nodes[inputs[0]][0]
        if transform == "concat_elu":
            cin_eff *= 2
        weight = conv.weight.detach()  # (Cout, Cin, kh, kw); weight norm applied
        assert weight.shape[1] == cin_eff, (weight.shape, cin_eff)
        node = self._node(weight.shape[0], out)
        self.ops.append(
            dict(
                type="conv",
                out=node,
                inputs=inputs,
                mode=mode,
                transform=transform,
                kh=kh,
                kw=kw,
                stride=stride,
                pad_top=pad_top,
                pad_left=pad_left,
                shift=shift,
                cin_eff=cin_eff,
                weight=weight.permute(2, 3, 1, 0),
                bias=conv.bias.detach(),
            )
        )
        return node

    def deconv(self, layer, source: int) -> int:
        kh, kw = layer.kernel_size
        stride = layer.deconv.stride[0]
        crop_left = layer.crop_left
        _, h_in, w_in = self.nodes[source]
        h_out, w_out = stride * h_in, stride * w_in
        full_h = (h_in - 1) * stride + kh + 1
        full_w = (w_in - 1) * stride + kw + 1
        full = np.zeros((full_h, full_w), dtype=np.int64)
        for ki in range(kh):
            for kj in range(kw):
                view = full[ki : ki + stride * h_in : stride, kj : kj + stride * w_in : stride]
                np.maximum(view, self.avail[source], out=view)
        out = full[:h_out, crop_left : crop_left + w_out]
        weight = layer.deconv.weight.detach()  # (Cin, Cout, kh, kw)
        node = self._node(weight.shape[1], np.ascontiguousarray(out))
        self.ops.append(
            dict(
                type="deconv",
                out=node,
                inputs=[source],
                mode="single",
                transform="none",
                kh=kh,
                kw=kw,
                stride=stride,
                pad_top=0,
                pad_left=crop_left,
                shift="none",
                cin_eff=weight.shape[0],
                weight=weight.permute(2, 3, 0, 1),
                bias=layer.deconv.bias.detach(),
            )
        )
        return node

    def elementwise(self, kind: str, a: int, b: int, block=None) -> int:
        channels = self.nodes[a][0]
        node = self._node(channels, np.maximum(self.avail[a], self.avail[b]))
        self.ops.append(dict(type=kind, out=node, inputs=[a, b], block=block))
        return node


def _lower(model, height: int, width: int) -> _Lowering:
    """The model's own topology (``ConditionalPixelCNN.topology``), recorded as ops."""
    g = _Lowering(height, width, model.in_channels)
    g.params = model.topology(g, g.input)
    return g


def _architecture_key(model) -> tuple:
    """What the schedule depends on: the topology (the model's class) and the config's shapes."""
    cfg = model.config
    return (type(model),) + tuple(sorted((k, v) for k, v in cfg.items() if k not in ("dropout", "weight_norm")))


_SCHEDULES: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}


def _schedule(g: _Lowering, key: tuple, height: int, width: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per op: positions sorted by availability and per-step offsets (cached per architecture, H, W)."""
    cache_key = (key, height, width)
    if cache_key in _SCHEDULES:
        return _SCHEDULES[cache_key]
    steps = height * width
    params_avail = g.avail[g.params][:height, :width].reshape(-1)
    late = np.nonzero(params_avail > np.arange(steps))[0]
    if late.size:  # would mean a causality bug in the network
        raise RuntimeError(f"pixel {int(late[0])} would need its own or later pixels: the model is not causal")
    positions, offsets = [], []
    for op in g.ops:
        avail = g.avail[op["out"]].reshape(-1)
        order = np.argsort(avail, kind="stable")
        counts = np.bincount(np.minimum(avail, steps), minlength=steps + 1)[:steps]  # never-needed positions dropped
        positions.append(torch.from_numpy(order.astype(np.int32)))
        offsets.append(torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)))
    if len(_SCHEDULES) >= 16:
        _SCHEDULES.pop(next(iter(_SCHEDULES)))
    _SCHEDULES[cache_key] = (positions, offsets)
    return positions, offsets


def kernel_launches(model, height: int, width: int) -> int:
    """Kernel launches of one CUDA sampling run (any batch): one per (op, step) that has positions
    becoming ready at that step, plus one sampling launch per pixel — the launch order of
    csrc/cached_sampler_launch.h. What a GPU pays launch (or graph-node) latency for."""
    with torch.no_grad(), parametrize.cached():
        g = _lower(model, height, width)
        _, offsets = _schedule(g, _architecture_key(model), height, width)
    return sum(int((off[1:] > off[:-1]).sum()) for off in offsets) + height * width


def _engine_for(engine: str, device: torch.device, ext) -> Engine:
    """The engine that will run (``auto``: :func:`auto_engine`); errors name what is missing."""
    if engine not in engine_choices():
        raise ValueError(f"engine must be one of {', '.join(engine_choices())}, got {engine!r}")
    chosen = auto_engine(device.type) if engine == "auto" else ENGINES[engine]
    if chosen is None:
        raise RuntimeError(f"method='cached' runs on {' or '.join(sorted({e.device.upper() for e in ENGINES.values()}))} models, not {device.type}")
    if chosen.device != device.type:
        raise RuntimeError(f"engine {chosen.name!r} needs a {chosen.device.upper()} model, the model is on {device}")
    reason = unavailable_reason(chosen.name, ext)
    if reason is not None:
        raise RuntimeError(reason)
    return chosen


def cached_sample(
    model,
    labels: torch.Tensor | None,
    batch: int,
    height: int,
    width: int,
    noise: torch.Tensor,
    return_params: bool = False,
    engine: str = "auto",
    prefix: torch.Tensor | None = None,
    prefix_pixels: int = 0,
    temperature: float = 1.0,
):
    """Run the cached sampler. Returns images (B, C, H, W) in the model's dtype — and, with
    ``return_params``, the DMoL parameters (B, n_out, H, W) it sampled each pixel from.

    ``engine``: ``"cpu"`` the C++ loop (CPU model); ``"cuda"`` the CUDA kernels (CUDA model, an
    extension built with CUDA); ``"cuda-emulated"`` those same CUDA kernels and launch order
    compiled as host C++ and run on a CPU model — slow, exact, for checking the GPU code where
    there is no GPU; ``"auto"`` picks ``cuda`` or ``cpu`` by the model's device.
    ``noise`` is :func:`cpixelcnn.sampling.draw_noise` (B, H, W, 1 + C) float64.
    ``prefix`` (B, C, H, W) on the grid, ``prefix_pixels``: image completion — the first
    ``prefix_pixels`` pixels in raster order are taken from ``prefix``, not sampled (validated
    by :func:`cpixelcnn.sample`, which callers should use). ``temperature``: as in :func:`cpixelcnn.sample`.
    """
    from cpixelcnn._extension import require_extension

    ext = require_extension("the cached sampler (method='cached')")
    device = next(model.parameters()).device
    engine = _engine_for(engine, device, ext)
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"method='cached' supports float32 and float64 models, not {dtype}")
    with torch.no_grad(), parametrize.cached():
        g = _lower(model, height, width)  # cheap: op list, weight views, availability maps
        positions, offsets = _schedule(g, _architecture_key(model), height, width)
        inputs = _sampler_inputs(ext, model, g, labels, dtype, device, held=engine.name == "cpu", batch=batch)
        inputs.positions, inputs.offsets = [p.to(device) for p in positions], offsets
        inputs.height, inputs.width, inputs.channels, inputs.bits = height, width, model.in_channels, model.bits
        nodes = inputs.nodes  # the engines write into these tensors
        nodes[g.input][:, :height, :width, -1] = 1.0  # the ones channel marks the image
        if prefix_pixels:  # the given pixels of a completion, in place before the loop starts
            given = torch.zeros(batch, height * width, model.in_channels, dtype=dtype, device=device)
            given[:, :prefix_pixels] = prefix.to(device=device, dtype=dtype).flatten(2).transpose(1, 2)[:, :prefix_pixels]
            nodes[g.input][:, :height, :width, : model.in_channels] = given.view(batch, height, width, model.in_channels)
        inputs.first_sampled = int(prefix_pixels)
        inputs.temperature = float(temperature)
        with float64_math():  # the engines run on CPU or CUDA, which have float64: the draws are float64 there
            inputs.noise = noise.to(device=device, dtype=torch.float64).contiguous()
            getattr(ext, engine.function)(inputs)  # CUDA: the whole loop captured into one CUDA graph
        images = nodes[g.input][:, :height, :width, : model.in_channels].permute(0, 3, 1, 2).contiguous()
        if return_params:  # each position of the params cache was computed once, at its pixel's step
            return images, nodes[g.params][:, :height, :width].permute(0, 3, 1, 2).contiguous()
        return images


def _sampler_inputs(ext, model, g: _Lowering, labels, dtype: torch.dtype, device: torch.device, held: bool, batch: int):
    """``_C.SamplerInputs`` with the lowered model filled in by name: the op_spec, per-op weights,
    biases and FiLM γ/β, and the activation caches — zero rows for the nodes a ``held`` engine
    (the CPU one) keeps itself as rings of the few rows live at once; the CUDA engines take every node whole."""
    column = {name: k for k, name in enumerate(ext.SPEC_COLUMNS)}
    vocabulary = {"type": ext.OP_TYPES, "mode": ext.INPUT_MODES, "transform": ext.TRANSFORMS, "shift": ext.SHIFTS}
    cond = model.class_vector(labels, dtype) if labels is not None else None
    spec = torch.zeros(len(g.ops), len(column), dtype=torch.int64)
    empty = torch.empty(0, dtype=dtype, device=device)
    inputs = ext.SamplerInputs()
    weights, biases, gammas, betas = [], [], [], []
    for k, op in enumerate(g.ops):
        ins = op["inputs"] + [op["inputs"][0]] * (2 - len(op["inputs"]))
        fields = dict(type=op["type"], out=op["out"], in0=ins[0], in1=ins[1])
        if op["type"] in ("conv", "deconv"):
            fields |= {name: op[name] for name in ("mode", "transform", "kh", "kw", "stride", "pad_top", "pad_left", "shift", "cin_eff")}
        for name, value in fields.items():
            spec[k, column[name]] = vocabulary[name][value] if name in vocabulary else value
        conv = op["type"] in ("conv", "deconv")
        weights.append(op["weight"].to(dtype).contiguous() if conv else empty)
        biases.append(op["bias"].to(dtype).contiguous() if conv else empty)  # already on the model's device
        gamma, beta = op["block"].film_params(cond) if op["type"] == "gated" else (None, None)
        gammas.append(gamma.to(dtype).contiguous() if gamma is not None else empty)
        betas.append(beta.to(dtype).contiguous() if beta is not None else empty)
    inputs.op_spec, inputs.weights, inputs.biases, inputs.gammas, inputs.betas = spec, weights, biases, gammas, betas
    inputs.nodes = [
        torch.zeros(batch, 0 if held and k not in (g.input, g.params) else h, w, c, dtype=dtype, device=device) for k, (c, h, w) in enumerate(g.nodes)
    ]
    inputs.node_heights = [h for _, h, _ in g.nodes]
    inputs.input_node, inputs.params_node = g.input, g.params
    return inputs
