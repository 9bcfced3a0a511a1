"""Temporal action segmentation metrics exactly as MS-TCN's `eval.py` computes them: frame accuracy, segmental edit
score and F1@{10, 25, 50}, all in percent.

Reproduced details:
- Accuracy counts every frame of every video, background included: correct frames over all frames.
- Segments are the runs of equal labels whose label is not background; the edit score is the normalised Levenshtein
  distance of the two segment-label sequences, `(1 - d / max(len)) * 100`, averaged over videos.
- F1 is computed once from tp, fp and fn summed over all videos: each predicted segment takes the ground-truth segment
  of its label with the highest IoU (the first on ties); it is a true positive when that IoU reaches the overlap and
  that segment is not yet hit, else a false positive (there is no second choice); unhit ground truth is fn.
- Background: MS-TCN's eval calls these functions with its default `bg_class=["background"]` on every dataset. GTEA's
  mapping names its background class "background", so it is excluded there; 50Salads' "action_start"/"action_end" and
  Breakfast's "SIL" are other names, so MS-TCN counts them as actions. `background` here is that same list: the
  default reproduces MS-TCN on all three; pass other names (or the integer ids of integer labels) to exclude them.
- Where MS-TCN has no number (it raises on a video whose ground truth is all background while the prediction is not,
  and divides 0 by 0 when both are all background) this gives: every predicted segment a false positive, and an edit
  score of 100 for two empty segment sequences.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

BACKGROUND = ("background",)  # MS-TCN's default bg_class
OVERLAPS = (0.1, 0.25, 0.5)  # F1@10, F1@25, F1@50


@dataclass(frozen=True)
class Segments:
    """The non-background segments of one video: label, first frame and one past the last frame of each."""

    labels: list[Hashable]
    starts: np.ndarray
    ends: np.ndarray


@dataclass(frozen=True)
class SegmentationScores:
    """Accuracy, edit and F1 per overlap over a set of videos, in percent as MS-TCN prints them."""

    accuracy: float
    edit: float
    f1: dict[float, float]
    videos: int
    frames: int


def _frames(labels: Sequence[Hashable], what: str) -> np.ndarray:
    """One video's frame labels as a non-empty 1-d array."""
    values = np.asarray(labels)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{what} must be a non-empty sequence of frame labels, not of shape {values.shape}")
    return values


def segments(labels: Sequence[Hashable], background: Collection[Hashable] = BACKGROUND) -> Segments:
    """The runs of equal frame labels, background runs left out (MS-TCN's `get_labels_start_end_time`)."""
    values = _frames(labels, "labels")
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(values)]])
    keep = [i for i, label in enumerate(values[starts].tolist()) if label not in background]
    return Segments([values[starts[i]].tolist() for i in keep], starts[keep], ends[keep])


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """The edit distance (insertions, deletions, substitutions, each costing 1) between two label sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] if x == y else min(previous[j], current[j - 1], previous[j - 1]) + 1)
        previous = current
    return previous[-1]


def edit_score(predicted: Sequence[Hashable], truth: Sequence[Hashable],
               background: Collection[Hashable] = BACKGROUND) -> float:
    """MS-TCN's segmental edit score of one video in percent: 100 when the segment-label sequences agree."""
    p, y = segments(predicted, background).labels, segments(truth, background).labels
    if not p and not y:
        return 100.0
    return (1 - levenshtein(p, y) / max(len(p), len(y))) * 100


def f_counts(predicted: Sequence[Hashable], truth: Sequence[Hashable], overlap: float,
             background: Collection[Hashable] = BACKGROUND) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of one video's segments at one IoU overlap."""
    p, y = segments(predicted, background), segments(truth, background)
    if not y.labels:
        return 0, len(p.labels), 0
    hits = np.zeros(len(y.labels), dtype=bool)
    truth_labels = np.array(y.labels, dtype=object)
    tp = 0
    for label, start, end in zip(p.labels, p.starts, p.ends, strict=True):
        intersection = np.minimum(end, y.ends) - np.maximum(start, y.starts)
        union = np.maximum(end, y.ends) - np.minimum(start, y.starts)
        iou = (1.0 * intersection / union) * (truth_labels == label)
        best = int(iou.argmax())
        if iou[best] >= overlap and not hits[best]:
            tp += 1
            hits[best] = True
    return tp, len(p.labels) - tp, len(y.labels) - int(hits.sum())


def f1_score(tp: float, fp: float, fn: float) -> float:
    """F1 in percent from summed counts, 0 where MS-TCN's division gives NaN (no true positive)."""
    if tp == 0:
        return 0.0
    precision = tp / float(tp + fp)
    recall = tp / float(tp + fn)
    return 2.0 * (precision * recall) / (precision + recall) * 100


def video_counts(predicted: Sequence[Hashable], truth: Sequence[Hashable], background: Collection[Hashable] = BACKGROUND,
                 overlaps: Sequence[float] = OVERLAPS, what: str = "video") -> np.ndarray:
    """What one video adds to the scores: [correct frames, frames, edit, then tp, fp, fn per overlap]."""
    p_frames, y_frames = _frames(predicted, f"predicted {what}"), _frames(truth, f"true {what}")
    if len(p_frames) != len(y_frames):
        raise ValueError(f"{what}: {len(p_frames)} predicted frames for {len(y_frames)} true ones")
    if (p_frames.dtype.kind in "US") != (y_frames.dtype.kind in "US"):
        raise ValueError(f"{what}: predicted and true labels are of different kinds ({p_frames.dtype}, {y_frames.dtype})")
    counts = [f_counts(p_frames, y_frames, overlap, background) for overlap in overlaps]
    return np.array([np.count_nonzero(p_frames == y_frames), len(y_frames), edit_score(p_frames, y_frames, background),
                     *(c for triple in counts for c in triple)], dtype=np.float64)


def scores_of(rows: np.ndarray, overlaps: Sequence[float] = OVERLAPS) -> SegmentationScores:
    """The scores of a set of videos from their `video_counts` rows: accuracy over all frames, edit averaged over
    videos, F1 from tp, fp and fn summed over videos (MS-TCN's `main`)."""
    totals = rows.sum(axis=0)
    return SegmentationScores(accuracy=100 * float(totals[0]) / totals[1], edit=float(totals[2]) / len(rows),
                              f1={overlap: float(f1_score(*totals[3 + 3 * s:6 + 3 * s]))
                                  for s, overlap in enumerate(overlaps)},
                              videos=len(rows), frames=int(totals[1]))


def segmentation_scores(predicted: Sequence[Sequence[Hashable]], truth: Sequence[Sequence[Hashable]],
                        background: Collection[Hashable] = BACKGROUND,
                        overlaps: Sequence[float] = OVERLAPS) -> SegmentationScores:
    """Accuracy over all frames, edit averaged over videos, F1 from tp/fp/fn summed over videos (MS-TCN's `main`)."""
    if len(predicted) != len(truth) or len(truth) == 0:
        raise ValueError(f"{len(predicted)} predicted and {len(truth)} true videos: need the same, non-zero number")
    rows = np.stack([video_counts(p, y, background, overlaps, f"video {n}")
                     for n, (p, y) in enumerate(zip(predicted, truth, strict=True))])
    return scores_of(rows, overlaps)
