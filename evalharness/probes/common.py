"""What every probe reads: an embedding file checked against its card and manifest, and its view-aggregated vectors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import Manifest
from ..errors import ProbeError
from ..protocol import Protocol
from ..store import EmbeddingFile


def unit_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x scaled to unit L2 norm along `axis` (zero vectors stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) index arrays: round(fraction * count) of each class to val, chosen by a seeded permutation.
    A class with one item stays in fit."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(np.floor(fraction * len(members) + 0.5)) if len(members) > 1 else 0
        val.extend(rng.permutation(members)[:min(take, len(members) - 1)])
    val = np.sort(np.array(val, dtype=np.int64))
    fit = np.setdiff1d(np.arange(len(labels)), val)
    return fit, val


def video_vectors(file: EmbeddingFile, chunk_rows: int = 8192) -> np.ndarray:
    """(N, D) float32: the mean over views of the L2-normalised view embeddings, L2-normalised again (DESIGN.md)."""
    n, _, dim = file.shape
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk_rows):
        block = file.clip(slice(start, start + chunk_rows))
        out[start:start + chunk_rows] = unit_rows(unit_rows(block, axis=2).mean(axis=1))
    return out


@dataclass
class ProbeInput:
    """An open embedding file with the card and manifest it is scored under; the video vectors are computed once
    and shared by every probe of a scoring run."""

    file: EmbeddingFile
    protocol: Protocol
    manifest: Manifest
    conforming: bool = True
    notes: list[str] = field(default_factory=list)
    shown: Path | None = None
    _vectors: np.ndarray | None = None

    @property
    def path(self) -> Path:
        """The path messages name: the file's, or the one it was submitted as."""
        return self.shown if self.shown is not None else self.file.path

    def vectors(self) -> np.ndarray:
        """View-aggregated, L2-normalised video vectors of every row of the file (read once)."""
        if self._vectors is None:
            self._vectors = video_vectors(self.file)
        return self._vectors

    def items(self, role: str) -> list:
        """The manifest items of the card's split for a role that the file embeds (all of them, if it conforms)."""
        name = self.protocol.splits.get(role)
        if name is None:
            raise ProbeError(f"protocol {self.protocol.name} names no '{role}' split")
        present = self.file.id_set
        items = [item for item in self.manifest.split(name) if item.id in present]
        if not items:
            raise ProbeError(f"{self.path}: no embedded clips in split '{name}'")
        return items

    def split(self, role: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(ids, vectors, class indices) of the card's split for a role."""
        items = self.items(role)
        ids = [item.id for item in items]
        return ids, self.vectors()[self.file.rows(ids)], self.manifest.label_indices(items)


def conformance_notes(file: EmbeddingFile, protocol: Protocol, manifest: Manifest | None,
                      data_root: str | Path | None = None, shown: Path | None = None) -> list[str]:
    """Why a file does not conform to a card (and, given one, to its manifest): one line each, empty if it does.
    Lines name the file as `shown` (default its path)."""
    path = shown if shown is not None else file.path
    notes = []
    if file.header.extraction_hash != protocol.extraction_hash:
        notes.append(f"{path} was extracted under protocol {file.header.protocol} v{file.header.protocol_version} "
                     f"(extraction_hash {file.header.extraction_hash[:12]}) but card {protocol.name} v{protocol.version} "
                     f"has extraction_hash {protocol.extraction_hash[:12]}")
    notes += _token_notes(file, protocol, path)
    if manifest is None:
        return notes
    if file.header.manifest_hash != manifest.hash:
        source = f"{data_root} resolves to" if data_root is not None else "the card's manifest has"
        notes.append(f"{path} was extracted from a manifest with hash {file.header.manifest_hash[:12]} but "
                     f"{source} {manifest.hash[:12]} (different clips, labels or splits)")
    needed = {item.id for name in set(protocol.splits.values()) for item in manifest.split(name)}
    missing = sorted(needed - file.id_set)
    if missing:
        notes.append(f"{path} lacks {len(missing)} of the {len(needed)} clips the card needs, e.g. '{missing[0]}'")
    return notes


def _token_notes(file: EmbeddingFile, protocol: Protocol, path: Path) -> list[str]:
    """Where a file's token features are not what the card asks for (the hash aside: attributes can lie)."""
    asked, held = protocol.tokens, file.token_info
    if asked is None:
        return []
    if held is None:
        return [f"{path} holds no token features, which card {protocol.name} asks for"]
    notes = []
    if (held.layer, held.norm, held.pool) != (asked.layer, asked.norm, asked.pool):
        notes.append(f"{path} holds tokens of layer {held.layer}, {held.norm} the final norm, pooled {list(held.pool)}, but "
                     f"card {protocol.name} asks for layer {asked.layer}, {asked.norm}, pooled {list(asked.pool)}")
    count, crop = protocol.frames.count, protocol.transform.crop
    if held.tubelet and min(held.patch) > 0 and count and crop:
        expected = (count // held.tubelet // held.pool[0], crop // held.patch[0] // held.pool[1],
                    crop // held.patch[1] // held.pool[2])
        if expected != held.grid:
            notes.append(f"{path} declares a token grid {list(held.grid)}, but {count} frames at {crop} pixels with "
                         f"patch {list(held.patch)}, tubelet {held.tubelet} and pool {list(held.pool)} give {list(expected)}")
    return notes
