"""Temporal action segmentation on feature sequences: MS-TCN's head trained per cross-validation fold, scored on
every annotated frame with MS-TCN's accuracy, edit and F1@{10, 25, 50}, the mean over folds as the paper reports.

Each snippet learns the label of its window's centre frame; each annotated frame takes the prediction of the
snippet whose centre frame is nearest (ties: the earlier), so the scores are frame-level as MS-TCN's, whatever
the snippet hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ProbeError
from ..metrics import FRACTION, Estimate, estimate
from ..segmentation_metrics import BACKGROUND, OVERLAPS, scores_of, video_counts
from .base import ProbeOutcome
from .common import ProbeInput
from .segmentation_config import Config

HEADLINE = "F1@50"


@dataclass(frozen=True)
class Video:
    """One video's snippet features, the frame each snippet stands for, and the label of every annotated frame."""

    id: str
    features: np.ndarray  # (T, D) float32
    centres: np.ndarray  # (T,) frame of each snippet's centre
    frames: np.ndarray  # (F,) class index of every annotated frame

    @property
    def targets(self) -> np.ndarray:
        """The label of each snippet: that of its centre frame (the last annotated frame past the annotation)."""
        return self.frames[np.minimum(self.centres, len(self.frames) - 1)]

    def frame_predictions(self, snippets: np.ndarray) -> np.ndarray:
        """Per-snippet predictions spread over the annotated frames: each frame takes its nearest snippet's."""
        midpoints = (self.centres[:-1] + self.centres[1:]) / 2
        return snippets[np.searchsorted(midpoints, np.arange(len(self.frames)), side="left")]


def frame_labels(segments: tuple, classes: dict[str, int]) -> np.ndarray:
    """Class indices of every frame from an item's runs (Segment(first, last, label), covering every frame)."""
    out = np.empty(int(segments[-1].end) + 1, dtype=np.int64)
    for s in segments:
        out[int(s.start):int(s.end) + 1] = classes[s.label]
    return out


def _videos(data: ProbeInput) -> tuple[list[Video], list[str]]:
    """Every embedded video of the card's test split with its sequence and frame labels, and the fold of each."""
    classes = {c: i for i, c in enumerate(data.manifest.classes)}
    items = data.items("test")
    videos = []
    for item in items:
        if not item.segments or item.group is None:
            raise ProbeError(f"{data.path}: video {item.id} has no frame labels or no fold in the manifest")
        sequence = data.file.sequence(item.id)
        videos.append(Video(item.id, sequence.features, (sequence.windows[:, 0] + sequence.windows[:, 1]) // 2,
                            frame_labels(item.segments, classes)))
    return videos, [item.group for item in items]


def _carve(train: list[int], config: Config) -> tuple[list[int], list[int]]:
    """Validation videos carved from a fold's train videos (a seeded share), never from its test fold."""
    if len(train) < 2:
        raise ProbeError(f"a fold has {len(train)} train video(s): at least 2 are needed to carve a validation video")
    order = np.random.default_rng(config.split_seed).permutation(len(train))
    n_val = min(len(train) - 1, max(1, round(config.val_fraction * len(train))))
    return sorted(train[i] for i in order[n_val:]), sorted(train[i] for i in order[:n_val])


def _mean_score(rows: np.ndarray) -> float:
    """What chooses the epoch: the mean of accuracy, edit and the three F1s on validation videos."""
    scores = scores_of(rows)
    return (scores.accuracy + scores.edit + sum(scores.f1.values())) / (2 + len(scores.f1))


def _rows(videos: list[Video], predicted: list[np.ndarray], background: tuple[int, ...]) -> np.ndarray:
    """`video_counts` of each video, from per-snippet predictions, at frame level (`background`: class indices that
    form no segment, as MS-TCN's bg_class)."""
    return np.stack([video_counts(v.frame_predictions(p), v.frames, background, what=f"video {v.id}")
                     for v, p in zip(videos, predicted, strict=True)])


def _fit_fold(videos: list[Video], train: list[int], test: list[int], classes: int, background: tuple[int, ...],
              config: Config, seed: int, device: str, quiet: bool) -> tuple[np.ndarray, int]:
    """Train on one fold's train videos (epoch chosen on those carved for validation); its test videos' rows."""
    from .tcn_head import fit_segmentation, predict_segmentation

    fit, val = _carve(train, config)
    model, epoch, _ = fit_segmentation(
        [(videos[i].features, videos[i].targets) for i in fit], [(videos[i].features, videos[i].targets) for i in val],
        classes, config, seed, lambda p, _: _mean_score(_rows([videos[i] for i in val], p, background)), device, quiet)
    predicted = predict_segmentation(model, [videos[i].features for i in test], device)
    return _rows([videos[i] for i in test], predicted, background), epoch


def run(data: ProbeInput, config: Config, device: str, quiet: bool = True) -> ProbeOutcome:
    """Every fold trained with every seed; the scores are the mean over seeds of the mean over folds, with a
    bootstrap CI over test videos (each keeps its fold)."""
    videos, folds = _videos(data)
    classes = data.manifest.classes
    background = tuple(i for i, c in enumerate(classes) if c in BACKGROUND)
    names = sorted(set(folds))
    if len(names) < 2:
        raise ProbeError(f"{data.path}: the manifest has {len(names)} fold(s); cross-validation needs at least 2")
    fold_of = np.array([names.index(f) for f in folds])
    rows = np.zeros((len(config.seeds), len(videos), 3 + 3 * len(OVERLAPS)))
    epochs = {}
    for s, seed in enumerate(config.seeds):
        for k, name in enumerate(names):
            test = np.flatnonzero(fold_of == k).tolist()
            train = np.flatnonzero(fold_of != k).tolist()
            rows[s, test], epochs[f"{name}/seed{seed}"] = _fit_fold(videos, train, test, len(classes), background,
                                                                    config, seed, device, quiet)

    def metric(pick) -> dict[str, Estimate]:
        def statistic(idx: np.ndarray) -> float:
            values = [pick(scores_of(rows[s, idx[fold_of[idx] == k]]))
                      for s in range(len(config.seeds)) for k in range(len(names)) if (fold_of[idx] == k).any()]
            return float(np.mean(values)) / 100
        return estimate(statistic, len(videos), higher_is_better=True, unit=FRACTION)

    metrics = {"accuracy": metric(lambda sc: sc.accuracy), "edit": metric(lambda sc: sc.edit),
               **{f"F1@{round(100 * o)}": metric(lambda sc, o=o: sc.f1[o]) for o in OVERLAPS}}
    accuracy = rows[:, :, 0].sum(axis=0) / rows[:, :, 1].sum(axis=0)
    return ProbeOutcome(HEADLINE, metrics, {"epochs": epochs, "folds": names},
                        {"ids": [v.id for v in videos], "value": accuracy.tolist()})
