"""The temporal tasks' adapters on small files in the official layouts: ActivityNet-1.3's JSON, THUMOS14's per-class
annotation lists, MS-TCN's bundles of 50Salads / GTEA / Breakfast."""

import json

import pytest
from click.testing import CliRunner

from evalharness.cards import parse_protocol
from evalharness.cli import cli
from evalharness.datasets import Segment, resolve_manifest
from evalharness.datasets.temporal import THUMOS14_CLASSES, frame_runs
from evalharness.errors import ManifestError

SLIDING = {"count": 4, "sampling": "sliding", "window_frames": 8}


def card(task, dataset):
    return parse_protocol({"name": "t", "version": 1, "task": task, "dataset": dataset, "frames": SLIDING,
                           "transform": {"resize_short": 32}})


ANET = {"version": "VERSION 1.3", "taxonomy": [], "database": {
    "abc": {"subset": "training", "duration": 20.0, "annotations": [{"segment": [1.5, 7.25], "label": "Surfing"},
                                                                   {"segment": [9.0, 12.0], "label": "Surfing"}]},
    "def": {"subset": "validation", "duration": 30.0, "annotations": [{"segment": [0.0, 30.0], "label": "Archery"}]},
    "ghi": {"subset": "testing", "duration": 10.0, "annotations": []}}}


def test_activitynet_segments_subsets_and_video_names(tmp_path):
    (tmp_path / "activity_net.v1-3.min.json").write_text(json.dumps(ANET))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v_abc.mkv").write_bytes(b"")
    protocol = card("localization", {"adapter": "activitynet", "train": "training", "test": "validation"})
    manifest = resolve_manifest(protocol, tmp_path)
    assert manifest.ids == ["abc", "def"] and manifest.classes == ("Archery", "Surfing")
    abc, other = manifest.items
    assert abc.split == "training" and abc.label is None and abc.path == tmp_path / "videos" / "v_abc.mkv"
    assert abc.segments == (Segment(1.5, 7.25, "Surfing"), Segment(9.0, 12.0, "Surfing"))
    assert other.path == tmp_path / "videos" / "v_def.mp4"  # missing: kept under its first name, extraction records it
    before = manifest.hash
    ANET["database"]["abc"]["annotations"][0]["segment"] = [1.5, 7.5]
    try:
        (tmp_path / "activity_net.v1-3.min.json").write_text(json.dumps(ANET))
        assert resolve_manifest(protocol, tmp_path).hash != before  # the annotations are part of what a score uses
    finally:
        ANET["database"]["abc"]["annotations"][0]["segment"] = [1.5, 7.25]
    (tmp_path / "activity_net.v1-3.min.json").write_text('{"database": {"abc": {"subset": "training", "annotations": '
                                                         '[{"segment": [5, 1], "label": "x"}]}}}')
    with pytest.raises(ManifestError, match=r"activity_net\.v1-3\.min\.json: .*before") as info:
        resolve_manifest(protocol, tmp_path)
    assert "\n" not in str(info.value)


def thumos_tree(root, lines):
    for subset, short in (("validation", "val"), ("test", "test")):
        folder = root / f"annotation_{short}"
        folder.mkdir()
        for label in THUMOS14_CLASSES:
            (folder / f"{label}_{short}.txt").write_text("".join(lines.get((subset, label), [])))
        (folder / f"Ambiguous_{short}.txt").write_text(f"video_{subset}_0000001 0.1 0.2\n")


