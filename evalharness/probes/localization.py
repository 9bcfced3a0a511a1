"""Temporal action localization on feature sequences: ActionFormer's head trained on the card's train split (the
epoch chosen on validation videos carved from it, never on the reported split), scored on the test split with
mAP at the official tIoU thresholds exactly as ActivityNet's `eval_detection.py` computes it.

Snippet t stands at its stored centre time; seconds become feature units by the snippet step, so a segment's
boundaries fall between snippet centres as they do in ActionFormer's features.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ProbeError
from ..localization_metrics import ANET_TIOU, THUMOS_TIOU, Detections, mean_average_precision
from ..metrics import FRACTION, Estimate, estimate
from .base import ProbeOutcome
from .common import ProbeInput
from .localization_config import Config

THRESHOLDS = {"thumos14": THUMOS_TIOU, "activitynet": ANET_TIOU}


@dataclass(frozen=True)
class Video:
    """One video's snippet features, the centre time of each, and its labelled segments in seconds."""

    id: str
    features: np.ndarray  # (T, D) float32
    times: np.ndarray  # (T,) seconds
    segments: np.ndarray  # (S, 2) seconds
    labels: tuple[str, ...]

    @property
    def step(self) -> float:
        """Seconds between consecutive snippet centres (1 for a one-snippet video, where no step exists)."""
        return float(self.times[-1] - self.times[0]) / (len(self.times) - 1) if len(self.times) > 1 else 1.0

    def units(self, seconds: np.ndarray) -> np.ndarray:
        """Seconds as feature-index units (snippet t's centre is t), clamped to the sequence."""
        return np.clip((seconds - self.times[0]) / self.step, 0, len(self.times))

    def seconds(self, units: np.ndarray) -> np.ndarray:
        """Feature-index units back to seconds."""
        return self.times[0] + units * self.step


def _videos(data: ProbeInput, role: str) -> list[Video]:
    """The embedded videos of a role's split with their sequences and segments."""
    out = []
    for item in data.items(role):
        if item.segments is None:
            raise ProbeError(f"{data.path}: video {item.id} has no segments in the manifest")
        sequence = data.file.sequence(item.id)
        segments = np.array([[s.start, s.end] for s in item.segments], dtype=np.float64).reshape(-1, 2)
        out.append(Video(item.id, sequence.features, sequence.times, segments, tuple(s.label for s in item.segments)))
    return out


def _training(videos: list[Video], classes: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(features, segments in feature units, class indices) of each video."""
    return [(v.features, v.units(v.segments), np.array([classes[label] for label in v.labels], dtype=np.int64))
            for v in videos]


def detections(videos: list[Video], predicted: list, names: tuple[str, ...], in_seconds: bool = True) -> Detections:
    """Per-video (segments, scores, labels) as one Detections, in seconds (or feature units), classes by name."""
    rows = [(v.id, v.seconds(seg) if in_seconds else seg, score, label)
            for v, (segs, scores, labels) in zip(videos, predicted, strict=True)
            for seg, score, label in zip(segs, scores, labels, strict=True)]
    return Detections([r[0] for r in rows], np.array([r[1] for r in rows]).reshape(-1, 2),
                      [names[int(r[3])] for r in rows], np.array([r[2] for r in rows], dtype=np.float64))


def truth(videos: list[Video], in_seconds: bool = True) -> Detections:
    """The labelled segments of the videos as ground truth, in seconds (or feature units)."""
    return Detections([v.id for v in videos for _ in v.labels],
                      np.concatenate([v.segments if in_seconds else v.units(v.segments) for v in videos]),
                      [label for v in videos for label in v.labels])


def map_per_threshold(gt: Detections, preds: Detections, thresholds: np.ndarray) -> np.ndarray:
    """mAP over the ground truth's classes at each threshold (predictions of other classes cannot match any)."""
    if not gt.labels:
        return np.zeros(len(thresholds))
    known = set(gt.labels)
    keep = np.array([label in known for label in preds.labels], dtype=bool)
    kept = Detections([v for v, k in zip(preds.videos, keep, strict=True) if k], preds.segments[keep],
                      [label for label, k in zip(preds.labels, keep, strict=True) if k], preds.scores[keep])
    return mean_average_precision(gt, kept, thresholds)[0]


def _carve(videos: list[Video], config: Config) -> tuple[list[Video], list[Video]]:
    """Validation videos carved from the train split (a seeded share), the rest trained on."""
    if len(videos) < 2:
        raise ProbeError(f"the train split has {len(videos)} video(s): at least 2 are needed to carve a validation one")
    order = np.random.default_rng(config.split_seed).permutation(len(videos))
    n_val = min(len(videos) - 1, max(1, round(config.val_fraction * len(videos))))
    return [videos[i] for i in sorted(order[n_val:])], [videos[i] for i in sorted(order[:n_val])]


def run(data: ProbeInput, config: Config, device: str, quiet: bool = True) -> ProbeOutcome:
    """Trained per seed; mAP per threshold and their average are means over seeds, with a bootstrap CI over test
    videos (a resampled video enters with all its segments and predictions)."""
    from .actionformer_head import fit_localization, predict_localization

    names = data.manifest.classes
    classes = {c: i for i, c in enumerate(names)}
    thresholds = THRESHOLDS[config.evaluation]
    fit, val = _carve([v for v in _videos(data, "train") if v.labels], config)  # ones with an action
    test = _videos(data, "test")
    val_truth = truth(val, in_seconds=False)
    runs, epochs = [], {}
    for seed in config.seeds:
        model, epochs[f"seed{seed}"], _ = fit_localization(
            _training(fit, classes), _training(val, classes), len(names), config, seed,
            lambda predicted, _: float(map_per_threshold(val_truth, detections(val, predicted, names, in_seconds=False),
                                                         thresholds).mean()),
            device, quiet)
        runs.append(predict_localization(model, [v.features for v in test], config, device))

    cache: dict[bytes, np.ndarray] = {}

    def per_threshold(idx: np.ndarray) -> np.ndarray:
        """mAP per threshold of a resample of test videos, the mean over seeds (computed once per resample)."""
        key = idx.tobytes()
        if key not in cache:
            chosen = [replace(test[i], id=f"{test[i].id}#{j}") for j, i in enumerate(idx)]
            gt = truth(chosen)
            cache[key] = np.mean([map_per_threshold(gt, detections(chosen, [p[i] for i in idx], names), thresholds)
                                  for p in runs], axis=0)
        return cache[key]

    def metric(pick) -> Estimate:
        return estimate(lambda idx: float(pick(per_threshold(idx))), len(test), higher_is_better=True, unit=FRACTION)

    metrics = {"mAP": metric(np.mean),
               **{f"mAP@{t:.2f}": metric(lambda m, k=k: m[k]) for k, t in enumerate(thresholds)}}
    return ProbeOutcome("mAP", metrics, {"epochs": epochs, "tiou": [round(float(t), 2) for t in thresholds]},
                        None)
