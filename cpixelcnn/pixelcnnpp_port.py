"""Import checkpoints of the widely used PyTorch PixelCNN++ port (pclucas14/pixel-cnn-pp).

That port's ``PixelCNN(nr_resnet, nr_filters, nr_logistic_mix, input_channels)`` is layer for
layer the unconditional :class:`~cpixelcnn.ConditionalPixelCNN` (``num_classes=0``); only the
names differ. Its weight-normalised layers store ``weight_g`` / ``weight_v`` (or, with newer
PyTorch, ``parametrizations.weight.original0`` / ``original1``); some versions of its ``nin``
are plain ``nn.Linear`` (``weight``). Each tensor is mapped to our layer, weight norm folded into
the effective weight ``g · v / ‖v‖`` exactly as the port computes it (norm over every axis but
0, which for its transposed convs means per *input* channel), then re-expressed in our layers'
own parametrisation — so outputs agree to float32 rounding.

Where we differ by design (and the importer says so): our gated-resnet dropout is element-wise
as in the paper, the port's is channel-wise ``Dropout2d``. It only matters when training on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from cpixelcnn.model import ConditionalPixelCNN

PORT_NOTE = (
    "imported from the pclucas14/pixel-cnn-pp port; outputs match it in eval mode. Dropout here is "
    "element-wise (paper), the port's is channel-wise Dropout2d: only further training differs."
)

# port module path (regex) -> our module path template, and the kind of layer
_RULES: list[tuple[str, str, str]] = [
    (r"u_init\.conv", "u_init.conv", "conv"),
    (r"ul_init\.0\.conv", "ul_init_above.conv", "conv"),
    (r"ul_init\.1\.conv", "ul_init_left.conv", "conv"),
    (r"up_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.conv_input\.conv", "up_stages.{0}.{1}_stream.{2}.conv_in.conv", "conv"),
    (r"up_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.conv_out\.conv", "up_stages.{0}.{1}_stream.{2}.conv_out.conv", "conv"),
    (r"up_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.nin_skip\.lin_a", "up_stages.{0}.{1}_stream.{2}.nin_skip.conv", "linear"),
    (r"down_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.conv_input\.conv", "down_stages.{0}.{1}_stream.{2}.conv_in.conv", "conv"),
    (r"down_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.conv_out\.conv", "down_stages.{0}.{1}_stream.{2}.conv_out.conv", "conv"),
    (r"down_layers\.(\d+)\.(u|ul)_stream\.(\d+)\.nin_skip\.lin_a", "down_stages.{0}.{1}_stream.{2}.nin_skip.conv", "linear"),
    (r"downsize_u_stream\.(\d+)\.conv", "downsize_u.{0}.conv", "conv"),
    (r"downsize_ul_stream\.(\d+)\.conv", "downsize_ul.{0}.conv", "conv"),
    (r"upsize_u_stream\.(\d+)\.deconv", "upsize_u.{0}.deconv", "deconv"),
    (r"upsize_ul_stream\.(\d+)\.deconv", "upsize_ul.{0}.deconv", "deconv"),
    (r"nin_out\.lin_a", "nin_out.conv", "linear"),
]
_LEAVES = {"weight_g": "g", "weight_v": "v", "weight": "w", "bias": "b"}


class PortImportError(ValueError):
    """A checkpoint that is not a state dict of the port, or does not fit the architecture."""


def _read_state_dict(source) -> dict[str, torch.Tensor]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)  # never arbitrary pickle
        except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PortImportError(f"{path} is not a loadable PyTorch state dict: {first}") from None
    if isinstance(source, dict):
        for wrapper in ("state_dict", "model_state_dict", "model"):
            if wrapper in source and isinstance(source[wrapper], dict):
                source = source[wrapper]
                break
    if not isinstance(source, dict) or not source:
        raise PortImportError("the checkpoint is not a state dict (expected a non-empty mapping of names to tensors)")
    state = {}
    for key, value in source.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise PortImportError(f"the checkpoint is not a state dict: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module.") :] if key.startswith("module.") else key] = value  # DataParallel prefix
    return state


def _group(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, str, dict[str, torch.Tensor]]]:
    """Port tensors grouped by layer: our path -> (port path, kind, {g|v|w|b: tensor})."""
    layers: dict[str, tuple[str, str, dict[str, torch.Tensor]]] = {}
    for key in sorted(state):
        leaf = next((name for name in _LEAVES if key.endswith("." + name)), None)
        if leaf is None:
            raise PortImportError(f"unexpected key {key!r}: not a tensor of the PixelCNN++ port")
        role, port_path = _LEAVES[leaf], key[: -len(leaf) - 1]
        for pattern, target, kind in _RULES:
            m = re.fullmatch(pattern, port_path)
            if m:
                ours = target.format(*m.groups())
                layers.setdefault(ours, (port_path, kind, {}))[2][role] = state[key]
                break
        else:
            raise PortImportError(f"unexpected key {key!r}: not a layer of the PixelCNN++ port")
    return layers


def _effective_weight(port_path: str, kind: str, parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The weight the port computes: g · v / ‖v‖ over every axis but 0, or the plain weight."""
    if "w" in parts:
        w = parts["w"]
    else:
        g, v = parts["g"].double(), parts["v"].double()
        norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
        w = (g.reshape(norm.shape) * v / norm).to(parts["v"].dtype)
    return w[:, :, None, None] if kind == "linear" else w  # Linear over channels == 1x1 conv


