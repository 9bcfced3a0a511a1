"""Adapters for the temporal tasks' official annotation files: ActivityNet-1.3 and THUMOS14 (labelled segments in
seconds, for localization) and the MS-TCN bundles of 50Salads, GTEA and Breakfast (a label per frame, for
segmentation, with their cross-validation folds).

As for the other adapters, the annotation files decide the videos (never a directory listing); a video the
annotations name but the disk lacks stays in the manifest, and extraction records it as a failure.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ManifestError
from ..localization_metrics import read_ground_truth
from .base import Adapter, Manifest, Segment, build_manifest, check_choice, check_types

ANET_SUBSETS = ("training", "validation")  # the testing subset's annotations were never released
ANET_EXTENSIONS = (".mp4", ".mkv", ".webm")  # what ActivityNet's downloaders write, tried in this order
THUMOS14_CLASSES = ("BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving", "CricketBowling",
                    "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow", "HighJump", "JavelinThrow",
                    "LongJump", "PoleVault", "Shotput", "SoccerPenalty", "TennisSwing", "ThrowDiscus",
                    "VolleyballSpiking")
THUMOS14_SUBSETS = {"validation": "val", "test": "test"}
TAS_FOLDS = {"50salads": 5, "gtea": 4, "breakfast": 4}  # MS-TCN's standard cross-validation
TAS_EXTENSIONS = {"50salads": ".avi", "gtea": ".mp4", "breakfast": ".avi"}
MAX_FRAME_LABELS = 1_000_000  # lines of one ground-truth file (Breakfast's longest video has under 10,000)


def _require_files(dataset: dict, require_files: bool) -> bool:
    return require_files or bool(dataset.get("require_files"))


def _found(root: Path, folder: str, names: list[str]) -> str:
    """The first of `names` under root/folder that is a file, else the first (a missing video, recorded as such)."""
    return next((f"{folder}/{name}" for name in names if (root / folder / name).is_file()), f"{folder}/{names[0]}")


def _check_activitynet(dataset: dict) -> None:
    check_types(dataset, {"annotations": str, "videos": str, "require_files": bool})


def activitynet(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """`activity_net.v1-3.min.json` (subsets training and validation, segments in seconds); videos
    `<videos>/v_<id>.mp4` (or `.mkv`, `.webm`, with or without the `v_` prefix, as downloaders name them)."""
    path = root / dataset.get("annotations", "activity_net.v1-3.min.json")
    videos = dataset.get("videos", "videos")
    rows, segments = [], {}
    for subset in splits:
        gt = read_ground_truth(path, subset)
        for vid, (start, end), label in zip(gt.videos, gt.segments, gt.labels, strict=True):
            segments.setdefault(vid, []).append(Segment(float(start), float(end), str(label)))
        for line, vid in enumerate(dict.fromkeys(gt.videos), 1):
            names = [f"{prefix}{vid}{ext}" for ext in ANET_EXTENSIONS for prefix in ("v_", "")]
            rows.append({"line": line, "id": vid, "path": _found(root, videos, names), "split": subset,
                         "segments": tuple(segments[vid])})
    return build_manifest(root, rows, str(path), splits, None, None, False, _require_files(dataset, require_files))


def _check_thumos14(dataset: dict) -> None:
    check_types(dataset, {key: str for key in ("annotations_validation", "annotations_test", "videos_validation",
                                              "videos_test")} | {"require_files": bool})


_THUMOS_LINE = re.compile(r"(video_(?:validation|test)_\d{7})\s+(\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)")


def thumos14(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """The 20-class temporal annotations: `<annotations_S>/<Class>_<val|test>.txt` with lines `video start end`
    (seconds); videos `<videos_S>/<video>.mp4`. The videos of a subset are those with at least one segment of the
    20 classes (200 validation, 213 test videos); `Ambiguous_*.txt` segments are not actions and are not read."""
    rows, segments = [], {}
    for subset in splits:
        folder = root / dataset.get(f"annotations_{subset}", f"annotation_{THUMOS14_SUBSETS[subset]}")
        for label in THUMOS14_CLASSES:
            path = folder / f"{label}_{THUMOS14_SUBSETS[subset]}.txt"
            if not path.is_file():
                raise ManifestError(f"{path}: THUMOS14 annotation file not found")
            for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                match = _THUMOS_LINE.fullmatch(line.strip())
                if not match or float(match.group(3)) < float(match.group(2)):
                    raise ManifestError(f"{path} line {line_no}: expected 'video_{subset}_NNNNNNN start end' "
                                        "with end >= start")
                segments.setdefault((subset, match.group(1)), []).append(
                    Segment(float(match.group(2)), float(match.group(3)), label))
        videos = dataset.get(f"videos_{subset}", subset)
        rows += [{"line": n, "id": vid, "path": f"{videos}/{vid}.mp4", "split": subset,
                  "segments": tuple(sorted(found, key=lambda s: (s.start, s.end, s.label)))}
                 for n, ((sub, vid), found) in enumerate(sorted(segments.items()), 1) if sub == subset]
    return build_manifest(root, rows, str(root), splits, THUMOS14_CLASSES, None, False,
                          _require_files(dataset, require_files))


def _check_tas(dataset: dict) -> None:
    check_types(dataset, {"name": str, "videos": str, "extension": str, "require_files": bool})
    check_choice(dataset, "name", None, tuple(TAS_FOLDS))


def frame_runs(labels: list[str]) -> tuple[Segment, ...]:
    """Per-frame labels as runs: Segment(first frame, last frame, label), consecutive and covering every frame."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append(Segment(start, i - 1, labels[start]))
            start = i
    return tuple(runs)


