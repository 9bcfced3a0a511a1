"""Backbone registry: a model is named `prefix:rest` and built by the prefix's factory.

The shipped families' modules (and torch) are imported when a model is built, so that listing models does not
load them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import HarnessError

if TYPE_CHECKING:
    from .base import Backbone, InputSpec

Factory = Callable[[str, "str | None"], "Backbone"]


def _shipped(prefix: str) -> Factory:
    """The factory of a shipped family, importing its module when it is called."""

    def build(name: str, weights: str | None) -> Backbone:
        from . import builtin, hf, timm_models, torchvision_models

        factories = {"builtin": builtin.build, "hf": hf.build, "timm": timm_models.build,
                     "torchvision": torchvision_models.build}
        return factories[prefix](name, weights)

    return build


FACTORIES: dict[str, Factory] = {prefix: _shipped(prefix) for prefix in ("builtin", "hf", "timm", "torchvision")}


def __getattr__(name: str) -> Any:
    """`Backbone` and `InputSpec`, imported from `base` (with torch) when first asked for."""
    if name in ("Backbone", "InputSpec"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(prefix: str, factory: Factory) -> None:
    """Make `prefix:<name>` buildable by `factory(name, weights)`; weights is the --weights argument or None."""
    FACTORIES[prefix] = factory


def build_backbone(spec: str, weights: str | None = None) -> Backbone:
    """Build the model a spec such as `builtin:pixels` or `timm:resnet50` names, with an optional weights file."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in FACTORIES:
        raise HarnessError(f"model '{spec}': unknown model prefix (known: {', '.join(p + ':' for p in sorted(FACTORIES))})")
    return FACTORIES[prefix](rest, weights)


__all__ = ["FACTORIES", "Backbone", "InputSpec", "build_backbone", "register"]
