"""Backbone registry: a model is named `prefix:rest` and built by the prefix's factory."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import HarnessError
from . import builtin, hf, timm_models, torchvision_models
from .base import Backbone, InputSpec

Factory = Callable[[str, str | None], Backbone]
FACTORIES: dict[str, Factory] = {"builtin": builtin.build, "hf": hf.build, "timm": timm_models.build,
                                  "torchvision": torchvision_models.build}


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
