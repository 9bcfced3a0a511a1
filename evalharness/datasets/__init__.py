"""Dataset adapters: each turns a data root laid out its own way into a `Manifest`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ManifestError
from ..protocol import Protocol
from . import csv_manifest, davis, lists, synthetic, temporal
from .base import Adapter, CardValueError, Item, Manifest, Segment, limited

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    csv_manifest.ADAPTER, davis.ADAPTER, lists.UCF101, lists.HMDB51, lists.KINETICS, lists.MSRVTT, lists.SSV2,
    synthetic.ADAPTER, temporal.ACTIVITYNET, temporal.THUMOS14, temporal.TAS)}


def adapter(name: str) -> Adapter:
    """The registered adapter of that name; an unknown name is a KeyError listing the known ones."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown adapter '{name}' (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[name]


def resolve_manifest(protocol: Protocol, root: str | Path, require_files: bool = False) -> Manifest:
    """The manifest a card resolves to under a data root: every split the card names, labels checked."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: data root is not a directory")
    splits = sorted(set(protocol.splits.values()))
    return adapter(protocol.dataset["adapter"]).resolve(root, protocol.dataset, splits, protocol.task.needs_labels,
                                                        require_files)


__all__ = ["ADAPTERS", "Adapter", "CardValueError", "Item", "Manifest", "Segment", "adapter", "limited",
           "resolve_manifest"]
