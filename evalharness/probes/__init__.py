"""Probes: one module per probe (`knn.py`, ...: the run function, with torch) beside its settings (`knn_config.py`,
...: the frozen config dataclass, without torch), registered here as a `ProbeSpec` whose entry point imports the
implementation on first use, so that reading and listing cards never loads torch or faiss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..protocol import Task
from . import (
    attentive_config,
    knn_config,
    labelprop_config,
    linear_config,
    localization_config,
    retrieval_config,
    segmentation_config,
)
from .base import ProbeOutcome, ProbeSpec, config_from_card
from .common import ProbeInput, conformance_notes


def _entry(name: str) -> Callable[..., ProbeOutcome]:
    """The `run` of probe `name`'s implementation module, imported when it is called (torch and faiss load there)."""

    def run(*args: Any, **options: Any) -> ProbeOutcome:
        from . import attentive, knn, labelprop, linear, localization, retrieval, segmentation

        modules = {"knn": knn, "linear": linear, "retrieval": retrieval, "labelprop": labelprop, "attentive": attentive,
                   "localization": localization, "segmentation": segmentation}
        return modules[name].run(*args, **options)

    return run


PROBES: dict[str, ProbeSpec] = {spec.name: spec for spec in (
    ProbeSpec("knn", frozenset({Task.CLASSIFICATION}), knn_config.Config, _entry("knn")),
    ProbeSpec("linear", frozenset({Task.CLASSIFICATION}), linear_config.Config, _entry("linear"), frozenset({"quiet"})),
    ProbeSpec("retrieval", frozenset({Task.CLASSIFICATION, Task.RETRIEVAL, Task.TEXT_RETRIEVAL}), retrieval_config.Config,
              _entry("retrieval")),
    ProbeSpec("labelprop", frozenset({Task.LABEL_PROPAGATION}), labelprop_config.Config, _entry("labelprop"),
              frozenset({"save_masks", "quiet"})),
    ProbeSpec("attentive", frozenset({Task.CLASSIFICATION}), attentive_config.Config, _entry("attentive"),
              frozenset({"workers", "quiet", "micro_batch"})),
    ProbeSpec("localization", frozenset({Task.LOCALIZATION}), localization_config.Config, _entry("localization"),
              frozenset({"quiet"})),
    ProbeSpec("segmentation", frozenset({Task.SEGMENTATION}), segmentation_config.Config, _entry("segmentation"),
              frozenset({"quiet"})),
)}


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
