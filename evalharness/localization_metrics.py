"""Temporal action localization mAP exactly as ActivityNet's `Evaluation/eval_detection.py` computes it (the same
algorithm ActionFormer ships in `libs/utils/metrics.py`), and readers for its ground-truth and prediction JSON files.

Reproduced details:
- tIoU thresholds are built with `np.linspace` as the reference code builds them (ActivityNet `linspace(0.5, 0.95, 10)`,
  ActionFormer's THUMOS14 `linspace(0.3, 0.7, 5)`), so its 0.8999999999999999 and 0.39999999999999997 decide the
  boundary cases as there.
- A class's predictions, in file order, are ranked by `np.argsort(scores)[::-1]` (numpy's default unstable sort, then
  reversed), as the reference does; equal scores therefore fall in the same order as there on the same numpy.
- Each prediction tries its video's ground truth of its class in the order `np.argsort(tiou)[::-1]`: the first one
  below the threshold ends the search (a false positive), locked ones are skipped, the first free one is a match.
- The classes are the labels of the ground truth (of the chosen subset) in order of first appearance; a class without
  predictions has AP 0; a prediction in a video without ground truth of its class is a false positive.
- A prediction whose label is no class of the ground truth is refused (the reference fails on it with a KeyError).
- Not reproduced: the reference's list of blocked videos, fetched from a server that is long gone; and scores are
  always float64, where the reference keeps a file whose scores are all integers as int64 (whose ties numpy may order
  otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AnnotationFileError
from .untrusted import load_json, shown

ANET_TIOU = np.linspace(0.5, 0.95, 10)  # ActivityNet v1.3: 0.50:0.05:0.95
THUMOS_TIOU = np.linspace(0.3, 0.7, 5)  # THUMOS14 as ActionFormer evaluates it: 0.3:0.1:0.7
MAX_BYTES = 128 * 2**20  # the largest JSON file read (ActivityNet's ground truth is ~5 MB, a full prediction file ~50 MB)


@dataclass(frozen=True)
class Detections:
    """Labelled temporal segments of many videos in file order; `scores` is None for ground truth."""

    videos: tuple[str, ...]
    segments: np.ndarray  # (N, 2) float64 start, end in seconds
    labels: tuple[Hashable, ...]
    scores: np.ndarray | None = None  # (N,) float64

    def __post_init__(self) -> None:
        segments = np.asarray(self.segments, dtype=np.float64)
        segments = segments.reshape(0, 2) if segments.size == 0 else segments
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "videos", tuple(self.videos))
        object.__setattr__(self, "labels", tuple(self.labels))
        if segments.ndim != 2 or segments.shape[1] != 2:
            raise ValueError(f"segments must be (N, 2) [start, end] rows, not of shape {segments.shape}")
        if not len(self.videos) == len(self.labels) == len(segments):
            raise ValueError(f"{len(self.videos)} videos, {len(self.labels)} labels and {len(segments)} segments differ")
        if not np.isfinite(segments).all() or (segments[:, 1] < segments[:, 0]).any():
            raise ValueError("every segment needs finite times and an end not before its start")
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            object.__setattr__(self, "scores", scores)
            if len(scores) != len(segments) or not np.isfinite(scores).all():
                raise ValueError(f"{len(scores)} scores for {len(segments)} segments, or a score that is not finite")


def segment_iou(target: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """tIoU of one [start, end] segment with each of (N, 2) candidates, with the reference's operations in its order
    (so equal tIoUs come out equal, and ranking ties fall as there)."""
    inter = (np.minimum(target[1], candidates[:, 1]) - np.maximum(target[0], candidates[:, 0])).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter.astype(float) / union


def _rows_of(keys: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    """The row indices of each key (label or video), in file order, as the reference's `groupby(...).get_group` keeps them."""
    rows: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        rows.setdefault(key, []).append(index)
    return {key: np.array(indices, dtype=int) for key, indices in rows.items()}


def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 interpolated AP: the area under the precision envelope, summed where recall changes."""
    mprec = np.hstack([[0], precision, [0]])
    mrec = np.hstack([[0], recall, [1]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _match(tiou: np.ndarray, free: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per threshold, the position in `tiou`'s reference order (descending) of the matched ground truth, or -1."""
    below = tiou[None, :] < thresholds[:, None]
    usable = ~np.logical_or.accumulate(below, axis=1) & free
    return np.where(usable.any(axis=1), usable.argmax(axis=1), -1)


