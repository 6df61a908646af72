"""Class-conditional PixelCNN++.

The network of Salimans et al. (2017): two streams — ``u`` sees the rows above a pixel
(down-shifted convs), ``ul`` sees the rows above and the pixels to its left (down-right-shifted
convs). The up pass runs three resolution stages of ``nr_resnet`` gated resnets, halving the
resolution twice with stride-2 convs; the down pass runs stages of ``nr_resnet``,
``nr_resnet + 1``, ``nr_resnet + 1`` blocks, doubling it back with transposed convs, and every
up-pass output reaches its mirror block through a skip connection. ``nin(elu(ul))`` gives the
discretized-logistic-mixture parameters of every pixel.

Class conditioning (van den Oord et al. 2016; FiLM, Perez et al. 2018) acts inside gated resnets
through :func:`cpixelcnn.ops.gated_film.gated_film`; ``fusion`` picks which of them get it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from cpixelcnn.layers import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    GatedResnet,
    NiN,
)
from cpixelcnn.model_config import CONDITIONINGS, EMBEDDINGS, FUSIONS, ModelConfig  # noqa: F401  (the choices, public here too)
from cpixelcnn.ops.backend import check_backend
from cpixelcnn.ops.dmol import params_per_mixture

RESOLUTION_STEP = 4  # two stride-2 down-samplings: H and W are padded up to a multiple of 4


class ClassEmbedding(nn.Module):
    """Labels (B,) → class vector (B, out_dim): one-hot or learned, then for FiLM the shared first
    layer of the 2-layer MLP whose second layer is each block's own head."""

    def __init__(self, num_classes: int, embedding: str, embedding_dim: int | None, conditioning: str, film_hidden: int):
        super().__init__()
        self.num_classes = num_classes
        if embedding == "onehot":
            if embedding_dim not in (None, num_classes):
                raise ValueError(f"embedding='onehot' has dimension num_classes={num_classes}; got embedding_dim={embedding_dim}")
            self.embed = None
            dim = num_classes
        else:
            dim = 32 if embedding_dim is None else embedding_dim  # bounded by ModelConfig
            self.embed = nn.Embedding(num_classes, dim)
        self.trunk = nn.Sequential(nn.Linear(dim, film_hidden), nn.SiLU()) if conditioning == "film" else None
        self.out_dim = film_hidden if conditioning == "film" else dim

    def forward(self, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.embed is None:
            h = F.one_hot(labels, self.num_classes).to(dtype)
        else:
            h = self.embed(labels).to(dtype)
        return h if self.trunk is None else self.trunk(h)


class UpStage(nn.Module):
    """``n`` pairs of gated resnets; ``ul`` blocks take the new ``u`` as skip input."""

    def __init__(self, n: int, nr_filters: int, dropout: float, condition, cond_dim: int, weight_norm: bool):
        super().__init__()
        kw = dict(dropout=dropout, condition=condition, cond_dim=cond_dim, weight_norm=weight_norm)
        self.u_stream = nn.ModuleList([GatedResnet(nr_filters, DownShiftedConv2d, 0, **kw) for _ in range(n)])
        self.ul_stream = nn.ModuleList([GatedResnet(nr_filters, DownRightShiftedConv2d, 1, **kw) for _ in range(n)])


class DownStage(nn.Module):
    """``n`` pairs of gated resnets; each takes the mirror up-pass outputs as skip inputs."""

    def __init__(self, n: int, nr_filters: int, dropout: float, condition, cond_dim: int, weight_norm: bool):
        super().__init__()
        kw = dict(dropout=dropout, condition=condition, cond_dim=cond_dim, weight_norm=weight_norm)
        self.u_stream = nn.ModuleList([GatedResnet(nr_filters, DownShiftedConv2d, 1, **kw) for _ in range(n)])
        self.ul_stream = nn.ModuleList([GatedResnet(nr_filters, DownRightShiftedConv2d, 2, **kw) for _ in range(n)])


class ConditionalPixelCNN(nn.Module):
    """Class-conditional PixelCNN++.

    ``ConditionalPixelCNN(config)`` with a :class:`~cpixelcnn.model_config.ModelConfig`, or
    ``ConditionalPixelCNN(**settings)`` with its fields as keywords (``config`` first, then the
    keywords over it); ``backend`` and ``checkpoint_activations`` are run-time attributes.

    Settings (keyword names are stable API; defaults, bounds and choices are ModelConfig's):
        in_channels: 1 (grey) or 3 (RGB).
        num_classes: number of classes; 0 gives an unconditional model (call with labels=None).
        nr_resnet, nr_filters, nr_logistic_mix: depth per stage, width F, mixture components K.
        conditioning: ``"film"`` (per-channel γ, β from a 2-layer MLP, neutral at init) or
            ``"additive"`` (per-channel class bias, γ = 1).
        fusion: which gated resnets are conditioned — ``"early"``: those of the first
            (full-resolution) up-pass stage; ``"middle"``: all; ``"late"``: those of the last
            down-pass stage, just before the output.
        embedding: ``"onehot"`` or ``"learned"`` (nn.Embedding of ``embedding_dim``, default 32).
        dropout: dropout rate inside gated resnets (training mode only).
        bits: bit depth of the modelled images (8 for ordinary images).
        backend: ``"eager"`` | ``"triton"`` | ``"auto"``; a plain attribute, changeable at run time.
        checkpoint_activations: in training mode with gradients on, recompute each gated resnet in
            the backward pass instead of keeping its activations (non-reentrant
            ``torch.utils.checkpoint``; the RNG state is restored, so dropout masks are the same);
            a plain attribute, changeable at run time.
        weight_norm: weight-normalised convs as in the paper (default True).
        film_hidden: width of the FiLM MLP's hidden layer.

    ``model(x, labels)``: x (B, C, H, W) in [-1, 1], labels (B,) integer → DMoL parameters
    (B, n_out, H, W) with n_out = 10·K (RGB) or 3·K (grey). Any H, W ≥ 1 works: inputs are padded
    at the bottom/right to a multiple of 4 (padding comes after every real pixel in raster
    order, so causality is untouched) and the output is cropped back.
    """

    def __init__(self, config: ModelConfig | None = None, /, *, backend: str = "eager", checkpoint_activations: bool = False, **settings):
        super().__init__()
        config = dataclasses.replace(config or ModelConfig(), **settings).check()
        self.config = config.as_dict()  # what a run's config.json holds
        self.in_channels, self.num_classes, self.bits = config.in_channels, config.num_classes, config.bits
        self.nr_resnet, self.nr_filters, self.nr_logistic_mix = config.nr_resnet, config.nr_filters, config.nr_logistic_mix
        self.backend = backend
        self.checkpoint_activations = bool(checkpoint_activations)
        self.n_out = params_per_mixture(config.in_channels) * config.nr_logistic_mix
        conditional = config.num_classes > 0
        self.class_embedding = (
            ClassEmbedding(config.num_classes, config.embedding, config.embedding_dim, config.conditioning, config.film_hidden)
            if conditional
            else None
        )
        cond_dim, condition = (self.class_embedding.out_dim, config.conditioning) if conditional else (0, None)
        self._build_streams(config, cond_dim, condition)

    def _build_streams(self, config: ModelConfig, cond_dim: int, condition: str | None):
        """The paper's network: the u (down-shifted) and ul (down-right-shifted) streams' first
        convolutions, three up stages of [n, n, n] gated resnets with two stride-2 convolutions
        between them, three down stages of [n, n+1, n+1] with two transposed ones, the output NiN.
        ``fusion`` says which stages get the class (``condition``)."""
        in_channels, nr_resnet, f, fusion = config.in_channels, config.nr_resnet, config.nr_filters, config.fusion
        dropout, wn = config.dropout, config.weight_norm
        stage_kw = dict(nr_filters=f, dropout=dropout, cond_dim=cond_dim, weight_norm=wn)
        cin = in_channels + 1  # the image plus a constant ones channel that marks where the image is
        self.u_init = DownShiftedConv2d(cin, f, (2, 3), shift_output_down=True, weight_norm=wn)
        self.ul_init_above = DownShiftedConv2d(cin, f, (1, 3), shift_output_down=True, weight_norm=wn)
        self.ul_init_left = DownRightShiftedConv2d(cin, f, (2, 1), shift_output_right=True, weight_norm=wn)
        up_conditioned = [fusion == "middle" or (fusion == "early" and s == 0) for s in range(3)]
        self.up_stages = nn.ModuleList([UpStage(nr_resnet, condition=condition if on else None, **stage_kw) for on in up_conditioned])
        self.downsize_u = nn.ModuleList([DownShiftedConv2d(f, f, (2, 3), stride=2, weight_norm=wn) for _ in range(2)])
        self.downsize_ul = nn.ModuleList([DownRightShiftedConv2d(f, f, (2, 2), stride=2, weight_norm=wn) for _ in range(2)])
        down_conditioned = [fusion == "middle" or (fusion == "late" and s == 2) for s in range(3)]
        self.down_stages = nn.ModuleList(
            [
                DownStage(n, condition=condition if on else None, **stage_kw)
                for n, on in zip([nr_resnet, nr_resnet + 1, nr_resnet + 1], down_conditioned)
            ]
        )
        self.upsize_u = nn.ModuleList([DownShiftedConvTranspose2d(f, f, (2, 3), weight_norm=wn) for _ in range(2)])
        self.upsize_ul = nn.ModuleList([DownRightShiftedConvTranspose2d(f, f, (2, 2), weight_norm=wn) for _ in range(2)])
        self.nin_out = NiN(f, self.n_out, weight_norm=wn)

    # -- run-time backend switch -------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        self._backend = check_backend(value)

    # -- input checks ------------------------------------------------------------------------
    def check_inputs(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Raise a one-line error for inputs this model cannot take."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"x must be a tensor of shape (B, C, H, W), got {getattr(x, 'shape', type(x).__name__)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be floating point in [-1, 1], got dtype {x.dtype}")
        b, c, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(f"x has {c} channels but the model takes {self.in_channels}")
        if b < 1 or h < 1 or w < 1:
            raise ValueError(f"x must have batch, height and width >= 1, got {tuple(x.shape)}")
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError("this model is unconditional (num_classes=0): call it with labels=None")
            return
        if labels is None:
            raise ValueError(f"this model is class-conditional ({self.num_classes} classes): labels are required")
        if not isinstance(labels, torch.Tensor) or labels.dtype in (torch.bool,) or labels.is_floating_point() or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor (int64), got {getattr(labels, 'dtype', type(labels).__name__)}")
        if tuple(labels.shape) != (b,):
            raise ValueError(f"labels must have shape (B,) = ({b},), got {tuple(labels.shape)}")
        if not torch.compiler.is_compiling():
            lo, hi = torch.stack([labels.min(), labels.max()]).tolist()
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got values from {lo} to {hi}")

    # -- the network -------------------------------------------------------------------------
    def class_vector(self, labels: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """(B, cond_dim) input to the blocks' conditioning heads, or None if unconditional."""
        if self.class_embedding is None or labels is None:
            return None
        return self.class_embedding(labels.long(), dtype)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1], labels (B,) → DMoL params (B, n_out, H, W)."""
        self.check_inputs(x, labels)
        b, _, h, w = x.shape
        hp = math.ceil(h / RESOLUTION_STEP) * RESOLUTION_STEP
        wp = math.ceil(w / RESOLUTION_STEP) * RESOLUTION_STEP
        x = torch.cat([x, x.new_ones(b, 1, h, w)], dim=1)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))  # zeros in every channel: "no image here"
        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()
        params = self.topology(EagerOps(self.class_vector(labels, x.dtype), self.backend, recompute), x)
        return params[:, :, :h, :w]

    def topology(self, ops, x):
        """The network, written once over an executor ``ops`` (:class:`EagerOps` computes it; the
        cached sampler's lowering records it as ops over activation caches). ``x``: the padded input
        with its ones channel (B, C + 1, H', W'), or the executor's handle for it."""
        # up pass: keep every output for the skip connections
        u_list = [ops.conv(self.u_init, x)]
        ul_list = [ops.add(ops.conv(self.ul_init_above, x), ops.conv(self.ul_init_left, x))]
        for s, stage in enumerate(self.up_stages):
            for u_block, ul_block in zip(stage.u_stream, stage.ul_stream):
                u_list.append(ops.gated_resnet(u_block, u_list[-1], []))
                ul_list.append(ops.gated_resnet(ul_block, ul_list[-1], [u_list[-1]]))
            if s < 2:
                u_list.append(ops.conv(self.downsize_u[s], u_list[-1]))
                ul_list.append(ops.conv(self.downsize_ul[s], ul_list[-1]))

        # down pass: consume the up-pass outputs in reverse
        u, ul = u_list.pop(), ul_list.pop()
        for s, stage in enumerate(self.down_stages):
            for u_block, ul_block in zip(stage.u_stream, stage.ul_stream):
                u = ops.gated_resnet(u_block, u, [u_list.pop()])
                ul = ops.gated_resnet(ul_block, ul, [u, ul_list.pop()])
            if s < 2:
                u = ops.upsample(self.upsize_u[s], u)
                ul = ops.upsample(self.upsize_ul[s], ul)
        assert not u_list and not ul_list
        return ops.output(self.nin_out, ul)


class EagerOps:
    """The executor of :meth:`ConditionalPixelCNN.topology` that computes it with PyTorch
    (``cond``: the class vector (B, cond_dim) or None; ``backend``: the gated resnets' kernels;
    ``recompute``: checkpoint each gated resnet — only its inputs are kept for the backward pass)."""

    def __init__(self, cond: torch.Tensor | None, backend: str, recompute: bool = False):
        self.cond, self.backend, self.recompute = cond, backend, recompute

    def conv(self, layer, x: torch.Tensor) -> torch.Tensor:
        return layer(x)

    upsample = conv

    def add(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b

    def gated_resnet(self, block, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        if self.recompute:  # the concatenation of the skips is recomputed too: it is as large as the activations saved
            return torch.utils.checkpoint.checkpoint(self._gated_resnet, block, x, self.cond, *skips, use_reentrant=False, preserve_rng_state=True)
        return self._gated_resnet(block, x, self.cond, *skips)

    def _gated_resnet(self, block, x: torch.Tensor, cond: torch.Tensor | None, *skips: torch.Tensor) -> torch.Tensor:
        skip = None if not skips else skips[0] if len(skips) == 1 else torch.cat(skips, dim=1)
        return block(x, skip=skip, cond=cond, backend=self.backend)

    def output(self, layer, x: torch.Tensor) -> torch.Tensor:
        return layer(F.elu(x))