def test_thumos14_reads_the_twenty_class_lists(tmp_path):
    thumos_tree(tmp_path, {("validation", "Diving"): ["video_validation_0000051 67.5 75.9\n",
                                                        "video_validation_0000051  1.0 2.0\n"],
                           ("validation", "CliffDiving"): ["video_validation_0000051 67.5 75.9\n"],
                           ("test", "Billiards"): ["video_test_0000004 0.2 1.1\n", "\n"]})
    protocol = card("localization", {"adapter": "thumos14", "train": "validation", "test": "test"})
    manifest = resolve_manifest(protocol, tmp_path)
    assert manifest.classes == THUMOS14_CLASSES and manifest.ids == ["video_test_0000004", "video_validation_0000051"]
    val = manifest.split("validation")[0]
    assert val.path == tmp_path / "validation" / "video_validation_0000051.mp4"
    assert val.segments == (Segment(1.0, 2.0, "Diving"), Segment(67.5, 75.9, "CliffDiving"),
                            Segment(67.5, 75.9, "Diving"))  # CliffDiving segments are also Diving, as annotated
    (tmp_path / "annotation_test" / "Billiards_test.txt").write_text("video_test_0000004 3.0 1.0\n")
    with pytest.raises(ManifestError, match=r"Billiards_test\.txt line 1: expected"):
        resolve_manifest(protocol, tmp_path)
    (tmp_path / "annotation_test" / "Billiards_test.txt").write_text("video_test_0000004 0.2 1.1\n")
    (tmp_path / "annotation_test" / "Shotput_test.txt").unlink()
    with pytest.raises(ManifestError, match=r"Shotput_test\.txt: THUMOS14 annotation file not found"):
        resolve_manifest(protocol, tmp_path)


def gtea_tree(root, videos):
    base = root / "gtea"
    (base / "groundTruth").mkdir(parents=True)
    (base / "splits").mkdir()
    (base / "mapping.txt").write_text("0 take\n1 open\n2 background\n")
    for fold in range(1, 5):
        names = [vid for vid, (f, _) in videos.items() if f == fold]
        (base / "splits" / f"test.split{fold}.bundle").write_text("".join(f"{v}.txt\n" for v in names))
    for vid, (_, labels) in videos.items():
        (base / "groundTruth" / f"{vid}.txt").write_text("".join(f"{label}\n" for label in labels))


def test_tas_folds_runs_and_mapping(tmp_path):
    gtea_tree(tmp_path, {"S1_Cheese_C1": (1, ["background", "take", "take", "open"]),
                         "S2_Tea_C1": (2, ["open"]), "S3_Pealate_C1": (3, ["take"]), "S4_Coffee_C1": (4, ["take"])})
    protocol = card("segmentation", {"adapter": "tas", "name": "gtea", "test": "all"})
    manifest = resolve_manifest(protocol, tmp_path)
    assert manifest.classes == ("background", "open", "take") and len(manifest.items) == 4
    first = manifest.items[0]
    assert first.group == "fold1" and first.split == "all"
    assert first.path == tmp_path / "gtea" / "videos" / "S1_Cheese_C1.mp4"
    assert first.segments == (Segment(0, 0, "background"), Segment(1, 2, "take"), Segment(3, 3, "open"))
    (tmp_path / "gtea" / "splits" / "test.split2.bundle").write_text("S2_Tea_C1.txt\nS1_Cheese_C1.txt\n")
    with pytest.raises(ManifestError, match=r"test\.split2\.bundle line 2: video 'S1_Cheese_C1' is also in the test "
                                            r"set of fold 1"):
        resolve_manifest(protocol, tmp_path)
    (tmp_path / "gtea" / "splits" / "test.split2.bundle").write_text("S2_Tea_C1.txt\n")
    (tmp_path / "gtea" / "groundTruth" / "S2_Tea_C1.txt").write_text("open\nstir\n")
    with pytest.raises(ManifestError, match=r"S2_Tea_C1\.txt: label 'stir' is not in mapping\.txt"):
        resolve_manifest(protocol, tmp_path)


def test_the_manifest_command_shows_folds_and_segments(tmp_path):
    gtea_tree(tmp_path, {"S1_Cheese_C1": (1, ["background", "take", "take", "open"]), "S2_Tea_C1": (2, ["open"]),
                         "S3_Pealate_C1": (3, ["take"]), "S4_Coffee_C1": (4, ["take", "open"])})
    result = CliRunner().invoke(cli, ["manifest", "-p", "gtea-tas", "-d", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "id,path,label,split,present,group,segments"
    assert lines[1] == "S1_Cheese_C1,{},,all,0,fold1,3".format(tmp_path / "gtea" / "videos" / "S1_Cheese_C1.mp4")
    assert "  all: 4 clips; segments: background 1, open 3, take 3" in lines


def test_frame_runs_cover_every_frame():
    labels = ["a", "a", "b", "a", "a", "a"]
    runs = frame_runs(labels)
    assert runs == (Segment(0, 1, "a"), Segment(2, 2, "b"), Segment(3, 5, "a"))
    assert [r.label for r in runs for _ in range(int(r.start), int(r.end) + 1)] == labels
