"""Data sets as uint8 images in memory, one module per format, found through a registry.

- :mod:`.types`: :class:`Dataset`, :class:`DataError`, the splits and range conversions
- :mod:`.registry`: the format registry and :func:`load_dataset` (what a ``--data`` value means)
- the formats, one module each, every one calling :func:`register`: found by importing every
  module of this package (:data:`FORMATS` lists what registered; ``python -m cpixelcnn train --help``
  and docs/data.md show them)
- :mod:`.images` reads one image file; :mod:`.cache` and :mod:`.cache_files` decode once and map;
  :mod:`.augment`: training augmentation and the likelihood-ratio mutation

A new format is a module here calling :func:`register`; nothing else in the package is edited
(docs/contributing.md names the repository's places).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from cpixelcnn.data.augment import augment, mutate
from cpixelcnn.data.builtin import BUILTIN_CLASSES, builtin_dataset
from cpixelcnn.data.course import course_class_names, load_course_split
from cpixelcnn.data.folders import load_image_folder
from cpixelcnn.data.images import IMAGE_SUFFIXES
from cpixelcnn.data.registry import FORMATS, HOLDOUT_SEED, DataFormat, Request, data_help, has_split, load_dataset, register, resolve
from cpixelcnn.data.types import MAX_CLASSES, SPLITS, DataError, Dataset, to_grey, to_model_range, to_uint8

for _module in _pkgutil.iter_modules(__path__):  # each format module registers its formats
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "Dataset",
    "DataError",
    "SPLITS",
    "MAX_CLASSES",
    "to_model_range",
    "to_uint8",
    "to_grey",
    "FORMATS",
    "DataFormat",
    "Request",
    "register",
    "resolve",
    "has_split",
    "data_help",
    "load_dataset",
    "HOLDOUT_SEED",
    "BUILTIN_CLASSES",
    "builtin_dataset",
    "course_class_names",
    "load_course_split",
    "load_image_folder",
    "IMAGE_SUFFIXES",
    "augment",
    "mutate",
]
