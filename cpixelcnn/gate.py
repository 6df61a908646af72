"""The one gate of every fast path: self-checks against the eager reference, and when ``auto`` may
use a fast path on a CUDA device — only once its checks have passed there.

Fast paths are named as users choose them: ``backend:triton`` (every op's Triton kernels) and
``engine:NAME`` (an engine of the cached sampler: ``engine:cpu``, ``engine:cuda``, …). The module
that owns a fast path registers its checks here — an op with :func:`register_check`, the sampler
engines as one family with :func:`register_family` — and this module knows nothing above it.
``cpixelcnn doctor`` runs every check; the first ``auto`` use of a fast path on a new device
runs that path's checks once and says so.

Verdicts are remembered per (package version, torch version, device name) in ``trust.json`` of the
user's cache directory (``$CPIXELCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cpixelcnn``, else
``~/.cache/cpixelcnn``). A failed check makes ``auto`` fall back to the eager path (or the naive
sampler) with one warning per process. A backend or engine asked for by name is never gated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from cpixelcnn._version import __version__
from cpixelcnn.notices import warn_once

CACHE_NAME = "trust.json"

# -- checks ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class CheckResult:
    """One check's outcome: ``passed`` None when it was skipped (``detail`` says why)."""

    path: str
    name: str
    passed: bool | None
    error: float | None = None  # the largest difference from the reference
    tolerance: float | None = None
    seconds: float = 0.0
    detail: str = ""

    @property
    def status(self) -> str:
        return "skip" if self.passed is None else "pass" if self.passed else "FAIL"

    @property
    def label(self) -> str:
        return f"{self.path} {self.name}" if self.path else self.name


@dataclasses.dataclass(frozen=True)
class Check:
    """A self-check of ``name`` guarding fast path ``path`` (empty: a check that guards no path, such
    as the dropout mask's keep rate): ``compare(device)`` → (largest error, what was compared) must
    come within ``tolerance``; ``skip(device)`` says why it cannot run there (None: it can)."""

    path: str
    name: str
    compare: Callable[[torch.device], tuple[float, str]]
    tolerance: float
    skip: Callable[[torch.device], str | None] = lambda device: None

    def run(self, device: torch.device) -> CheckResult:
        reason = self.skip(device)
        if reason is not None:
            return CheckResult(self.path, self.name, None, detail=reason)
        start = time.perf_counter()
        try:
            error, detail = self.compare(device)
        except Exception as err:  # noqa: BLE001 - a fast path that raises has failed its check
            return CheckResult(self.path, self.name, False, None, self.tolerance, time.perf_counter() - start, f"{type(err).__name__}: {err}")
        passed = error is not None and error <= self.tolerance
        return CheckResult(self.path, self.name, passed, error, self.tolerance, time.perf_counter() - start, detail)


_CHECKS: list[Check] = []
_FAMILIES: dict[str, Callable[[], list[Check]]] = {}


def register_check(check: Check) -> Check:
    """Add a check (an op's, registered by its module); a second one of the same path and name replaces the first."""
    _CHECKS[:] = [c for c in _CHECKS if (c.path, c.name) != (check.path, check.name)] + [check]
    return check


def register_family(prefix: str, checks: Callable[[], list[Check]]) -> None:
    """Checks of a family of fast paths (``engine:``), listed anew each time: a member registered later has its check too."""
    _FAMILIES[prefix] = checks


def checks(path: str | None = None) -> list[Check]:
    """Every registered check (of fast path ``path``), in registration order."""
    every = _CHECKS + [c for make in _FAMILIES.values() for c in make()]
    return [c for c in every if path is None or c.path == path]


def run_checks(device: torch.device, path: str | None = None) -> list[CheckResult]:
    """Every check (of ``path``) on ``device``: run, or skipped with the reason."""
    found = checks(path)
    if path is not None and not found:
        raise ValueError(f"no self-check guards fast path {path!r} (known: {', '.join(sorted({c.path for c in checks() if c.path}))})")
    return [check.run(device) for check in found]


def max_diff(pairs) -> float:
    """The largest absolute difference over (a, b) tensor pairs, in float64."""
    return max((a.double() - b.double()).abs().max().item() for a, b in pairs)


# -- verdicts -------------------------------------------------------------------------------------


def cache_file() -> Path:
    root = os.environ.get("CPIXELCNN_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cpixelcnn")
    return Path(root) / CACHE_NAME


@functools.cache  # asked on every op call of every forward under 'auto': the device name is a driver call
def device_key(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return f"cpixelcnn {__version__} | torch {torch.__version__} | {name}"


def _read() -> dict:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def record(device: torch.device, path: str, passed: bool, detail: str = "") -> None:
    """Remember the verdict on fast path ``path`` for ``device`` (best effort: an unwritable cache only means checking again)."""
    from cpixelcnn.atomic_io import atomic_write_json

    _KNOWN[(device_key(device), path)] = bool(passed)
    data = _read()
    data.setdefault(device_key(device), {})[path] = {"passed": bool(passed), "detail": detail}
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_file(), data)
    except OSError:
        pass


def record_results(device: torch.device, results: list[CheckResult]) -> None:
    """Remember the verdict of every fast path some of whose checks ran (``cpixelcnn doctor``)."""
    for path in dict.fromkeys(r.path for r in results if r.path):
        ran = [r for r in results if r.path == path and r.passed is not None]
        if ran:
            record(device, path, all(r.passed for r in ran), "; ".join(f"{r.name}: {r.detail}" for r in ran if not r.passed))


_KNOWN: dict[tuple[str, str], bool] = {}  # verdicts read or reached in this process (resolve_backend runs per forward)


def verdict(device: torch.device, path: str) -> bool | None:
    key = (device_key(device), path)
    if key not in _KNOWN:
        entry = _read().get(key[0], {}).get(path)
        if entry is None:
            return None
        _KNOWN[key] = bool(entry.get("passed"))
    return _KNOWN[key]


def trusted(device: torch.device, path: str, check=None) -> bool:
    """Whether ``auto`` may use fast path ``path`` on ``device``. The first time on a (package,
    torch, device) its checks run (``check(path, device)`` → CheckResults; default
    :func:`run_checks`) and the verdict is kept; a skipped check counts as failed."""
    known = verdict(device, path)
    if known is None:
        print(
            f"cpixelcnn: checking the {path} fast path on {device_key(device).split(' | ')[-1]} against the eager reference "
            f"(once; the result is kept in {cache_file()})",
            file=sys.stderr,
        )
        results = check(path, device) if check is not None else run_checks(device, path)
        known = bool(results) and all(r.passed for r in results)
        record(device, path, known, "; ".join(f"{r.name}: {r.detail or f'error {r.error} > {r.tolerance}'}" for r in results if not r.passed))
    if not known:
        warn_once(
            f"untrusted-{path}-{device}",
            f"cpixelcnn: the {path} fast path failed its self-check on this device "
            f"(see `cpixelcnn doctor`); 'auto' uses the eager path instead, which is slower. Force it by name only if you know why.",
        )
    return known
