"""Temporal localization mAP and segmentation metrics against copies of the reference code (tests/reference_temporal.py:
ActivityNet's eval_detection.py, MS-TCN's eval.py) on random held-out cases, and the JSON readers on hostile files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import reference_temporal as ref

from evalharness import localization_metrics as loc
from evalharness import segmentation_metrics as seg
from evalharness.errors import AnnotationFileError

# ------------------------------------------------------------------------------------------------ localization

SCORES = [0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]  # few distinct values: many ties
# tIoU with [0, 10] of [0, x] is x / 10: exactly each ActivityNet and THUMOS threshold, and neighbours of them
BOUNDARY_ENDS = [3.0, 4.0, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 2.9, 4.1, 8.9]


def random_case(seed: int) -> tuple[dict, dict]:
    """A ground-truth and a prediction file's JSON: several videos and classes, tied scores, duplicate predictions,
    a class nobody predicts, predictions in videos without ground truth, tIoUs exactly at the thresholds."""
    rng = np.random.default_rng(seed)
    classes = [f"class {c}" for c in range(6)]
    database, results = {}, {}
    for v in range(14):
        video = f"v_{seed}_{v}"
        subset = "training" if v % 5 == 4 else "validation"
        annotations = []
        for _ in range(int(rng.integers(0, 5))):
            start = float(rng.integers(0, 60)) * 0.5
            annotations.append({"segment": [start, start + float(rng.integers(1, 30)) * 0.5],
                                "label": classes[int(rng.integers(0, 5))]})  # class 5 only ever predicted never
        if v == 0:
            annotations.append({"segment": [0.0, 10.0], "label": classes[0]})
        database[video] = {"subset": subset, "annotations": annotations}
        preds = []
        for a in annotations:
            for _ in range(int(rng.integers(0, 4))):
                s, e = a["segment"]
                jitter = rng.integers(-4, 5, size=2) * 0.5
                s2, e2 = s + jitter[0], max(e + jitter[1], s + jitter[0])
                label = a["label"] if rng.random() < 0.8 else classes[int(rng.integers(0, 5))]
                preds.append({"label": label, "score": float(rng.choice(SCORES)), "segment": [s2, e2]})
        if preds and rng.random() < 0.5:
            preds.append(dict(preds[0]))  # a duplicate
        if v == 0:
            preds += [{"label": classes[0], "score": float(rng.choice(SCORES)), "segment": [0.0, x]} for x in BOUNDARY_ENDS]
        results[video] = preds
    results[f"v_{seed}_unknown"] = [{"label": classes[0], "score": 0.5, "segment": [1.0, 2.0]},
                                    {"label": classes[0], "score": 0.9, "segment": [0.0, 3.0]}]
    known = {a["label"] for entry in database.values() if entry["subset"] == "validation" for a in entry["annotations"]}
    for preds in results.values():  # the reference fails on a label without ground truth in the subset
        for pred in preds:
            pred["label"] = pred["label"] if pred["label"] in known else classes[0]
    gt = {"version": "VERSION 1.3", "taxonomy": [], "database": database}
    return gt, {"version": "VERSION 1.3", "external_data": {}, "results": results}


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thresholds", [loc.ANET_TIOU, loc.THUMOS_TIOU], ids=["anet", "thumos"])
def test_map_equals_activitynet_reference(tmp_path, seed, thresholds):
    gt_json, pred_json = random_case(seed)
    gt_path, pred_path = write_json(tmp_path / "gt.json", gt_json), write_json(tmp_path / "pred.json", pred_json)
    reference = ref.ANETdetection(gt_path, pred_path, tiou_thresholds=thresholds, subset="validation")
    reference.evaluate()
    gt, preds = loc.read_ground_truth(gt_path, "validation"), loc.read_predictions(pred_path)
    assert loc.class_order(gt) == list(reference.activity_index)
    np.testing.assert_allclose(loc.average_precision(gt, preds, thresholds), reference.ap, rtol=0, atol=1e-6)
    per_threshold, average = loc.mean_average_precision(gt, preds, thresholds)
    np.testing.assert_allclose(per_threshold, reference.mAP, rtol=0, atol=1e-6)
    assert average == pytest.approx(reference.average_mAP, abs=1e-6)
    assert 0 < average < 1


def test_many_tied_predictions_of_one_class_rank_as_the_reference(tmp_path):
    """Hundreds of predictions with three scores: numpy's unstable sort orders the ties; ours orders them the same."""
    rng = np.random.default_rng(7)
    database = {f"v{v}": {"subset": "validation", "annotations": [
        {"segment": [float(s), float(s) + 4.0], "label": "a"} for s in range(0, 40, 8)]} for v in range(10)}
    results = {f"v{v}": [{"label": "a", "score": float(rng.choice([0.2, 0.5, 0.8])),
                          "segment": [float(s), float(s) + float(rng.integers(2, 7))]}
                         for s in rng.integers(0, 40, size=40)] for v in range(10)}
    gt_path = write_json(tmp_path / "gt.json", {"database": database})
    pred_path = write_json(tmp_path / "pred.json", {"results": results})
    reference = ref.ANETdetection(gt_path, pred_path, subset="validation")
    reference.evaluate()
    per_threshold, _ = loc.mean_average_precision(loc.read_ground_truth(gt_path), loc.read_predictions(pred_path))
    np.testing.assert_allclose(per_threshold, reference.mAP, rtol=0, atol=1e-6)


