"""Probes: one module per probe, each with a dataclass config and one public entry point."""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path

from .. import __version__
from ..datasets import Manifest
from ..environment import environment, utc_now
from ..errors import ProbeError
from ..protocol import Protocol
from ..results import FORMAT, SCHEMA_VERSION
from . import knn, labelprop, linear, retrieval
from .common import open_for_probe

PROBES = {"knn": knn, "linear": linear, "retrieval": retrieval, "labelprop": labelprop}


def resolve_probe_config(name: str, raw: dict, task: str) -> dict:
    """Validate a card's settings for one probe and fill in the defaults (what probe_hash covers)."""
    if name not in PROBES:
        raise KeyError(f"unknown probe (known: {', '.join(sorted(PROBES))})")
    module = PROBES[name]
    if task not in module.TASKS:
        raise ValueError(f"probe {name} does not apply to task {task} (applies to: {', '.join(module.TASKS)})")
    if not isinstance(raw, dict):
        raise ValueError("settings must be a mapping")
    known = {f.name for f in fields(module.Config)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown setting '{unknown[0]}' (allowed: {', '.join(sorted(known))})")
    config = module.Config(**raw)
    config.validate()
    return asdict(config)


def probe_config(name: str, resolved: dict):
    """The config dataclass of a probe from a card's resolved settings."""
    return PROBES[name].Config(**resolved)


def run_probe(name: str, path: str | Path, protocol: Protocol, data_root: str | Path | None = None,
              allow_mismatch: bool = False, device: str = "cpu", save_masks: str | Path | None = None,
              manifest: Manifest | None = None) -> dict:
    """Score an embedding file with one probe of the card and return its result record.

    `save_masks` (label propagation only) writes the predicted masks in the DAVIS results layout."""
    if name not in protocol.probes:
        raise ProbeError(f"protocol {protocol.name} does not define probe '{name}' (it has: {', '.join(protocol.probes) or 'none'})")
    started = time.perf_counter()
    data = open_for_probe(path, protocol, data_root, allow_mismatch, manifest)
    try:
        loaded = time.perf_counter()
        config = probe_config(name, protocol.probes[name])
        extra = {"save_masks": save_masks} if save_masks is not None and name == "labelprop" else {}
        outcome = PROBES[name].run(data, config, device, **extra)
        header = data.file.header
        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION,
            "model": header.model, "model_revision": header.model_revision,
            "protocol": protocol.name, "protocol_version": protocol.version,
            "extraction_hash": protocol.extraction_hash, "probe_hash": protocol.probe_hash,
            "manifest_hash": data.manifest.hash,
            "embedding_file": {"path": str(data.file.path), "sha256": data.file.file_sha256(),
                               "extraction_hash": header.extraction_hash, "manifest_hash": header.manifest_hash},
            "probe": name, "config": asdict(config), "chosen": outcome["chosen"],
            "headline": outcome["headline"], "metrics": outcome["metrics"], "predictions": outcome["predictions"],
            "conforming": data.conforming, "notes": data.notes,
            "harness_version": __version__, "environment": environment(device),
            "timings": {"load_s": loaded - started, "probe_s": time.perf_counter() - loaded},
            "created_utc": utc_now(),
        }
    finally:
        data.file.close()


def probes_for(protocol: Protocol, name: str) -> list[str]:
    """The probes a command names: one, or `all` the card lists."""
    return list(protocol.probes) if name == "all" else [name]


__all__ = ["PROBES", "probe_config", "probes_for", "resolve_probe_config", "run_probe"]