def port_state_dict_shapes(
    nr_resnet: int, nr_filters: int, nr_logistic_mix: int, in_channels: int = 3, nin_weight_norm: bool = True
) -> dict[str, tuple[int, ...]]:
    """The port's state-dict keys and shapes for an architecture (``weight_g``/``weight_v`` naming).

    Conv weights are (out, in, kh, kw); transposed convs (in, out, kh, kw) with ``weight_g`` per
    input channel; ``nin`` layers are Linear (out, in), weight-normalised or plain.
    """
    f = nr_filters
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, kh, kw):
        shapes[f"{name}.weight_g"] = (cout, 1, 1, 1)
        shapes[f"{name}.weight_v"] = (cout, cin, kh, kw)
        shapes[f"{name}.bias"] = (cout,)

    def deconv(name, cin, cout, kh, kw):
        shapes[f"{name}.weight_g"] = (cin, 1, 1, 1)
        shapes[f"{name}.weight_v"] = (cin, cout, kh, kw)
        shapes[f"{name}.bias"] = (cout,)

    def nin(name, cin, cout):
        if nin_weight_norm:
            shapes[f"{name}.weight_g"] = (cout, 1)
            shapes[f"{name}.weight_v"] = (cout, cin)
        else:
            shapes[f"{name}.weight"] = (cout, cin)
        shapes[f"{name}.bias"] = (cout,)

    def gated(name, kh, kw, skip):
        conv(f"{name}.conv_input.conv", 2 * f, f, kh, kw)
        if skip:
            nin(f"{name}.nin_skip.lin_a", 2 * skip * f, f)
        conv(f"{name}.conv_out.conv", 2 * f, 2 * f, kh, kw)

    cin = in_channels + 1
    conv("u_init.conv", cin, f, 2, 3)
    conv("ul_init.0.conv", cin, f, 1, 3)
    conv("ul_init.1.conv", cin, f, 2, 1)
    for s in range(3):
        for i in range(nr_resnet):
            gated(f"up_layers.{s}.u_stream.{i}", 2, 3, 0)
            gated(f"up_layers.{s}.ul_stream.{i}", 2, 2, 1)
    for s, n in enumerate([nr_resnet, nr_resnet + 1, nr_resnet + 1]):
        for i in range(n):
            gated(f"down_layers.{s}.u_stream.{i}", 2, 3, 1)
            gated(f"down_layers.{s}.ul_stream.{i}", 2, 2, 2)
    for i in range(2):
        conv(f"downsize_u_stream.{i}.conv", f, f, 2, 3)
        conv(f"downsize_ul_stream.{i}.conv", f, f, 2, 2)
        deconv(f"upsize_u_stream.{i}.deconv", f, f, 2, 3)
        deconv(f"upsize_ul_stream.{i}.deconv", f, f, 2, 2)
    nin("nin_out.lin_a", f, (10 if in_channels == 3 else 3) * nr_logistic_mix)
    return shapes


def _normalise_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Newer PyTorch's weight-norm parametrisation names → the classic weight_g / weight_v."""
    out = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        out[key] = value
    return out


