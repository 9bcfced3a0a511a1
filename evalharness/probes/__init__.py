"""Probes: one module per probe, each registering a `ProbeSpec` (tasks, frozen config, entry point)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..protocol import Task
from . import attentive, knn, labelprop, linear, retrieval
from .base import ProbeOutcome, ProbeSpec, config_from_card
from .common import ProbeInput, conformance_notes

PROBES: dict[str, ProbeSpec] = {spec.name: spec for spec in (knn.SPEC, linear.SPEC, retrieval.SPEC, labelprop.SPEC,
                                                              attentive.SPEC)}


def probe_spec(name: str) -> ProbeSpec:
    """The registered probe of that name; an unknown name is a KeyError listing the known ones."""
    if name not in PROBES:
        raise KeyError(f"unknown probe (known: {', '.join(sorted(PROBES))})")
    return PROBES[name]


def resolve_config(name: str, raw: Any, task: Task) -> dict:
    """A card's settings for one probe, validated, with every default filled in (what probe_hash covers)."""
    spec = probe_spec(name)
    if task not in spec.tasks:
        raise ValueError(f"probe {name} does not apply to task {task} "
                         f"(applies to: {', '.join(sorted(t.value for t in spec.tasks))})")
    return asdict(config_from_card(spec.config, raw))


def build_config(name: str, resolved: dict) -> Any:
    """The config dataclass of a probe from a card's resolved settings."""
    return config_from_card(probe_spec(name).config, resolved)


__all__ = ["PROBES", "ProbeInput", "ProbeOutcome", "ProbeSpec", "build_config", "conformance_notes", "probe_spec",
           "resolve_config"]