def class_average_precision(gt_videos: Sequence[str], gt_segments: np.ndarray, pred_videos: Sequence[str],
                            pred_segments: np.ndarray, pred_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """AP per tIoU threshold of one class's predictions against its ground truth (both in file order)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if len(gt_videos) == 0:
        raise ValueError("a class needs ground truth: its AP divides by the number of ground-truth segments")
    ap = np.zeros(len(thresholds))
    if len(pred_scores) == 0:
        return ap
    rows = _rows_of(gt_videos)
    locked = np.zeros((len(thresholds), len(gt_videos)), dtype=bool)
    tp = np.zeros((len(thresholds), len(pred_scores)))
    columns = np.arange(len(thresholds))
    for rank, p in enumerate(np.asarray(pred_scores).argsort()[::-1]):
        own = rows.get(pred_videos[p])
        if own is None:
            continue
        tiou = segment_iou(pred_segments[p], gt_segments[own])
        ranked = tiou.argsort()[::-1]
        order = own[ranked]
        chosen = _match(tiou[ranked], ~locked[:, order], thresholds)
        hit = chosen >= 0
        tp[hit, rank] = 1
        locked[columns[hit], order[chosen[hit]]] = True
    tp_cumsum = np.cumsum(tp, axis=1).astype(float)
    fp_cumsum = np.cumsum(1 - tp, axis=1).astype(float)
    recall = tp_cumsum / float(len(gt_videos))
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    for t in range(len(thresholds)):
        ap[t] = interpolated_ap(precision[t], recall[t])
    return ap


def class_order(gt: Detections) -> list[Hashable]:
    """The classes of a ground truth: its labels in order of first appearance (the reference's `activity_index`)."""
    return list(dict.fromkeys(gt.labels))




def average_precision(gt: Detections, preds: Detections, tiou_thresholds: np.ndarray = ANET_TIOU) -> np.ndarray:
    """AP (thresholds, classes), classes in `class_order(gt)`; a prediction of a label the ground truth lacks is refused."""
    if preds.scores is None:
        raise ValueError("predictions need scores")
    classes = class_order(gt)
    known = set(classes)
    unknown = [label for label in dict.fromkeys(preds.labels) if label not in known]
    if unknown:
        raise ValueError(f"predictions name {len(unknown)} label(s) the ground truth lacks, e.g. {shown(str(unknown[0]))}")
    gt_rows, pred_rows = _rows_of(gt.labels), _rows_of(preds.labels)
    ap = np.zeros((len(tiou_thresholds), len(classes)))
    for c, label in enumerate(classes):
        g, p = gt_rows[label], pred_rows.get(label, np.zeros(0, dtype=int))
        ap[:, c] = class_average_precision([gt.videos[i] for i in g], gt.segments[g], [preds.videos[i] for i in p],
                                           preds.segments[p], preds.scores[p], tiou_thresholds)
    return ap


def mean_average_precision(gt: Detections, preds: Detections,
                           tiou_thresholds: np.ndarray = ANET_TIOU) -> tuple[np.ndarray, float]:
    """mAP per tIoU threshold (the mean over classes) and its mean over thresholds, the numbers papers report."""
    per_threshold = average_precision(gt, preds, tiou_thresholds).mean(axis=1)
    return per_threshold, float(per_threshold.mean())


def _field(mapping: object, key: str, kind: type | tuple[type, ...], where: str) -> object:
    """`mapping[key]` when `mapping` is an object holding it with a value of `kind` (never a bool)."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where} has no {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: {key!r} is a {type(value).__name__}")
    return value


def _number(value: object, where: str) -> float:
    """A JSON number as a finite float (not a bool, not an integer too large for a float)."""
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{where} is {shown(repr(value)[:60])}, not a finite number")
    return number


def _segment(entry: object, where: str) -> tuple[float, float]:
    """An entry's [start, end] in seconds: two finite numbers, the end not before the start."""
    segment = _field(entry, "segment", list, where)
    if len(segment) != 2:
        raise ValueError(f"{where}: 'segment' has {len(segment)} values, not [start, end]")
    start, end = _number(segment[0], f"{where}: the start"), _number(segment[1], f"{where}: the end")
    if end < start:
        raise ValueError(f"{where}: the segment ends ({end}) before it starts ({start})")
    return start, end


def _parsed(path: str | Path, max_bytes: int, parse: Callable[[object], Detections]) -> Detections:
    """`parse` of the file's JSON, any problem raised as one AnnotationFileError naming the file."""
    try:
        return parse(load_json(path, max_bytes))
    except (OSError, ValueError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AnnotationFileError(f"{shown(str(path), 300)}: {message}") from None


def _ground_truth(data: object, subset: str | None) -> Detections:
    """The annotations of the chosen subset's videos of a parsed `{"database": ...}` file."""
    database = _field(data, "database", dict, "the file")
    videos, segments, labels = [], [], []
    for video, entry in database.items():
        where = f"video {shown(video)}"
        if subset is not None and _field(entry, "subset", str, where) != subset:
            continue
        for n, annotation in enumerate(_field(entry, "annotations", list, where)):
            segments.append(_segment(annotation, f"{where}, annotation {n}"))
            labels.append(_field(annotation, "label", (str, int), f"{where}, annotation {n}"))
            videos.append(video)
    return Detections(videos, np.array(segments, dtype=np.float64), labels)


def _predictions(data: object) -> Detections:
    """The predictions of a parsed `{"results": ...}` file."""
    results = _field(data, "results", dict, "the file")
    videos, segments, labels, scores = [], [], [], []
    for video, entries in results.items():
        where = f"video {shown(video)}"
        if not isinstance(entries, list):
            raise ValueError(f"{where}: its predictions are a {type(entries).__name__}, not a list")
        for n, entry in enumerate(entries):
            segments.append(_segment(entry, f"{where}, prediction {n}"))
            labels.append(_field(entry, "label", (str, int), f"{where}, prediction {n}"))
            scores.append(_number(_field(entry, "score", (int, float), f"{where}, prediction {n}"),
                                  f"{where}, prediction {n}: the score"))
            videos.append(video)
    return Detections(videos, np.array(segments, dtype=np.float64), labels, np.array(scores, dtype=np.float64))


def read_ground_truth(path: str | Path, subset: str | None = "validation", max_bytes: int = MAX_BYTES) -> Detections:
    """The annotations of one subset (None: all) of an ActivityNet-style ground-truth file, in file order."""
    return _parsed(path, max_bytes, lambda data: _ground_truth(data, subset))


def read_predictions(path: str | Path, max_bytes: int = MAX_BYTES) -> Detections:
    """The predictions of an ActivityNet-style result file (`{"results": {video: [{label, score, segment}]}}`)."""
    return _parsed(path, max_bytes, _predictions)
