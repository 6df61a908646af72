"""Named training recipes: a preset fills in the settings the command line leaves out.

``pixelcnnpp-cifar10`` is the paper's model and recipe (Salimans et al. 2017, and the defaults of
openai/pixel-cnn's ``train.py``): an unconditional model (what the 2.92 bits/dim on CIFAR-10 refers
to), 5 gated resnets per stage, 160 filters, 10 logistics, dropout 0.5, Adam at 1e-3 (β = 0.95,
0.9995, as every run here) decayed ×0.999995 per step, batch 16 per GPU × 8 GPUs = 128, Polyak
averaging 0.9995, 32×32 RGB. ``pixelcnnpp-cifar10-conditional`` is the same recipe for this
package's class-conditional model (FiLM, initialised neutral). Not reproduced: data-dependent
initialisation (weight normalisation is kept).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cpixelcnn.training.config import TrainConfig, check, flag_of


@dataclass(frozen=True)
class Preset:
    description: str
    settings: dict


_PAPER = dict(
    nr_resnet=5, nr_filters=160, nr_logistic_mix=10, dropout=0.5, lr=1e-3, lr_decay=0.999995, batch_size=128, ema=0.9995, image_size=32, in_channels=3
)
PRESETS = {
    "pixelcnnpp-cifar10": Preset(
        "the paper's unconditional PixelCNN++ on CIFAR-10 (Salimans et al. 2017; openai/pixel-cnn's train.py)", _PAPER | dict(unconditional=True)
    ),
    "pixelcnnpp-cifar10-conditional": Preset("the paper's recipe for a class-conditional PixelCNN++ (FiLM)", _PAPER),
}
# Settings that choose another kind of model than a preset's --unconditional: given, they keep the preset from setting it.
OTHER_KINDS = {"per_class", "only_class"}


def preset_settings(name: str, given: set[str] | dict) -> dict:
    """The settings preset ``name`` fills in: all of its own except those in ``given`` (set by the user)."""
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    skip = set(given) | ({"unconditional"} if OTHER_KINDS & set(given) else set())
    return {key: value for key, value in PRESETS[name].settings.items() if key not in skip}


def describe_preset(name: str, filled: dict, given: set[str]) -> str:
    """One line: what the preset set, and which of its settings the command line overrode."""
    flags = {f.name: flag_of(f) for f in dataclasses.fields(TrainConfig)}
    text = f"preset {name} ({PRESETS[name].description}) sets " + " ".join(f"{flags[k]} {v}" for k, v in filled.items())
    overridden = [flags[k] for k in PRESETS[name].settings if k in given]
    return text + (f"; kept from the command line: {' '.join(overridden)}" if overridden else "")


def preset_config(name: str, **settings) -> TrainConfig:
    """A TrainConfig of preset ``name`` with ``settings`` (``data``, ``out``, any override) on top."""
    cfg = TrainConfig(**(preset_settings(name, settings) | settings))
    check(cfg)
    return cfg
