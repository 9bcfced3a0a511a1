"""Dataset adapters: each turns a data root laid out its own way into a `Manifest`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ManifestError
from . import csv_manifest, davis, lists, synthetic
from .base import Item, Manifest

if TYPE_CHECKING:
    from ..protocol import Protocol

ADAPTERS: dict[str, tuple[set[str], Callable[..., Manifest]]] = {
    "manifest": (csv_manifest.KEYS, csv_manifest.resolve),
    "davis": (davis.KEYS, davis.resolve),
    "ucf101": (lists.UCF101_KEYS, lists.ucf101),
    "hmdb51": (lists.HMDB51_KEYS, lists.hmdb51),
    "kinetics": (lists.KINETICS_KEYS, lists.kinetics),
    "msrvtt": (lists.MSRVTT_KEYS, lists.msrvtt),
    "ssv2": (lists.SSV2_KEYS, lists.ssv2),
    "synthetic": (synthetic.KEYS, synthetic.resolve),
}


def adapter_keys(name: str) -> set[str]:
    """Card keys the adapter accepts besides adapter/train/val/test."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown adapter '{name}' (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[name][0]


def resolve_manifest(protocol: Protocol, root: str | Path, require_files: bool = False) -> Manifest:
    """The manifest a card resolves to under a data root: every split the card names, labels checked."""
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: data root is not a directory")
    _, resolve = ADAPTERS[protocol.dataset["adapter"]]
    splits = sorted(set(protocol.splits.values()))
    require_labels = protocol.task in ("classification", "retrieval")
    return resolve(root, protocol.dataset, splits, require_labels, require_files)


__all__ = ["ADAPTERS", "Item", "Manifest", "adapter_keys", "resolve_manifest"]
