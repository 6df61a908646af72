"""The data-format registry: every format registers its name, how ``--data`` names it, a help line
and a loader; :func:`load_dataset` resolves a ``--data`` value through it.

A ``--data`` value is one of
- a built-in set's name (``demo``, ``digits``, …), or ``builtin:NAME`` when a folder has that name;
- ``KIND:DIR`` for a format that reads published files from a folder (``cifar10:DIR``, …);
- a folder, read by the folder format that recognises it (the course layout by its
  ``<split>.csv``), the folder formats tried in their ``precedence`` (the plain image-folder tree last).

A new format is one module of this package that calls :func:`register` (``data/__init__.py``
imports every module, so nothing else is edited); the command line's help and error texts, the
docs' format table and the tests that load every format come from here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from cpixelcnn.data.cache import CacheSetting
from cpixelcnn.data.types import SPLITS, DataError, Dataset

HOLDOUT_SEED = 0  # held-out images are the same for every training seed
WHERE = ("builtin", "prefix", "folder")  # how --data names a format, in the order the help lists them


@dataclasses.dataclass(frozen=True)
class Request:
    """What a loader is asked for. ``source`` is the folder (``""`` for a built-in set);
    ``class_names``, when given, are a trained model's classes in its order; ``cache`` where its
    decoded images are kept (a loader passes it to :func:`cpixelcnn.data.cache.materialise`)."""

    source: str
    split: str
    size: int
    channels: int
    class_names: list[str] | None = None
    seed: int = 0
    cache: CacheSetting = CacheSetting()


@dataclasses.dataclass(frozen=True)
class Native:
    """What a source holds as it stores it, read without decoding it: ``size`` (the side of its
    square images; None: no one size — patches cut to any size, generated images, mixed sizes),
    ``channels`` (1 grey, 3 RGB; None: mixed), ``class_names`` (None: unlabelled) and ``splits``
    (the named splits it has; empty for one undivided set, which answers any split with all of it)."""

    size: int | None
    channels: int | None
    class_names: list[str] | None
    splits: tuple[str, ...]

    def shape(self) -> str:
        """e.g. "8x8 grey", "any size RGB"."""
        side = f"{self.size}x{self.size}" if self.size else "any size"
        return f"{side} {'grey' if self.channels == 1 else 'RGB' if self.channels == 3 else 'grey or RGB'}"


@dataclasses.dataclass(frozen=True)
class DataFormat:
    """A registered format. ``where`` is ``"builtin"``, ``"prefix"`` (``NAME:DIR``) or ``"folder"``;
    ``recognises(folder)`` picks a folder format, the formats tried in ascending ``precedence`` (the
    specific layouts first, the catch-all image-folder tree last; registration order never matters);
    ``has_split(source, split)`` says whether the split exists without loading it;
    ``describe(source)`` says what the source holds (:class:`Native`), which ``train`` takes its
    default size and channels from; ``partial_classes`` lets a folder hold some of a model's
    classes (the loader checks them itself); ``prediction_rows(files, predicted)``, when a layout has
    its own submission format, gives the rows ``classify``'s CSV holds instead of the generic ones."""

    name: str
    where: str
    usage: str
    help: str
    load: Callable[[Request], Dataset]
    has_split: Callable[[str, str], bool]
    describe: Callable[[str], Native]
    recognises: Callable[[Path], bool] | None = None
    partial_classes: bool = False
    precedence: int = 0
    prediction_rows: Callable[[list[str], torch.Tensor], list[str]] | None = None


FORMATS: dict[str, DataFormat] = {}


def register(fmt: DataFormat) -> DataFormat:
    if fmt.where not in WHERE:
        raise ValueError(f"data format {fmt.name}: where must be one of {', '.join(WHERE)}, not {fmt.where!r}")
    if fmt.name in FORMATS:
        raise ValueError(f"data format {fmt.name!r} is registered twice")
    if (fmt.where == "folder") != (fmt.recognises is not None):
        raise ValueError(f"data format {fmt.name}: a folder format (and only one) needs recognises()")
    clash = [f.name for f in FORMATS.values() if f.where == "folder" == fmt.where and f.precedence == fmt.precedence]
    if clash:
        raise ValueError(f"data format {fmt.name}: folder formats are tried by precedence; {clash[0]} has {fmt.precedence} already")
    if not callable(fmt.describe):
        raise ValueError(f"data format {fmt.name}: describe(source) must say what the source holds (a Native)")
    FORMATS[fmt.name] = fmt
    return fmt


def _named(where: str) -> list[str]:
    return [name for name, fmt in FORMATS.items() if fmt.where == where]  # in registration order


