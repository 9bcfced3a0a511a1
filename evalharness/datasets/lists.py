"""Adapters for the official split files of UCF101, HMDB51, Kinetics, Something-Something v2 and MSR-VTT.

Each reads the dataset's own lists (never a directory listing), so a card resolves to
the same clips on every machine; a listed video missing on disk stays in the manifest
(extraction records it as a failure) unless the card sets `require_files: true`.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ..errors import ManifestError
from .base import Adapter, CardValueError, Manifest, build_manifest, check_choice, check_types


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise ManifestError(f"{path}: split list not found")
    return [(n, line.strip()) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]


def ucf101_group(name: str) -> str | None:
    """`v_<Class>_g<NN>_c<MM>` -> `<Class>_g<NN>`: the clips of one group share actors and background."""
    match = re.fullmatch(r"v_(.+_g\d+)_c\d+", name)
    return match.group(1) if match else None


def hmdb51_group(name: str, label: str) -> str | None:
    """`<source>_<action>_<body>_<camera>_<people>_<view>_<quality>_<n>` -> `<source>`: HMDB51 cuts several clips
    from one film or video, named by it."""
    match = re.fullmatch(rf"(.+)_{re.escape(label)}_[a-z]+_(?:cm|nm)_np\d+_[a-z]+_(?:bad|med|goo)_\d+", name)
    return match.group(1) if match else None


def _check_split_lists(dataset: dict) -> None:
    """UCF101 and HMDB51 ship three train/test split sets."""
    check_types(dataset, {"split_set": int, "lists": str, "videos": str, "require_files": bool})
    check_choice(dataset, "split_set", 1, (1, 2, 3))


def ucf101(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """`ucfTrainTestlist/classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`; videos `UCF-101/<Class>/<name>.avi`."""
    n = dataset.get("split_set", 1)
    lists, videos = root / dataset.get("lists", "ucfTrainTestlist"), dataset.get("videos", "UCF-101")
    classes = [line.split()[1] for _, line in _lines(lists / "classInd.txt")]
    rows = []
    for split, name in (("train", f"trainlist{n:02d}.txt"), ("test", f"testlist{n:02d}.txt")):
        for line_no, line in _lines(lists / name):
            rel = line.split()[0]
            rows.append({"line": line_no, "id": Path(rel).stem, "path": f"{videos}/{rel}", "split": split,
                         "label": rel.split("/")[0], "group": ucf101_group(Path(rel).stem)})
    return build_manifest(root, rows, str(lists), splits, classes, None, require_labels,
                          require_files or bool(dataset.get("require_files")))


def hmdb51(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """`<lists>/hmdb51_split{N}_{train,test}.txt` with lines `class/video.avi class index`; videos `<videos>/class/video.avi`."""
    n = dataset.get("split_set", 1)
    lists, videos = root / dataset.get("lists", "splits"), dataset.get("videos", "videos")
    rows = []
    for split in ("train", "test"):
        path = lists / f"hmdb51_split{n}_{split}.txt"
        for line_no, line in _lines(path):
            parts = line.split()
            if len(parts) < 2:
                raise ManifestError(f"{path} line {line_no}: expected 'class/video.avi class index'")
            rows.append({"line": line_no, "id": Path(parts[0]).stem, "path": f"{videos}/{parts[0]}", "split": split,
                         "label": parts[1], "group": hmdb51_group(Path(parts[0]).stem, parts[1])})
    return build_manifest(root, rows, str(lists), splits, None, None, require_labels,
                          require_files or bool(dataset.get("require_files")))


KINETICS_NAMINGS = ("id_start_end", "youtube_id")
KINETICS_CLASSES = (400, 600, 700)


def _check_kinetics(dataset: dict) -> None:
    check_types(dataset, {"classes": (int, str), "annotations": str, "videos": str, "naming": str, "require_files": bool})
    if str(dataset.get("classes", 400)) not in {str(c) for c in KINETICS_CLASSES}:
        raise CardValueError("classes", f"must be one of {', '.join(map(str, KINETICS_CLASSES))} (Kinetics-400/600/700), "
                                        f"got {dataset['classes']!r}")
    check_choice(dataset, "naming", "id_start_end", KINETICS_NAMINGS)


def kinetics(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """`<annotations>/kinetics-<classes>_<split>.csv` (label, youtube_id, time_start, time_end, split);
    clips `<videos>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4` (the common downloaders'
    naming; `naming: youtube_id` for `<youtube_id>.mp4` in one folder)."""
    classes = str(dataset.get("classes", 400))
    folder = root / dataset.get("annotations", "annotations")
    naming = dataset.get("naming", "id_start_end")
    rows = []
    for split in splits:
        path = folder / f"kinetics-{classes}_{split}.csv"
        if not path.is_file():
            raise ManifestError(f"{path}: annotation csv not found")
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                vid = f"{row['youtube_id']}_{start:06d}_{end:06d}"
                rel = (f"{split}/{row['label']}/{vid}.mp4" if naming == "id_start_end" else f"{row['youtube_id']}.mp4")
                rows.append({"line": reader.line_num, "id": vid, "path": f"{dataset.get('videos', 'videos')}/{rel}",
                             "split": split, "label": row["label"], "group": row["youtube_id"]})
    return build_manifest(root, rows, str(folder), splits, None, None, require_labels,
                          require_files or bool(dataset.get("require_files")))


_SSV2_FILES = {"train": "something-something-v2-train.json", "validation": "something-something-v2-validation.json"}


def _json(path: Path) -> object:
    if not path.is_file():
        raise ManifestError(f"{path}: annotation file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None


def ssv2(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """`<annotations>/something-something-v2-{labels,train,validation}.json` as 20BN ships them; the class is
    the entry's template with its brackets removed; videos `<videos>/<id>.webm`."""
    folder = root / dataset.get("annotations", "labels")
    labels_path = folder / "something-something-v2-labels.json"
    labels = _json(labels_path)
    if not isinstance(labels, dict) or not labels:
        raise ManifestError(f"{labels_path}: expected an object mapping class names to indices")
    rows = []
    for split in splits:
        path = folder / _SSV2_FILES[split]
        entries = _json(path)
        if not isinstance(entries, list):
            raise ManifestError(f"{path}: expected a list of videos")
        for n, entry in enumerate(entries, 1):
            if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
                raise ManifestError(f"{path} entry {n}: expected an object with id and template")
            videos = dataset.get("videos", "20bn-something-something-v2")
            rows.append({"line": n, "id": str(entry["id"]), "path": f"{videos}/{entry['id']}.webm",
                         "split": split, "label": re.sub(r"\[([^\]]*)\]", r"\1", entry["template"])})
    return build_manifest(root, rows, str(folder), splits, labels.keys(), None, require_labels,
                          require_files or bool(dataset.get("require_files")))


