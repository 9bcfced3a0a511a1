"""Backbone registry: a model is named `prefix:rest` and built by the prefix's factory."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import HarnessError
from . import builtin
from .base import Backbone, InputSpec

_FACTORIES: dict[str, Callable[[str], Backbone]] = {"builtin": builtin.build}


def register(prefix: str, factory: Callable[[str], Backbone]) -> None:
    """Make `prefix:<name>` buildable by `factory(name)`."""
    _FACTORIES[prefix] = factory


def build_backbone(spec: str) -> Backbone:
    """Build the model a spec such as `builtin:pixels` names."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in _FACTORIES:
        raise HarnessError(f"model '{spec}': unknown model prefix (known: {', '.join(p + ':' for p in sorted(_FACTORIES))})")
    return _FACTORIES[prefix](rest)


__all__ = ["Backbone", "InputSpec", "build_backbone", "register"]
