"""What the package says to a user: warnings seen once per process (a feature falling back to a
slower path), how a message names a setting, and an error told in one line."""

from __future__ import annotations

import warnings

_SAID: set[str] = set()


class FallbackWarning(RuntimeWarning):
    """A requested ``auto`` feature runs on a slower path; the message says why and how much slower."""


def warn_once(key: str, message: str) -> None:
    """Warn with ``message`` the first time ``key`` is seen in this process."""
    if key in _SAID:
        return
    _SAID.add(key)
    warnings.warn(message, FallbackWarning, stacklevel=3)


_INTERFACE = {"command_line": False}  # set by cpixelcnn.cli.main: messages then name flags, not keywords


def speaking_command_line(on: bool = True) -> None:
    _INTERFACE["command_line"] = on


def option(flag: str, keyword: str) -> str:
    """How a message names a setting: ``flag`` on the command line (``--resume``), else ``keyword`` (``resume=True``)."""
    return flag if _INTERFACE["command_line"] else keyword


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (empty when it has none): errors are told in one line."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def moved_names(alias: str, homes: dict[str, str]):
    """``(__getattr__, __dir__)`` for a module kept as a warning alias: each name in ``homes`` is
    imported from its new module there, with a DeprecationWarning saying where; any other is an AttributeError."""
    import importlib

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {alias!r} has no attribute {name!r}")
        warnings.warn(f"{alias}.{name} moved: import it from {homes[name]}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(homes[name]), name)

    def __dir__() -> list[str]:
        return sorted(homes)

    return __getattr__, __dir__
