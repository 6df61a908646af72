"""The model's settings, declared once: :class:`ModelConfig`, the one table of each architecture
setting's default, bounds or choices, help and flag. The model takes it
(``ConditionalPixelCNN(config)``); ``cpixelcnn train`` makes its model options from the fields
marked ``cli``; a run's config.json is read back through it (``from_dict``); the parameter count
of a configuration is the model's own, counted on the meta device. Every setting here is fixed on
``--resume``: a run's architecture is its weights'.
"""

from __future__ import annotations

import dataclasses

from cpixelcnn.data.types import MAX_CLASSES
from cpixelcnn.notices import option
from cpixelcnn.settings import check_setting, flag_of, setting, value_type

CONDITIONINGS = ("additive", "film")
FUSIONS = ("early", "middle", "late")
EMBEDDINGS = ("onehot", "learned")
KIND_WORDS = {int: "a whole number", bool: "true or false", str: "a string"}
RUN_TIME = ("backend", "checkpoint_activations")  # attributes of a built model, not of its architecture


@dataclasses.dataclass(kw_only=True)
class ModelConfig:
    """PixelCNN++'s architecture (the paper's defaults: 5 gated resnets per stage, 160 filters, 10
    logistics, dropout 0.5), with class conditioning (``num_classes`` 0: unconditional)."""

    in_channels: int = setting(3, "1 (grey) or 3 (RGB)", flag="--channels", choices=(1, 3), fixed_on_resume=True)
    num_classes: int = setting(4, "classes (0: an unconditional model p(x))", bounds=(0, MAX_CLASSES), fixed_on_resume=True, cli=False)
    nr_resnet: int = setting(5, "gated resnets per stage", bounds=(1, 64), fixed_on_resume=True)
    nr_filters: int = setting(160, "channels of every stage", bounds=(1, 2048), fixed_on_resume=True)
    nr_logistic_mix: int = setting(10, "logistic mixture components per pixel", flag="--nr-mix", bounds=(1, 256), fixed_on_resume=True)
    conditioning: str = setting(
        "film", "how the class enters: FiLM (gamma, beta; neutral at init) or an additive bias", choices=CONDITIONINGS, fixed_on_resume=True
    )
    fusion: str = setting(
        "middle",
        "which gated resnets are conditioned: early (the first up stage), middle (all), late (the last down stage)",
        choices=FUSIONS,
        fixed_on_resume=True,
    )
    embedding: str = setting("onehot", "class embedding", choices=EMBEDDINGS, fixed_on_resume=True)
    embedding_dim: int | None = setting(None, "size of a learned embedding (default 32)", bounds=(1, 4096), fixed_on_resume=True)
    dropout: float = setting(0.5, "dropout rate inside the gated resnets", check="fraction", fixed_on_resume=True)
    bits: int = setting(8, "bit depth of the modelled images", bounds=(1, 16), fixed_on_resume=True, cli=False)
    weight_norm: bool = setting(True, "weight-normalised convolutions (the paper's)", fixed_on_resume=True, cli=False)
    film_hidden: int = setting(64, "width of the FiLM MLP's hidden layer", bounds=(1, 4096), fixed_on_resume=True, cli=False)

    def __post_init__(self):
        if isinstance(self.dropout, int) and not isinstance(self.dropout, bool):
            self.dropout = float(self.dropout)  # a rate: 0 and 0.0 are one setting

    def check(self, prefix: str = "", by_keyword: bool = False) -> ModelConfig:
        """One-line ValueError (``prefix`` first: where the settings come from) for the first
        setting out of its bounds or choices, named by its flag on the command line, its keyword
        in Python (or always, ``by_keyword``: a file's). Returns the config."""
        for f in dataclasses.fields(self):
            try:
                check_setting(f, getattr(self, f.name), name=f.name if by_keyword else option(flag_of(f), f.name))
            except ValueError as err:
                raise ValueError(f"{prefix}{err}") from None
        return self

    @classmethod
    def from_dict(cls, values: dict, where: str = "") -> ModelConfig:
        """The config a saved run's ``"model"`` object describes, checked (``where`` names the file
        in messages): unknown settings are refused, run-time attributes left out."""
        prefix = f"{where}: model setting " if where else ""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known and key not in RUN_TIME:
                raise ValueError(f"{where + ': ' if where else ''}unknown model setting {key!r}")
        for f in dataclasses.fields(cls):  # a file may hold any JSON: the type first, then the bounds
            value = values.get(f.name)
            if value is not None and value_type(f) in KIND_WORDS and not isinstance(value, value_type(f)):
                raise ValueError(f"{prefix}{f.name} must be {KIND_WORDS[value_type(f)]}, got {value!r}")
        return cls(**{k: v for k, v in values.items() if k in known}).check(prefix, by_keyword=True)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def parameter_count(self) -> int:
        """The model's parameter count, from the model itself built on the meta device (nothing is
        allocated). It is linear in ``nr_resnet``, so two shallow builds give it exactly at any depth."""
        import torch

        from cpixelcnn.model import ConditionalPixelCNN

        def count(depth: int) -> int:
            with torch.device("meta"):
                return sum(p.numel() for p in ConditionalPixelCNN(dataclasses.replace(self, nr_resnet=depth)).parameters())

        one = count(1)
        return one + (count(2) - one) * (self.nr_resnet - 1)


def bounds_of(name: str) -> tuple[int, int]:
    """(low, high) of a numeric architecture setting, for readers of other formats' checkpoints."""
    return next(f.metadata["bounds"] for f in dataclasses.fields(ModelConfig) if f.name == name)