def _closest(name: str, candidates: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), candidates, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def data_help() -> str:
    """One line listing every way to name data, for ``--data``'s help."""
    ordered = sorted(FORMATS.values(), key=lambda fmt: (WHERE.index(fmt.where), fmt.precedence))
    return ", ".join(fmt.usage for fmt in ordered)


def resolve(data: str) -> tuple[DataFormat, str]:
    """(format, source) that reads ``data``; a DataError names what is wrong."""
    builtin = data.removeprefix("builtin:")
    kind, colon, rest = data.partition(":")
    if data == builtin and builtin in _named("builtin") and Path(data).is_dir():
        raise DataError(
            f"--data {data} is both a built-in data set and a folder here: write ./{data} for the folder or builtin:{data} for the built-in set"
        )
    if colon and kind in _named("prefix"):
        return FORMATS[kind], rest
    if builtin in _named("builtin"):
        return FORMATS[builtin], ""
    if data != builtin:
        raise DataError(
            f"--data {data}: no such built-in data set{_closest(builtin, _named('builtin'))} ({', '.join('builtin:' + n for n in _named('builtin'))})"
        )
    root = Path(data)
    if root.is_file():
        raise DataError(f"--data {data} is a file; it takes a folder, a built-in set or FORMAT:DIR ({data_help()})")
    if not root.is_dir():
        if colon and "/" not in kind and not Path(kind).exists():
            raise DataError(
                f"--data {data}: no data format {kind!r}{_closest(kind, _named('prefix'))} (formats: {', '.join(n + ':DIR' for n in _named('prefix'))})"
            )
        if "/" not in data:
            raise DataError(
                f"--data {data}: no built-in data set or folder of that name{_closest(data, _named('builtin'))} "
                f"(built-in: {', '.join(_named('builtin'))}; or a folder, or FORMAT:DIR)"
            )
        raise DataError(f"data folder {root} does not exist")
    for name in sorted(_named("folder"), key=lambda n: FORMATS[n].precedence):
        if FORMATS[name].recognises(root):
            return FORMATS[name], data
    raise DataError(f"{root} is no data folder this package reads ({', '.join(FORMATS[n].usage for n in _named('folder'))})")


def describe(data: str) -> Native:
    """What ``data`` (a ``--data`` value) holds: its native size, channels, classes and splits."""
    fmt, source = resolve(data)
    return fmt.describe(source)


def has_split(data: str, split: str) -> bool:
    """Whether ``data`` has a split named ``split`` of its own (without loading it)."""
    fmt, source = resolve(data)
    return fmt.has_split(source, split)


def load_dataset(
    data: str,
    split: str = "train",
    size: int = 32,
    channels: int = 3,
    class_names: list[str] | None = None,
    seed: int = 0,
    holdout: int = 0,
    cache: CacheSetting | None = None,
) -> Dataset:
    """The ``split`` of ``data`` (a ``--data`` value: see the module docstring and :func:`data_help`)
    as uint8 (N, channels, size, size) images. ``class_names`` (a model's) must match the data's,
    except for formats that may hold a subset of them.

    ``holdout`` N > 0 carves N images out of the training split, reproducibly (a permutation with a
    fixed seed): ``"validation"`` is then those N and ``"train"`` the rest; ``"test"`` is unchanged.
    ``cache``: where decoded images are kept (default: ``$CPIXELCNN_DATA_CACHE`` or ~/.cache)."""
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    cache = cache or CacheSetting()
    if not holdout or split == "test":
        return _load_split(data, Request("", split, size, channels, class_names, seed, cache))
    return held_out_part(_load_split(data, Request("", "train", size, channels, class_names, seed, cache)), holdout, split, data)


def held_out_part(full: Dataset, holdout: int, split: str, data: str) -> Dataset:
    """``split`` of a training split ``full`` of which ``holdout`` images are held out, reproducibly
    (a permutation with a fixed seed): ``"validation"`` those N, ``"train"`` the rest."""
    if not 0 < holdout < len(full):
        raise DataError(f"--val-split {holdout}: the training split of {data} has {len(full)} images; hold out fewer")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return full.subset((order[:holdout] if split == "validation" else order[holdout:]).sort().values)


def _load_split(data: str, request: Request) -> Dataset:
    fmt, source = resolve(data)
    class_names = request.class_names
    ds = fmt.load(dataclasses.replace(request, source=source))
    if class_names is not None and not fmt.partial_classes and list(class_names) != list(ds.class_names):
        raise DataError(f"--data {data} has classes ({', '.join(ds.class_names[:8])}) but the model has ({', '.join(list(class_names)[:8])})")
    return ds
