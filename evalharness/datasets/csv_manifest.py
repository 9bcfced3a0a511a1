"""The `manifest` adapter: a user's CSV (`id,path,label,split`, paths relative to --data)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ManifestError
from .base import Adapter, CardValueError, Manifest, build_manifest, check_types, read_captions, read_csv_rows


def load_csv_manifest(root: Path, dataset: dict, splits: list[str], require_labels: bool,
                      require_files: bool, source_file: str = "manifest.csv", strict_splits: bool = False) -> Manifest:
    """Resolve a CSV manifest under `root` as a card's dataset block describes it (`strict_splits`: a row in a
    split the card does not use is an error, not skipped)."""
    path = root / dataset.get("file", source_file)
    label_column = dataset.get("label_column", "label")
    rows = read_csv_rows(path, ("id", "path", "split") + ((label_column,) if require_labels else ()))
    for row in rows:
        row["label"] = row.get(label_column, "")
    captions = None
    if dataset.get("captions"):
        captions_path = root / dataset["captions"]
        captions = read_captions(captions_path)
        known = {row["id"] for row in rows}
        stray = sorted(set(captions) - known)
        if stray:
            raise ManifestError(f"{captions_path}: caption for unknown video id '{stray[0]}'")
    return build_manifest(root, rows, str(path), splits, dataset.get("classes"), captions,
                          require_labels, require_files or bool(dataset.get("require_files")), strict_splits)


def _resolve(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    return load_csv_manifest(root, dataset, splits, require_labels, require_files, strict_splits=True)


def _check(dataset: dict) -> None:
    check_types(dataset, {"file": str, "captions": str, "label_column": str, "classes": list, "require_files": bool})
    if "classes" in dataset and not all(isinstance(c, str) for c in dataset["classes"]):
        raise CardValueError("classes", "must be a list of class names (strings)")


ADAPTER = Adapter("manifest", frozenset({"file", "captions", "label_column", "classes", "require_files"}), _resolve,
                  check=_check)
