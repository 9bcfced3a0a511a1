"""The localization and segmentation probes end to end: sequence files (`sequences/<id>`) and manifests with segments,
scored through `scoring.score` into records (mAP and MS-TCN's metrics with intervals), deterministic, learning what
the features carry; and a file without sequences refused in one line."""

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from evalharness.cards import parse_protocol
from evalharness.datasets import Item, Manifest, Segment
from evalharness.errors import HarnessError
from evalharness.localization_metrics import THUMOS_TIOU, Detections, mean_average_precision
from evalharness.probes.localization import Video, map_per_threshold
from evalharness.probes.segmentation import Video as SegVideo
from evalharness.scoring import score
from evalharness.store import Chunk, Header, finalize, write_part
from evalharness.store.layout import FeatureSequence

pytestmark = pytest.mark.usefixtures("one_thread")
DIM = 8
TINY_SEG = {"stages": 2, "layers": 4, "channels": 16, "epochs": 12, "batch_size": 2, "lr": 0.01}
TINY_LOC = {"preset": "custom", "max_seq_len": 64, "dim": 32, "heads": 4, "windows": [5, 5, 5], "stem_blocks": 1,
            "regression_ranges": [[0, 4], [4, 8], [8, 10000]], "epochs": 9, "warmup_epochs": 1, "batch_size": 4,
            "lr": 0.003, "init_loss_norm": 10, "ema_decay": 0.9, "max_seg_num": 20}
SLIDING = {"count": 4, "sampling": "sliding", "window_frames": 4, "overlap": 0.75}  # hop 1: snippet t covers t..t+3


def sequence_file(folder: Path, protocol, manifest: Manifest, features: dict[str, np.ndarray],
                  times: dict[str, np.ndarray] | None = None) -> Path:
    """An embedding file holding each video's (T, D) sequence of snippets t = [t, t + 3] (hop 1), as extraction
    writes one of a sliding card."""
    ids = manifest.ids
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol=protocol.name,
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment="{}")
    sequences = {}
    for vid in ids:
        t = np.arange(len(features[vid]))
        sequences[vid] = FeatureSequence(features[vid], np.stack([t, t + 3], 1).astype(np.int32),
                                         times[vid] if times else (t + 1.5) / 25)
    clip = np.stack([features[vid].mean(0, keepdims=True) for vid in ids]).astype(np.float32)
    index = np.array([[[0, len(features[vid]) + 2]] for vid in ids], dtype=np.int32)
    parts = folder / "parts"
    parts.mkdir()
    write_part(parts, header, 0, 1, len(ids), Chunk(ids, clip, index, sequences=sequences), 1, 1, "float32", None,
               sequences=True)
    return finalize([parts], folder / "sequences.h5")


def card(task: str, dataset: dict, probes: dict):
    return parse_protocol({"name": "t", "version": 1, "task": task, "dataset": {"adapter": "manifest", **dataset},
                           "frames": SLIDING, "transform": {"resize_short": 32}, "probes": probes})


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    """Nine videos in three folds: runs of 5-19 frames of one of three classes; each snippet's feature the one-hot
    code of its centre frame's class + noise."""
    rng = np.random.default_rng(0)
    classes = ("background", "cut", "stir")
    items, features = [], {}
    for n in range(9):
        labels: list[int] = []
        while len(labels) < 60:
            labels += [int(rng.integers(3))] * int(rng.integers(5, 20))
        frames = np.array(labels)
        starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
        ends = np.r_[starts[1:], len(frames)] - 1
        vid = f"v{n}"
        items.append(Item(vid, Path(f"{vid}.mp4"), "all", group=f"fold{n % 3 + 1}",
                          segments=tuple(Segment(int(s), int(e), classes[frames[s]]) for s, e in zip(starts, ends, strict=True))))
        centres = np.arange(len(frames) - 3) + 1
        x = 0.3 * rng.standard_normal((len(centres), DIM)).astype(np.float32)
        x[np.arange(len(centres)), frames[centres]] += 1.0
        features[vid] = x
    manifest = Manifest(Path("."), tuple(items), classes)
    protocol = card("segmentation", {"test": "all"}, {"segmentation": TINY_SEG})
    folder = tmp_path_factory.mktemp("seg")
    return sequence_file(folder, protocol, manifest, features), protocol, manifest


def test_segmentation_probe_learns_the_frames_and_is_deterministic(segmentation):
    path, protocol, manifest = segmentation
    record, again = (score(path, protocol, manifest=manifest)[0] for _ in range(2))
    assert record["metrics"] == again["metrics"] and record["chosen"] == again["chosen"]
    metrics = record["metrics"]
    assert set(metrics) == {"accuracy", "edit", "F1@10", "F1@25", "F1@50"} and record["headline"] == "F1@50"
    assert metrics["accuracy"]["value"] > 0.85 and metrics["F1@50"]["value"] > 0.6, metrics
    for m in metrics.values():
        assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["n"] == 9 and m["unit"] == "fraction"
    assert sorted(record["chosen"]["epochs"]) == ["fold1/seed0", "fold2/seed0", "fold3/seed0"]
    assert record["predictions"]["ids"] == manifest.ids and len(record["predictions"]["value"]) == 9