def test_thresholds_are_built_as_the_reference_builds_them():
    assert loc.ANET_TIOU.tolist() == np.linspace(0.5, 0.95, 10).tolist()
    assert loc.THUMOS_TIOU.tolist() == np.linspace(0.3, 0.7, 5).tolist()
    assert loc.THUMOS_TIOU[1] != 0.4  # linspace's 0.39999999999999997, as ActionFormer compares


def test_segment_iou_and_interpolated_ap_match_the_reference():
    rng = np.random.default_rng(3)
    for _ in range(50):
        target = np.sort(rng.integers(0, 20, size=2)).astype(float)
        candidates = np.sort(rng.integers(0, 20, size=(6, 2)), axis=1).astype(float) + [[0, 1]]
        np.testing.assert_array_equal(loc.segment_iou(target, candidates), ref.segment_iou(target, candidates))
        tp = rng.random(12) < 0.5
        recall, precision = np.cumsum(tp) / 8, np.cumsum(tp) / np.arange(1, 13)
        assert loc.interpolated_ap(precision, recall) == ref.interpolated_prec_rec(precision, recall)


def test_a_class_without_predictions_scores_zero_and_an_unknown_label_is_refused():
    gt = loc.Detections(["v", "v"], [[0, 1], [2, 3]], ["a", "b"])
    preds = loc.Detections(["v"], [[0, 1]], ["a"], [0.5])
    assert loc.average_precision(gt, preds, np.array([0.5])).tolist() == [[1.0, 0.0]]
    with pytest.raises(ValueError, match="lacks"):
        loc.average_precision(gt, loc.Detections(["v"], [[0, 1]], ["c"], [0.5]))


def test_subset_filter_and_file_order(tmp_path):
    path = write_json(tmp_path / "gt.json", {"database": {
        "x": {"subset": "testing", "annotations": [{"segment": [0, 1], "label": "z"}]},
        "y": {"subset": "validation", "annotations": [{"segment": [2, 3.5], "label": "b"}, {"segment": [1, 2], "label": "a"}]}}})
    gt = loc.read_ground_truth(path, "validation")
    assert gt.videos == ("y", "y") and gt.labels == ("b", "a") and gt.segments.tolist() == [[2, 3.5], [1, 2]]
    assert len(loc.read_ground_truth(path, None).videos) == 3


# ------------------------------------------------------------------------------------------------ hostile files

GOOD_PRED = {"results": {"v": [{"label": "a", "score": 0.5, "segment": [0, 1]}]}}


