"""Ops with an eager reference and a backend switch: one op, one module. Every module of this
package is imported here, so an op's module registering itself (:func:`register_op`) is all it takes:
:data:`OPS` then lists it for the doctor, the gate, the kernel report, the runbook and the docs."""

import importlib as _importlib
import pkgutil as _pkgutil

from cpixelcnn.ops.backend import BACKENDS, OPS, check_backend, register_op, resolve_backend
from cpixelcnn.ops.dmol import bits_per_dim, dmol_log_prob
from cpixelcnn.ops.gated_film import gated_film

__all__ = ["BACKENDS", "OPS", "check_backend", "register_op", "resolve_backend", "bits_per_dim", "dmol_log_prob", "gated_film"]

for _module in _pkgutil.iter_modules(__path__):  # each op module registers itself
    _importlib.import_module(f"{__name__}.{_module.name}")
