"""When ``auto`` may use a fast path on a CUDA device: only once it has passed its self-check there.

The verdict of :func:`cpixelcnn.selfcheck.run_fast_path_check` is remembered per (package version,
torch version, device name) in ``trust.json`` of the user's cache directory
(``$CPIXELCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/cpixelcnn``, else ``~/.cache/cpixelcnn``). The
first ``auto`` use on a new device runs the few-second check once and says so; a failed check
makes ``auto`` fall back to the eager path with one warning per process. A backend or method
asked for by name is never gated. ``cpixelcnn doctor`` records its verdicts here too.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import torch

from cpixelcnn._version import __version__
from cpixelcnn.notices import warn_once
from cpixelcnn.ops.backend import register_trust

CACHE_NAME = "trust.json"


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
    from cpixelcnn.io import atomic_write_json

    _KNOWN[(device_key(device), path)] = bool(passed)
    data = _read()
    data.setdefault(device_key(device), {})[path] = {"passed": bool(passed), "detail": detail}
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_file(), data)
    except OSError:
        pass


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
    """Whether ``auto`` may use fast path ``path`` (``"triton"`` or ``"cached-cuda"``) on ``device``.

    The first time on a (package, torch, device) the check runs (``check(path, device)`` returns
    CheckResults; default :func:`cpixelcnn.selfcheck.run_fast_path_check`) and its verdict is kept.
    """
    known = verdict(device, path)
    if known is None:
        if check is None:
            from cpixelcnn.selfcheck import run_fast_path_check as check
        print(f"cpixelcnn: checking the {path} fast path on {device_key(device).split(' | ')[-1]} against the eager reference "
              f"(once; the result is kept in {cache_file()})", file=sys.stderr)  # fmt: skip
        results = check(path, device)
        known = all(r.passed for r in results)
        failed = "; ".join(f"{r.name}: {r.detail or f'error {r.error} > {r.tolerance}'}" for r in results if not r.passed)
        record(device, path, known, failed)
    if not known:
        warn_once(f"untrusted-{path}-{device}", f"cpixelcnn: the {path} fast path failed its self-check on this device "
                  f"(see `cpixelcnn doctor`); 'auto' uses the eager path instead, which is slower. Force it by name only if you know why.")  # fmt: skip
    return known


register_trust(trusted)
