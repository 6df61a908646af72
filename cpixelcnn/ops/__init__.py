"""Ops with an eager reference and a backend switch: one op, one module."""

from cpixelcnn.ops.backend import BACKENDS, OPS, check_backend, register_op, resolve_backend
from cpixelcnn.ops.dmol import bits_per_dim, dmol_log_prob
from cpixelcnn.ops.gated_film import gated_film

__all__ = ["BACKENDS", "OPS", "check_backend", "register_op", "resolve_backend", "bits_per_dim", "dmol_log_prob", "gated_film"]
