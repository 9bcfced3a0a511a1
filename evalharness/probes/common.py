"""What every probe shares: opening a file against a card, and the labelled vectors of a split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import Manifest, resolve_manifest
from ..errors import ProbeError
from ..protocol import Protocol
from ..store import EmbeddingFile


@dataclass
class ProbeInput:
    """An embedding file checked against the card and manifest it is scored under."""

    file: EmbeddingFile
    protocol: Protocol
    manifest: Manifest
    conforming: bool = True
    notes: list[str] = field(default_factory=list)
    _vectors: np.ndarray | None = None

    def vectors(self) -> np.ndarray:
        """View-aggregated, L2-normalised video vectors of every row of the file (read once)."""
        if self._vectors is None:
            self._vectors = self.file.video_vectors()
        return self._vectors

    def split(self, role: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, vectors, class indices) of the card's split for a role, skipping ids the file lacks when allowed."""
        name = self.protocol.splits.get(role)
        if name is None:
            raise ProbeError(f"protocol {self.protocol.name} names no '{role}' split")
        present = set(self.file.ids)
        items = [item for item in self.manifest.split(name) if item.id in present]
        if not items:
            raise ProbeError(f"{self.file.path}: no embedded clips in split '{name}'")
        rows = self.file.rows([item.id for item in items])
        return [item.id for item in items], self.vectors()[rows], self.manifest.label_indices(items)


def conformance_notes(file: EmbeddingFile, protocol: Protocol, manifest: Manifest | None,
                      data_root: str | Path | None = None) -> list[str]:
    """Why a file does not conform to a card (and, given one, to its manifest): one line each, empty if it does."""
    notes = []
    if file.header.extraction_hash != protocol.extraction_hash:
        notes.append(f"{file.path} was extracted under protocol {file.header.protocol} v{file.header.protocol_version} "
                     f"(extraction_hash {file.header.extraction_hash[:12]}) but card {protocol.name} v{protocol.version} "
                     f"has extraction_hash {protocol.extraction_hash[:12]}")
    if manifest is None:
        return notes
    if file.header.manifest_hash != manifest.hash:
        notes.append(f"{file.path} was extracted from a manifest with hash {file.header.manifest_hash[:12]} but "
                     f"{data_root} resolves to {manifest.hash[:12]} (different clips, labels or splits)")
    needed = {item.id for name in set(protocol.splits.values()) for item in manifest.split(name)}
    missing = sorted(needed - set(file.ids))
    if missing:
        notes.append(f"{file.path} lacks {len(missing)} of the {len(needed)} clips the card needs, e.g. '{missing[0]}'")
    return notes


def open_for_probe(path: str | Path, protocol: Protocol, data_root: str | Path | None, allow_mismatch: bool = False,
                   manifest: Manifest | None = None) -> ProbeInput:
    """Open and validate a file, refusing one from another card or manifest, or lacking needed ids, unless allowed.
    The labels come from `manifest` when given (a leaderboard's stored one), else from the card under `data_root`."""
    file = EmbeddingFile(path)
    manifest = manifest if manifest is not None else resolve_manifest(protocol, data_root)
    notes = conformance_notes(file, protocol, manifest, data_root)
    if notes and not allow_mismatch:
        file.close()
        raise ProbeError(notes[0] + " (use --allow-mismatch to score anyway, marked non-conforming)")
    return ProbeInput(file, protocol, manifest, conforming=not notes, notes=notes)