def architecture_from_state(state: dict[str, torch.Tensor]) -> dict:
    """nr_resnet, nr_filters, nr_logistic_mix and in_channels from tensor shapes."""
    if "u_init.conv.weight_v" not in state:
        raise PortImportError("missing key 'u_init.conv.weight_v': cannot infer the architecture")
    u_init = tuple(state["u_init.conv.weight_v"].shape)
    if len(u_init) != 4:
        raise PortImportError(f"shape mismatch at 'u_init.conv.weight_v': expected a 4-D conv weight, got {u_init}")
    nr_filters, in_channels = u_init[0], u_init[1] - 1
    if in_channels not in (1, 3):
        raise PortImportError(
            f"shape mismatch at 'u_init.conv.weight_v': {u_init[1]} input channels means {in_channels} image channels (1 or 3 supported)"
        )
    out_key = "nin_out.lin_a.weight_v" if "nin_out.lin_a.weight_v" in state else "nin_out.lin_a.weight"
    if out_key not in state:
        raise PortImportError("missing key 'nin_out.lin_a.weight_v': cannot infer the number of mixtures")
    n_out = state[out_key].shape[0]
    per = 10 if in_channels == 3 else 3
    if n_out % per:
        raise PortImportError(f"shape mismatch at {out_key!r}: {n_out} outputs is not a multiple of {per}")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"up_layers\.0\.u_stream\.(\d+)\.", k))}
    if not blocks:
        raise PortImportError("missing key 'up_layers.0.u_stream.0.conv_input.conv.weight_v'")
    # names are checked before any shape is computed from them: block indices 0..n-1, n and widths bounded
    from cpixelcnn.model_config import bounds_of

    deepest = bounds_of("nr_resnet")[1]
    if max(blocks) + 1 != len(blocks) or len(blocks) > deepest:
        bad = max(blocks) if max(blocks) + 1 != len(blocks) else min(b for b in blocks if b >= deepest)
        key = next(k for k in state if k.startswith(f"up_layers.0.u_stream.{bad}."))
        raise PortImportError(f"unexpected key {key!r} (resnet blocks must be numbered 0..n-1 with n <= {deepest})")
    for name, value in (("nr_filters", nr_filters), ("nr_logistic_mix", n_out // per)):
        low, high = bounds_of(name)
        if not low <= value <= high:
            raise PortImportError(f"{name} = {value} read from the tensors is outside [{low}, {high}]")
    return dict(in_channels=in_channels, nr_filters=nr_filters, nr_logistic_mix=n_out // per, nr_resnet=max(blocks) + 1)


def _check_keys(state: dict[str, torch.Tensor], arch: dict) -> None:
    """Missing, mis-shaped, then unexpected keys: raise on the first, naming it."""
    expected = port_state_dict_shapes(**arch)
    for key, shape in expected.items():
        if key not in state:
            plain = key.replace(".weight_v", ".weight").replace(".weight_g", ".weight")
            if ".lin_a." in key and plain in state:  # a port version with plain-Linear nin layers
                continue
            raise PortImportError(f"missing key {key!r}")
        if tuple(state[key].shape) != shape:
            raise PortImportError(f"shape mismatch at {key!r}: {tuple(state[key].shape)}, expected {shape}")
    for key, value in state.items():
        if key in expected:
            continue
        if key.endswith(".lin_a.weight") and f"{key}_v" in expected:
            shape = expected[f"{key}_v"]
            if tuple(value.shape) != shape:
                raise PortImportError(f"shape mismatch at {key!r}: {tuple(value.shape)}, expected {shape}")
            continue
        raise PortImportError(f"unexpected key {key!r}")


@torch.no_grad()
def import_pixelcnnpp(path_or_state_dict, dropout: float = 0.5, weight_norm: bool = True, **arch) -> ConditionalPixelCNN:
    """Build an unconditional ConditionalPixelCNN carrying the port's weights.

    path_or_state_dict: a ``.pth`` file (read with ``weights_only=True``) or a state dict; a
        DataParallel ``module.`` prefix and a ``{"state_dict": …}`` wrapper are accepted.
    arch: ``nr_resnet``, ``nr_filters``, ``nr_logistic_mix``, ``in_channels`` — inferred from the
        tensor shapes when omitted; given values must agree with them.
    Raises PortImportError (a ValueError) naming the first missing, unexpected or mis-shaped key.
    """
    state = _normalise_names(_read_state_dict(path_or_state_dict))
    inferred = architecture_from_state(state)
    for name, value in arch.items():
        if name not in inferred:
            raise TypeError(f"unknown architecture argument {name!r} (known: {', '.join(inferred)})")
        if value is not None and value != inferred[name]:
            raise PortImportError(f"{name}={value} was given but the checkpoint's tensors say {name}={inferred[name]}")
    _check_keys(state, inferred)
    model = ConditionalPixelCNN(num_classes=0, dropout=dropout, weight_norm=weight_norm, **inferred)
    modules = dict(model.named_modules())
    for ours, (port_path, kind, parts) in _group(state).items():
        module = modules[ours]
        _set_weight(module, _effective_weight(port_path, kind, parts))
        module.bias.copy_(parts["b"])
    return model.eval()


def _set_weight(module: torch.nn.Module, weight: torch.Tensor) -> None:
    """Give ``module`` this effective weight, in whatever parametrisation it uses."""
    if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
        originals = module.parametrizations.weight
        dim = 1 if isinstance(module, torch.nn.ConvTranspose2d) else 0
        other = [d for d in range(weight.dim()) if d != dim]
        originals.original0.copy_(torch.linalg.vector_norm(weight, dim=other, keepdim=True))  # g
        originals.original1.copy_(weight)  # v: then g · v/‖v‖ = weight
    else:
        module.weight.copy_(weight)
