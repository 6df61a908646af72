"""What a setting means, declared with it: its default, help, flag, choices and bounds.

A number's bounds belong to its type: :class:`Bounded` is an argparse ``type`` (the command line
checks it while parsing) and checks a value given through Python the same way, so no table keyed
by option names exists. :func:`setting` declares a dataclass field of a configuration
(``ModelConfig``, ``TrainConfig``) with all of it; :func:`check_setting` checks a value against
its field, naming the flag on the command line and the keyword in Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from cpixelcnn.notices import option


class Bounded:
    """A whole number (``kind=int``) or a finite number (``float``) in [low, high]: an argparse
    ``type`` and the check of a setting's value."""

    def __init__(self, kind: type, low: float, high: float):
        self.kind, self.low, self.high = kind, low, high
        self.__name__ = "whole number" if kind is int else "number"  # argparse: "invalid whole number value: 'x'"

    def __repr__(self) -> str:
        return f"Bounded({self.kind.__name__}, {self.low}, {self.high})"

    def problem(self, value) -> str | None:
        """Why ``value`` is not one (None when it is)."""
        kinds = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
            return f"must be a {self.__name__}, got {value!r}"
        if not self.low <= value <= self.high:
            return f"must be >= {self.low} and <= {self.high}, got {value!r}"
        return None

    def __call__(self, text: str):
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {self.__name__}, got {text!r}") from None
        why = self.problem(value)
        if why is not None:
            raise argparse.ArgumentTypeError(why)
        return value

    def check(self, value, name: str) -> None:
        """One-line ValueError naming ``name`` when ``value`` is out of bounds."""
        why = self.problem(value)
        if why is not None:
            raise ValueError(f"{name} {why}")


def setting(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    bounds: tuple[float, float] | None = None,
    check: str | None = None,
    unit: str = "",
    choices: tuple | None = None,
    metavar: str | None = None,
    fixed_on_resume: bool = False,
    cli: bool = True,
    word: str | None = None,
):
    """A configuration field with what the command line and the checks need to know about it.

    bounds: (low, high) of a number, checked by its type (:class:`Bounded`, built from the field's
    annotation). check: ``"positive"`` (a finite number > 0), ``"non_negative"`` (finite, >= 0) or
    ``"fraction"`` (in [0, 1)). fixed_on_resume: the setting is the saved run's on ``--resume``
    (giving another value is an error). cli: the setting is a command-line option. word: a word
    the setting also takes, decided when training starts (``auto``): a flag of a boolean setting
    then takes it as an optional value (``--resume`` or ``--resume auto``)."""
    meta = dict(
        help=help,
        flag=flag,
        bounds=bounds,
        check=check,
        unit=unit,
        choices=choices,
        metavar=metavar,
        fixed_on_resume=fixed_on_resume,
        cli=cli,
        word=word,
    )
    return dataclasses.field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """The field's command-line flag (``--nr-mix`` for ``nr_logistic_mix``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def value_type(f: dataclasses.Field) -> type:
    """int, float, bool or str: what the field's annotation says a value is (``int | None`` is int)."""
    text = str(f.type)
    return int if text.startswith("int") else float if text.startswith("float") else bool if text.startswith("bool") else str


def bounded_type(f: dataclasses.Field) -> Bounded | None:
    """The field's number type with its bounds (None when it declares none)."""
    bounds = f.metadata.get("bounds")
    return None if bounds is None else Bounded(value_type(f), *bounds)


def check_setting(f: dataclasses.Field, value, name: str | None = None) -> None:
    """One-line ValueError naming the setting (``name``; default: its flag on the command line, its
    keyword in Python) when ``value`` is outside its choices, bounds or rule. None (not given) and
    the field's word pass."""
    meta = f.metadata
    if value is None or (meta.get("word") is not None and value == meta["word"]):
        return
    name = name or option(flag_of(f), f.name)
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
    if meta.get("bounds") is not None:
        bounded_type(f).check(value, name)
    if value_type(f) is bool and not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    rule = meta.get("check")
    if rule is None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    unit = f" of {meta['unit']}" if meta.get("unit") else ""
    if rule == "positive" and not (number and value > 0):
        raise ValueError(f"{name} must be a positive number{unit}, got {value!r}")
    if rule == "non_negative" and not (number and value >= 0):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if rule == "fraction" and not (number and 0 <= value < 1):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