def msrvtt(root: Path, dataset: dict, splits: list[str], require_labels: bool, require_files: bool) -> Manifest:
    """The 1k-A test set: `<annotations>/MSRVTT_JSFUSION_test.csv` (key, vid_key, video_id, sentence),
    one caption per video; videos `<videos>/<video_id>.mp4`."""
    path = root / dataset.get("annotations", "annotations") / "MSRVTT_JSFUSION_test.csv"
    if not path.is_file():
        raise ManifestError(f"{path}: 1k-A test csv not found")
    rows, captions = [], {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            rows.append({"line": reader.line_num, "id": row["video_id"],
                         "path": f"{dataset.get('videos', 'videos')}/{row['video_id']}.mp4",
                         "split": "test"})
            captions.setdefault(row["video_id"], []).append(row["sentence"])
    return build_manifest(root, rows, str(path), splits, None, captions, False,
                          require_files or bool(dataset.get("require_files")))


def _check_paths(dataset: dict) -> None:
    check_types(dataset, {"annotations": str, "videos": str, "require_files": bool})


_LISTS = frozenset({"split_set", "lists", "videos", "require_files"})
_FILES = frozenset({"annotations", "videos", "require_files"})
UCF101 = Adapter("ucf101", _LISTS, ucf101, ("train", "test"), _check_split_lists)
HMDB51 = Adapter("hmdb51", _LISTS, hmdb51, ("train", "test"), _check_split_lists)
KINETICS = Adapter("kinetics", _FILES | {"classes", "naming"}, kinetics, ("train", "val", "test"), _check_kinetics)
SSV2 = Adapter("ssv2", _FILES, ssv2, tuple(_SSV2_FILES), _check_paths)
MSRVTT = Adapter("msrvtt", _FILES, msrvtt, ("test",), _check_paths)