def test_each_frame_takes_its_nearest_snippet():
    video = SegVideo("v", np.zeros((3, 1), np.float32), np.array([1, 3, 5]), np.zeros(8, np.int64))
    assert video.frame_predictions(np.array([7, 8, 9])).tolist() == [7, 7, 7, 8, 8, 9, 9, 9]  # ties: the earlier
    assert video.targets.tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def localization(tmp_path_factory):
    """16 train and 6 test videos of 40-64 snippets (centres every 0.5 s from 0.25 s): background code, and actions of
    6-16 snippets carrying their class's code; segments in seconds."""
    rng = np.random.default_rng(1)
    classes = ("jump", "run")
    items, features, times = [], {}, {}
    for n in range(22):
        length = int(rng.integers(40, 65))
        x = 0.2 * rng.standard_normal((length, DIM)).astype(np.float32)
        x[:, 2] += 1.0
        segments, t = [], int(rng.integers(2, 8))
        while t + (size := int(rng.integers(6, 17))) <= length - 2:
            c = int(rng.integers(2))
            x[t:t + size, 2] -= 1.0
            x[t:t + size, c] += 1.0
            segments.append(Segment(0.5 * t, 0.5 * (t + size), classes[c]))
            t += size + int(rng.integers(4, 10))
        vid = f"v{n:02d}"
        items.append(Item(vid, Path(f"{vid}.mp4"), "train" if n < 16 else "test", segments=tuple(segments)))
        features[vid], times[vid] = x, 0.25 + 0.5 * np.arange(length)
    manifest = Manifest(Path("."), tuple(items), classes)
    protocol = card("localization", {"train": "train", "test": "test"}, {"localization": TINY_LOC})
    folder = tmp_path_factory.mktemp("loc")
    return sequence_file(folder, protocol, manifest, features, times), protocol, manifest


def test_localization_probe_finds_the_actions_in_seconds(localization):
    path, protocol, manifest = localization
    record = score(path, protocol, manifest=manifest)[0]
    metrics = record["metrics"]
    assert record["headline"] == "mAP" and list(metrics) == ["mAP", "mAP@0.30", "mAP@0.40", "mAP@0.50", "mAP@0.60",
                                                             "mAP@0.70"]
    assert metrics["mAP"]["value"] > 0.5 and metrics["mAP@0.30"]["value"] >= metrics["mAP@0.70"]["value"], metrics
    assert metrics["mAP"]["value"] == pytest.approx(np.mean([metrics[k]["value"] for k in list(metrics)[1:]]))
    assert metrics["mAP"]["n"] == 6 and record["chosen"]["tiou"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert record["config"] == protocol.probes["localization"] and asdict(protocol)["name"] == "t"


def test_map_ignores_predictions_of_classes_the_truth_lacks():
    gt = Detections(["a"], np.array([[0.0, 2.0]]), ["jump"])
    preds = Detections(["a", "a"], np.array([[0.0, 2.0], [0.0, 2.0]]), ["jump", "swim"], np.array([0.5, 0.9]))
    assert map_per_threshold(gt, preds, THUMOS_TIOU).tolist() == [1.0] * 5
    assert mean_average_precision(gt, Detections(["a"], np.array([[0.0, 2.0]]), ["jump"], np.array([0.5])),
                                  THUMOS_TIOU)[1] == 1.0


def test_seconds_and_feature_units_agree():
    video = Video("v", np.zeros((5, 1), np.float32), 0.25 + 0.5 * np.arange(5), np.array([[0.25, 1.25]]), ("a",))
    assert video.units(np.array([0.25, 1.25, 99.0])).tolist() == [0.0, 2.0, 5.0]
    assert video.seconds(np.array([0.0, 2.0])).tolist() == [0.25, 1.25]


def test_a_file_without_sequences_is_refused_in_one_line(tmp_path, localization):
    _, protocol, manifest = localization
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol="t",
                    protocol_version=1, extraction_hash=protocol.extraction_hash, protocol_json="{}",
                    manifest_hash=manifest.hash, harness_version="0", environment="{}")
    ids = manifest.ids
    (tmp_path / "parts").mkdir()
    write_part(tmp_path / "parts", header, 0, 1, len(ids), Chunk(ids, np.ones((len(ids), 1, DIM), np.float32),
                                                                  np.zeros((len(ids), 1, 2), np.int32)), 1, 1, "float32")
    path = finalize([tmp_path / "parts"], tmp_path / "clips.h5")
    with pytest.raises(HarnessError) as info:
        score(path, protocol, manifest=manifest)
    assert "no feature sequence" in str(info.value) and "\n" not in str(info.value)
