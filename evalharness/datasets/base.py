"""The resolved dataset a protocol runs on: ids, files, labels, splits, captions, masks."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..checksum import sha256_json
from ..errors import ManifestError
from ..protocol import ROLES


@dataclass(frozen=True)
class Segment:
    """A labelled stretch of a video: seconds [start, end] for localization (ActivityNet, THUMOS14), frames
    [start, end] inclusive for segmentation (a label for every frame, as MS-TCN's ground-truth files give them)."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Item:
    id: str
    path: Path
    split: str
    label: str | None = None
    masks: Path | None = None
    group: str | None = None  # clips that share a source (UCF101 group, HMDB51 source video, YouTube id); a fold
    segments: tuple[Segment, ...] | None = None  # the temporal tasks' annotation of the whole video


@dataclass(frozen=True)
class Manifest:
    """Items sorted by id, with the class list and captions; labels live here, never in embedding files."""

    root: Path
    items: tuple[Item, ...]
    classes: tuple[str, ...]
    captions: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None  # a smoke run's clips per split (`limited`): its scores are not comparable

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def split(self, name: str) -> list[Item]:
        return [item for item in self.items if item.split == name]

    def label_indices(self, items: Iterable[Item]) -> np.ndarray:
        """Class index of each item (position in the sorted class list)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[item.label] for item in items], dtype=np.int64)

    @property
    def hash(self) -> str:
        """sha256 of the sorted (id, label, split) rows, with the group where an item has one (it decides the
        validation split) and the segments where it has them: what a score depends on besides the embeddings."""
        return sha256_json([[item.id, item.label, item.split] + ([item.group] if item.group is not None else [])
                            + ([[[s.start, s.end, s.label] for s in item.segments]] if item.segments is not None
                               else []) for item in self.items])


def limited(manifest: Manifest, count: int) -> Manifest:
    """The first `count` clips of each split for a smoke run, taken in turn from each class (sorted by id within
    a class; unlabelled clips by their group, so a segmentation smoke run keeps several folds) so that a small run
    still sees every class it can; the subset has its own hash."""
    if count < 1:
        raise ManifestError(f"a limit must be at least 1 clip per split, got {count}")
    kept = []
    for split in sorted({item.split for item in manifest.items}):
        by_class: dict[str, list[Item]] = {}
        for item in manifest.split(split):
            by_class.setdefault(item.label or item.group or "", []).append(item)
        turns = [item for rank in range(max(map(len, by_class.values()))) for _, items in sorted(by_class.items())
                 if rank < len(items) for item in [items[rank]]]
        kept += turns[:count]
    ids = {item.id for item in kept}
    return replace(manifest, items=tuple(sorted(kept, key=lambda item: item.id)), limit=count,
                   captions={k: v for k, v in manifest.captions.items() if k in ids})


def build_manifest(root: Path, rows: list[dict], source: str, splits: Iterable[str],
                   classes: Iterable[str] | None = None, captions: dict[str, list[str]] | None = None,
                   require_labels: bool = True, require_files: bool = False, strict_splits: bool = False) -> Manifest:
    """Validate rows {line, id, path, split, label, masks, group, segments} and keep those in the card's splits.

    Duplicate ids, labels outside `classes`, missing labels, (when required) missing
    files and (with `strict_splits`, for a user's own lists, where `tset` is a typo and
    not a split to skip) a split the card does not use are errors naming the row.
    """
    wanted = set(splits)
    allowed = set(classes) if classes is not None else None
    seen: dict[str, int] = {}
    items = []
    for row in rows:
        where = f"{source} line {row['line']}"
        vid = row["id"]
        if not vid:
            raise ManifestError(f"{where}: empty id")
        if vid in seen:
            raise ManifestError(f"{where}: duplicate id '{vid}' (first on line {seen[vid]})")
        seen[vid] = row["line"]
        if row["split"] not in wanted:
            if strict_splits:
                raise ManifestError(f"{where}: id '{vid}' is in split {row['split']!r}, which the card does not use "
                                    f"(its splits: {', '.join(sorted(wanted))})")
            continue
        label = row.get("label") or None
        if require_labels and label is None:
            raise ManifestError(f"{where}: id '{vid}' has no label")
        if allowed is not None and label is not None and label not in allowed:
            raise ManifestError(f"{where}: id '{vid}' has unknown label '{label}'")
        path = root / row["path"]
        if require_files and not path.is_file():
            raise ManifestError(f"{where}: id '{vid}' file not found: {path}")
        masks = root / row["masks"] if row.get("masks") else None
        items.append(Item(vid, path, row["split"], label, masks, row.get("group") or None, row.get("segments")))
    if not items:
        raise ManifestError(f"{source}: no rows in splits {', '.join(sorted(wanted))}")
    items.sort(key=lambda item: item.id)
    labels = sorted({item.label for item in items if item.label is not None}
                    | {s.label for item in items for s in item.segments or ()})
    unknown = sorted(set(labels) - allowed) if allowed is not None else []
    if unknown:
        raise ManifestError(f"{source}: segment label {unknown[0]!r} is not one of the classes")
    class_list = tuple(sorted(allowed)) if allowed is not None else tuple(labels)
    kept = {item.id for item in items}
    return Manifest(root, tuple(items), class_list, {k: v for k, v in (captions or {}).items() if k in kept})


def read_csv_rows(path: Path, required: Iterable[str]) -> list[dict]:
    """Rows of a CSV as dicts with their 1-based line number; missing columns are an error naming the file."""
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        absent = [c for c in required if c not in columns]
        if absent:
            raise ManifestError(f"{path}: missing column(s) {', '.join(absent)} (has: {', '.join(columns)})")
        return [{**{k: (v or "").strip() for k, v in row.items() if k is not None}, "line": reader.line_num}
                for row in reader]


def read_captions(path: Path) -> dict[str, list[str]]:
    """Captions CSV `video_id,caption`, several rows per video allowed, in file order."""
    captions: dict[str, list[str]] = {}
    for row in read_csv_rows(path, ("video_id", "caption")):
        if not row["caption"]:
            raise ManifestError(f"{path} line {row['line']}: empty caption")
        captions.setdefault(row["video_id"], []).append(row["caption"])
    return captions


class CardValueError(ValueError):
    """A value of a card's dataset block that the adapter cannot satisfy: (key, what is wrong)."""

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key, self.problem = key, problem


def _no_check(dataset: dict) -> None:
    """Adapters whose keys take any value."""


Resolver = Callable[[Path, dict, list[str], bool, bool], Manifest]


@dataclass(frozen=True)
class Adapter:
    """A dataset layout: the card keys it takes, the split names it defines, a check of the card's values
    (run when the card is loaded), and how it resolves a data root into a manifest."""

    name: str
    keys: frozenset[str]
    resolve: Resolver
    splits: tuple[str, ...] | None = None
    check: Callable[[dict], None] = _no_check

    def check_card(self, dataset: dict) -> None:
        """Raise CardValueError for a split name the dataset does not define or a value the adapter refuses."""
        if self.splits is not None:
            for role in ROLES:
                if role in dataset and dataset[role] not in self.splits:
                    raise CardValueError(role, f"names split {dataset[role]!r}, which {self.name} does not define "
                                               f"(its splits: {', '.join(self.splits)})")
        self.check(dataset)


def check_types(dataset: dict, types: dict[str, type | tuple[type, ...]]) -> None:
    """Each present key must hold a value of its type (bool is not an int)."""
    for key, kind in types.items():
        if key not in dataset:
            continue
        value = dataset[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise CardValueError(key, f"must be a {names}, got {value!r}")


def check_choice(dataset: dict, key: str, default: Any, choices: tuple) -> None:
    """A key's value (or its default) must be one of `choices`."""
    value = dataset.get(key, default)
    if value not in choices:
        raise CardValueError(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
