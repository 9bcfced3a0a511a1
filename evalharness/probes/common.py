"""What every probe reads: an embedding file checked against its card and manifest, and its view-aggregated vectors."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datasets import Manifest
from ..errors import ProbeError
from ..protocol import Protocol, extraction_differences
from ..store import SCORING_ROWS, EmbeddingFile


def unit_rows(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """x scaled to unit L2 norm along `axis` (zero vectors stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def _group_keys(n: int, groups: Sequence[str | None] | None) -> list[tuple]:
    """A key per item: its group, or the item alone when the dataset defines none for it."""
    return [(1, groups[i]) if groups is not None and groups[i] is not None else (0, i) for i in range(n)]


def stratified_split(labels: np.ndarray, fraction: float, seed: int,
                     groups: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) index arrays, stratified by class and disjoint by group (clips of one UCF101 group, one HMDB51
    source video, one YouTube video never straddle the split; an item without a group is its own).

    Per class, in a seeded order, each group whose majority class it is goes to val if that brings the class's val
    count closer to round(fraction * count); a class keeps at least one item in fit. With no groups this takes
    round(fraction * count) items of each class (at most count - 1)."""
    labels = np.asarray(labels)
    members: dict[tuple, list[int]] = {}
    for i, key in enumerate(_group_keys(len(labels), groups)):
        members.setdefault(key, []).append(i)
    classes, total = np.unique(labels, return_counts=True)
    total = dict(zip(classes.tolist(), total.tolist(), strict=True))
    target = {c: int(np.floor(fraction * n + 0.5)) if n > 1 else 0 for c, n in total.items()}
    counts = {key: Counter(labels[idx].tolist()) for key, idx in members.items()}
    homes: dict[object, list[tuple]] = {}
    for key, count in counts.items():
        homes.setdefault(min(count, key=lambda c: (-count[c], c)), []).append(key)
    rng = np.random.default_rng(seed)
    held = dict.fromkeys(total, 0)
    val: list[int] = []
    for c in classes.tolist():
        own = homes.get(c, [])
        for j in rng.permutation(len(own)):
            count = counts[own[j]]
            closer = abs(target[c] - held[c] - count[c]) < abs(target[c] - held[c])
            if closer and all(held[k] + m < total[k] for k, m in count.items()):
                for k, m in count.items():
                    held[k] += m
                val.extend(members[own[j]])
    val_idx = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


def no_validation_reason(labels: np.ndarray, fraction: float, groups: Sequence[str | None] | None = None) -> str:
    """Why `stratified_split` held nothing out: too few videos (or groups) per class, or a fraction too small,
    with the smallest fraction that would hold one out."""
    labels = np.asarray(labels)
    sizes: dict[object, dict[tuple, int]] = {}
    for label, key in zip(labels.tolist(), _group_keys(len(labels), groups), strict=True):
        sizes.setdefault(label, {}).setdefault(key, 0)
        sizes[label][key] += 1
    unit = "groups" if groups is not None and any(g is not None for g in groups) else "videos"
    # a group of g videos is held out once round(fraction * n) > g / 2
    needed = [(min(s.values()) // 2 + 0.5) / sum(s.values()) for s in sizes.values() if len(s) > 1]
    if not needed:
        return f"no class has train videos in two {unit}, so no validation split can be held out"
    smallest = math.ceil(min(needed) * 1000) / 1000
    return (f"val_fraction {fraction:g} holds out no validation video in any class ({len(labels)} train videos in "
            f"{len(sizes)} classes); the smallest val_fraction that holds one out is {smallest:g}")


def split_record(groups: Sequence[str | None] | None, val: np.ndarray) -> dict:
    """What a record says about its validation split: how it was cut and which groups were held out."""
    if groups is None or all(g is None for g in groups):
        return {"val_split": "stratified by class (the dataset defines no groups)", "val_groups": None}
    return {"val_split": "stratified by class, disjoint by group",
            "val_groups": sorted({str(groups[i]) for i in val if groups[i] is not None})}


def video_vectors(file: EmbeddingFile, chunk_rows: int = SCORING_ROWS) -> np.ndarray:
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

    def groups(self, role: str) -> list[str | None]:
        """The group of each item of a role's split (as `items` orders them): None where the dataset defines none."""
        return [item.group for item in self.items(role)]

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
                     f"has extraction_hash {protocol.extraction_hash[:12]} (file -> card: "
                     f"{'; '.join(extraction_differences(file.header.protocol_json, protocol)) or 'same settings'})")
    notes += _token_notes(file, protocol, path)
    if manifest is None:
        return notes
    if file.header.manifest_hash != manifest.hash:
        source = f"{data_root} resolves to" if data_root is not None else "the card's manifest has"
        notes.append(f"{path} was extracted from a manifest with hash {file.header.manifest_hash[:12]} but "
                     f"{source} {manifest.hash[:12]} (different clips, labels, splits or groups)")
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
