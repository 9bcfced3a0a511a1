"""The `davis` adapter: the official DAVIS folder layout (JPEG frames, PNG annotations, ImageSets lists)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ManifestError
from ..protocol import ROLES
from .base import Adapter, CardValueError, Manifest, build_manifest, check_choice

# the split lists each DAVIS release ships under ImageSets/<year>/
SPLITS = {"2016": ("train", "val"), "2017": ("train", "val", "test-dev", "test-challenge")}
RESOLUTIONS = ("480p", "Full-Resolution")


def _check(dataset: dict) -> None:
    year = str(dataset.get("year", 2017))
    if year not in SPLITS:
        raise CardValueError("year", f"must be 2016 or 2017, got {dataset.get('year')!r}")
    check_choice(dataset, "resolution", "480p", RESOLUTIONS)
    for role in ROLES:
        if role in dataset and dataset[role] not in SPLITS[year]:
            raise CardValueError(role, f"names split {dataset[role]!r}, which DAVIS-{year} does not define "
                                       f"(its splits: {', '.join(SPLITS[year])})")


def _resolve(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """Sequences of `ImageSets/<year>/<split>.txt`; each item is a folder of frames with its annotation folder."""
    year = str(dataset.get("year", 2017))
    resolution = dataset.get("resolution", "480p")
    rows = []
    for split in splits:
        listing = root / "ImageSets" / year / f"{split}.txt"
        if not listing.is_file():
            raise ManifestError(f"{listing}: split list not found (is {root} a DAVIS root?)")
        for line_no, line in enumerate(listing.read_text().splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            frames = Path("JPEGImages") / resolution / name
            annotations = Path("Annotations") / resolution / name
            if not (root / annotations).is_dir():
                raise ManifestError(f"{listing} line {line_no}: no annotations folder {root / annotations}")
            rows.append({"line": line_no, "id": name, "path": str(frames), "split": split, "masks": str(annotations)})
    return build_manifest(root, rows, str(root / "ImageSets" / year), splits, None, None, False, require_files)


ADAPTER = Adapter("davis", frozenset({"year", "resolution"}), _resolve, check=_check)