@pytest.mark.parametrize(("text", "reader", "problem"), [
    ('{"database": {', "gt", "not valid JSON"),
    ('{"results": {"v": [{"label": "a", "score": NaN, "segment": [0, 1]}]}}', "pred", "NaN"),
    ('{"results": {"v": [{"label": "a", "score": 0.5, "segment": [0, 1e999]}]}}', "pred", "finite"),
    ('{"results": {"v": [{"label": "a", "score": 1%s, "segment": [0, 1]}]}}' % ("0" * 400), "pred", "finite"),
    ('{"database": {"v": {"subset": "validation", "annotations": [{"segment": [5, 2], "label": "a"}]}}}', "gt", "before"),
    ('{"results": {"v": [{"label": "a", "score": 0.5, "segment": "0-1"}]}}', "pred", "'segment' is a str"),
    ('{"results": {"v": [{"label": ["a"], "score": 0.5, "segment": [0, 1]}]}}', "pred", "'label' is a list"),
    ('{"results": {"v": [{"label": "a", "score": "high", "segment": [0, 1]}]}}', "pred", "'score' is a str"),
    ('{"results": {"v": [{"label": "a", "score": true, "segment": [0, 1]}]}}', "pred", "'score' is a bool"),
    ('{"results": {"v": [{"label": "a", "score": 0.5, "segment": [0, 1, 2]}]}}', "pred", "3 values"),
    ('{"results": {"v": {"label": "a"}}}', "pred", "not a list"),
    ('{"results": []}', "pred", "'results' is a list"),
    ('{"database": {"v": {"annotations": []}}}', "gt", "no 'subset'"),
    ('{"database": {"v": {"subset": "validation", "annotations": [{"segment": [0, 1]}]}}}', "gt", "no 'label'"),
    ('{"taxonomy": []}', "gt", "no 'database'"),
    ('{"results": {"v": [], "v": []}}', "pred", "repeats the key v"),
    ("[" * 100000, "pred", "nested too deeply"),
    (b"\xff\xfe{}", "pred", "not UTF-8"),
])
def test_hostile_files_give_one_line_naming_the_file(tmp_path, text, reader, problem):
    path = tmp_path / "hostile file.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    read = loc.read_ground_truth if reader == "gt" else loc.read_predictions
    with pytest.raises(AnnotationFileError) as caught:
        read(path)
    message = str(caught.value)
    assert "hostile file.json" in message and problem in message and "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_size_bound_missing_files_and_folders_are_refused(tmp_path):
    big = write_json(tmp_path / "big.json", GOOD_PRED)
    assert loc.read_predictions(big).labels == ("a",)
    with pytest.raises(AnnotationFileError, match=r"big\.json: is \d+ bytes, more than the 10 allowed"):
        loc.read_predictions(big, max_bytes=10)
    with pytest.raises(AnnotationFileError, match=r"missing\.json: No such file"):
        loc.read_predictions(tmp_path / "missing.json")
    with pytest.raises(AnnotationFileError, match="Is a directory"):
        loc.read_ground_truth(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(AnnotationFileError, match="fifo: is not a regular file"):
        loc.read_ground_truth(tmp_path / "fifo")


# ------------------------------------------------------------------------------------------------ segmentation

def random_labels(rng: np.random.Generator, names: list, background, frames: int) -> list:
    """Frame labels in runs (single frames among them), background runs included, at least one action segment."""
    labels: list = []
    while len(labels) < frames:
        name = background if rng.random() < 0.25 else names[int(rng.integers(0, len(names)))]
        labels += [name] * int(rng.choice([1, 1, 2, 5, 12, 30]))
    labels = labels[:frames]
    labels[int(rng.integers(0, frames))] = names[0]
    return labels


def perturbed(rng: np.random.Generator, truth: list, names: list, background) -> list:
    """A prediction: the truth with shifted boundaries, swapped runs and noise frames."""
    shift = int(rng.integers(-3, 4))
    out = truth[-shift:] + truth[:-shift] if shift else list(truth)
    for _ in range(int(rng.integers(0, 6))):
        i = int(rng.integers(0, len(out)))
        length = int(rng.choice([1, 3, 8]))
        value = background if rng.random() < 0.3 else names[int(rng.integers(0, len(names)))]
        out[i:i + length] = [value] * len(out[i:i + length])
    return out


@pytest.mark.parametrize("kind", ["strings", "integers"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segmentation_equals_mstcn_reference(seed, kind):
    rng = np.random.default_rng(seed)
    names, background = (["take", "open", "pour", "close"], "background") if kind == "strings" else ([1, 2, 3, 4], 0)
    truth = [random_labels(rng, names, background, int(rng.integers(20, 300))) for _ in range(8)]
    predicted = [perturbed(rng, t, names, background) for t in truth]
    accuracy, edit, f1 = ref.evaluate_segmentation(predicted, truth, bg_class=[background])
    scores = seg.segmentation_scores(predicted, truth, background=(background,))
    assert scores.accuracy == pytest.approx(accuracy, abs=1e-6)
    assert scores.edit == pytest.approx(edit, abs=1e-6)
    assert scores.f1 == pytest.approx(f1, abs=1e-6)
    assert scores.frames == sum(map(len, truth)) and 0 < scores.f1[0.5] < 100
    for p, t in zip(predicted, truth, strict=True):
        labels, starts, ends = ref.get_labels_start_end_time(p, [background])
        found = seg.segments(p, (background,))
        assert (found.labels, found.starts.tolist(), found.ends.tolist()) == (labels, starts, ends)
        assert seg.edit_score(p, t, (background,)) == pytest.approx(ref.edit_score(p, t, bg_class=[background]), abs=1e-9)
        for overlap in seg.OVERLAPS:
            assert seg.f_counts(p, t, overlap, (background,)) == ref.f_score(p, t, overlap, bg_class=[background])


def test_background_is_named_as_mstcn_names_it():
    """The default excludes only "background" (GTEA); Breakfast's SIL counts as an action unless it is passed."""
    truth = ["SIL", "SIL", "cut", "cut", "SIL"]
    assert seg.segments(truth).labels == ["SIL", "cut", "SIL"] == ref.get_labels_start_end_time(truth)[0]
    assert seg.segments(truth, ("SIL",)).labels == ["cut"]
    assert seg.segments(["background", "a", "background"]).labels == ["a"]


def test_accuracy_counts_background_frames_and_f1_sums_counts_over_videos():
    truth = [["background"] * 8 + ["a"] * 2, ["b"] * 10]
    predicted = [["background"] * 8 + ["b"] * 2, ["b"] * 10]
    scores = seg.segmentation_scores(predicted, truth)
    assert scores.accuracy == 90.0  # 18 of 20 frames, 8 of them background
    assert scores.edit == 50.0  # (0 + 100) / 2 videos: the first has one segment each, of other labels
    assert scores.f1[0.5] == pytest.approx(100 * 2 * 0.5 * 0.5 / 1.0)  # tp 1, fp 1, fn 1 over both videos


def test_cases_the_reference_cannot_score():
    assert seg.f_counts(["a", "a"], ["background", "background"], 0.1) == (0, 1, 0)
    assert seg.edit_score(["background"], ["background"]) == 100.0
    with pytest.raises(ValueError, match="3 predicted frames for 2"):
        seg.segmentation_scores([["a"] * 3], [["a"] * 2])
    with pytest.raises(ValueError, match="non-empty"):
        seg.segments([])
