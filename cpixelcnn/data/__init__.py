"""Data sets as uint8 images in memory, one module per format, found through a registry.

- :mod:`.types`: :class:`Dataset`, :class:`DataError`, the splits and range conversions
- :mod:`.registry`: the format registry and :func:`load_dataset` (what a ``--data`` value means)
- one module per format: :mod:`.builtin` (``demo``), :mod:`.packaged` (``digits``, ``textures``,
  ``micrographs``), :mod:`.cifar` (``cifar10:DIR``, …), :mod:`.course` (the course layout),
  :mod:`.folders` (an image-folder tree); :mod:`.images` reads one image file
- :mod:`.augment`: training augmentation and the likelihood-ratio mutation

A new format is a module calling :func:`register` and one import line below.
"""

from cpixelcnn.data import builtin, cifar, course, folders, huggingface, imagenet, packaged  # noqa: F401  (each registers its formats)
from cpixelcnn.data.augment import augment, mutate
from cpixelcnn.data.builtin import BUILTIN_CLASSES, builtin_dataset
from cpixelcnn.data.course import course_class_names, load_course_split
from cpixelcnn.data.folders import load_image_folder
from cpixelcnn.data.images import IMAGE_SUFFIXES
from cpixelcnn.data.registry import FORMATS, HOLDOUT_SEED, DataFormat, Request, data_help, has_split, load_dataset, register, resolve
from cpixelcnn.data.types import MAX_CLASSES, SPLITS, DataError, Dataset, to_grey, to_model_range, to_uint8

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