def _frame_labels(path: Path, classes: set[str]) -> tuple[Segment, ...]:
    """A ground-truth file's runs (one class name per line, one line per frame), every name a class of mapping.txt."""
    if not path.is_file():
        raise ManifestError(f"{path}: ground-truth file not found")
    if path.stat().st_size > 64 * MAX_FRAME_LABELS:
        raise ManifestError(f"{path}: {path.stat().st_size} bytes, more than a ground-truth file of "
                            f"{MAX_FRAME_LABELS} frames")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    unknown = next((label for label in labels if label not in classes), None)
    if not labels or unknown is not None:
        raise ManifestError(f"{path}: " + (f"label {unknown!r} is not in mapping.txt" if labels else "no labels"))
    return frame_runs(labels)


def _mapping(path: Path) -> list[str]:
    """mapping.txt's class names (lines `index name`, indices 0, 1, ... in order)."""
    if not path.is_file():
        raise ManifestError(f"{path}: mapping.txt not found")
    names = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[0] != str(len(names)):
            raise ManifestError(f"{path} line {line_no}: expected '{len(names)} <class name>'")
        names.append(parts[1])
    return names


def tas(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """MS-TCN's layout of 50Salads, GTEA or Breakfast under `<root>/<name>/`: `mapping.txt`, `groundTruth/<video>.txt`
    and `splits/test.split<k>.bundle`; videos `<videos>/<video><extension>`. Every video is in the one split `all`,
    its group the fold whose test bundle names it (`fold<k>`): the segmentation probe trains on the other folds."""
    name = dataset["name"]
    base = root / name
    classes = _mapping(base / "mapping.txt")
    videos, ext = dataset.get("videos", f"{name}/videos"), dataset.get("extension", TAS_EXTENSIONS[name])
    rows, fold_of = [], {}
    for fold in range(1, TAS_FOLDS[name] + 1):
        bundle = base / "splits" / f"test.split{fold}.bundle"
        if not bundle.is_file():
            raise ManifestError(f"{bundle}: split bundle not found ({name} has {TAS_FOLDS[name]} folds)")
        for line_no, line in enumerate(bundle.read_text(encoding="utf-8").splitlines(), 1):
            vid = line.strip().removesuffix(".txt")
            if not vid:
                continue
            if vid in fold_of:
                raise ManifestError(f"{bundle} line {line_no}: video {vid!r} is also in the test set of fold "
                                    f"{fold_of[vid]}")
            fold_of[vid] = fold
            rows.append({"line": line_no, "id": vid, "path": f"{videos}/{vid}{ext}", "split": "all",
                         "group": f"fold{fold}",
                         "segments": _frame_labels(base / "groundTruth" / f"{vid}.txt", set(classes))})
    return build_manifest(root, rows, str(base / "splits"), splits, classes, None, False,
                          _require_files(dataset, require_files))


ACTIVITYNET = Adapter("activitynet", frozenset({"annotations", "videos", "require_files"}),
                      activitynet, ANET_SUBSETS, _check_activitynet)
THUMOS14 = Adapter("thumos14", frozenset({"annotations_validation", "annotations_test", "videos_validation",
                                          "videos_test", "require_files"}), thumos14, tuple(THUMOS14_SUBSETS),
                   _check_thumos14)
TAS = Adapter("tas", frozenset({"name", "videos", "extension", "require_files"}), tas, ("all",), _check_tas)
