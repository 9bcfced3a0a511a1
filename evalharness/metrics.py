"""Metrics and their uncertainty: top-k accuracy, mean per-class accuracy, DAVIS J and F; Wilson score intervals for
proportions, percentile bootstrap intervals for everything else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 1000
SEED = 0


FRACTION = "fraction"  # a share of items (accuracy, recall, J&F): people read it in percent
RANK = "rank"  # a rank or a statistic of ranks: read as it is
UNITS = (FRACTION, RANK)

# how an Estimate's interval was computed: the key is stored in the record, the text is what a table's footnote says
INTERVALS = {
    "wilson": "Wilson score interval of a proportion",
    "bootstrap": "percentile bootstrap over test items",
    "bootstrap-sequences": "percentile bootstrap over sequences (the objects of one video resampled together)",
    "bootstrap-seeds": "percentile bootstrap over test items and training seeds together",
}


@dataclass(frozen=True)
class Estimate:
    """A metric over test items with its 95% CI and number of items, declaring which direction is better and its
    unit (every probe says both; nothing downstream guesses them from a metric's name)."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    higher_is_better: bool
    unit: str
    interval: str = "bootstrap"

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {self.interval!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def ranked_classes(scores: np.ndarray, top: int) -> np.ndarray:
    """The `top` highest-scoring classes per row; equal scores rank the lower class index first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :top]


def topk_correct(ranked: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per item: is the true label among the first k ranked classes."""
    return (ranked[:, :k] == labels[:, None]).any(axis=1)


def mean_per_class(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present of each class's accuracy."""
    classes, inverse = np.unique(labels, return_inverse=True)
    hits = np.bincount(inverse, weights=correct.astype(np.float64), minlength=len(classes))
    counts = np.bincount(inverse, minlength=len(classes))
    return float(np.mean(hits / counts))


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, resamples: int = RESAMPLES,
                 seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of statistic(indices) over n items resampled with replacement."""
    rng = np.random.default_rng(seed)
    return _interval([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)], level)


def _interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values."""
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(np.array(values), [tail, 100 - tail])
    return float(low), float(high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a binomial proportion: unlike a bootstrap it is never [p, p], so 0 of n or n of n
    still reads as an estimate (at n = 50 and 50 hits: [0.929, 1])."""
    from scipy.stats import norm

    if n <= 0:
        return 0.0, 1.0
    z = float(norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 of n and n of n the bounds are exactly 0 and 1; rounding must not put them a hair inside the value
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return float(low), float(high)


def proportion_estimate(hits: np.ndarray) -> Estimate:
    """The share of items that are hits (top-1, top-5, R@K) with Wilson's score interval: higher is better."""
    hits = np.asarray(hits, dtype=bool)
    low, high = wilson_interval(int(hits.sum()), len(hits))
    return Estimate(float(hits.mean()) if len(hits) else 0.0, low, high, len(hits), True, FRACTION, "wilson")


def estimate(statistic: Callable[[np.ndarray], float], n: int, *, higher_is_better: bool, unit: str) -> Estimate:
    """statistic(indices) over all n items, with its percentile bootstrap 95% CI over items resampled with replacement."""
    low, high = bootstrap_ci(statistic, n)
    return Estimate(float(statistic(np.arange(n))), low, high, int(n), higher_is_better, unit)


def mean_estimate(values: np.ndarray, *, higher_is_better: bool, unit: str) -> Estimate:
    """The mean of per-item values (hits, ranks, J&F of objects, paired differences) with its CI."""
    values = np.asarray(values, dtype=np.float64)
    return estimate(lambda idx: float(values[idx].mean()), len(values), higher_is_better=higher_is_better, unit=unit)


def share_estimate(values: np.ndarray) -> Estimate:
    """The mean of per-item shares in [0, 1] (hits, J, F, recall of an object): higher is better."""
    return mean_estimate(values, higher_is_better=True, unit=FRACTION)


def sequence_share_estimate(values: np.ndarray, sequences: list[str]) -> Estimate:
    """The mean of per-object shares (J, F, J&F) with a percentile bootstrap CI that resamples sequences, not objects:
    the objects of one video are not independent evidence, so they enter and leave a resample together."""
    values = np.asarray(values, dtype=np.float64)
    names, cluster = np.unique(np.asarray(sequences), return_inverse=True)
    sums = np.bincount(cluster, weights=values, minlength=len(names))
    counts = np.bincount(cluster, minlength=len(names))

    def pooled(idx: np.ndarray) -> float:
        return float(sums[idx].sum() / counts[idx].sum())

    low, high = bootstrap_ci(pooled, len(names))
    return Estimate(float(values.mean()), low, high, len(values), True, FRACTION, "bootstrap-sequences")


def accuracy_estimate(correct: np.ndarray, labels: np.ndarray | None = None, per_class: bool = False) -> Estimate:
    """An accuracy over test items: plain (Wilson's interval) or the mean of per-class accuracies (bootstrap)."""
    correct = np.asarray(correct, dtype=bool)
    if per_class:
        return estimate(lambda idx: mean_per_class(correct[idx], labels[idx]), len(correct), higher_is_better=True,
                        unit=FRACTION)
    return proportion_estimate(correct)


def seeded_estimate(statistic: Callable[[int, np.ndarray], float], seeds: int, n: int, *, higher_is_better: bool,
                    unit: str) -> Estimate:
    """The mean over `seeds` trained probes of statistic(seed, indices) on n test items, with a percentile bootstrap
    95% CI that resamples the seeds and the items together: both the training run and the test set vary."""
    rng = np.random.default_rng(SEED)
    values = []
    for _ in range(RESAMPLES):
        chosen, idx = rng.integers(0, seeds, size=seeds), rng.integers(0, n, size=n)
        values.append(np.mean([statistic(int(s), idx) for s in chosen]))
    low, high = _interval(values)
    value = float(np.mean([statistic(s, np.arange(n)) for s in range(seeds)]))
    return Estimate(value, float(low), float(high), int(n), higher_is_better, unit, "bootstrap-seeds")


def seeded_accuracy_estimate(correct: np.ndarray, labels: np.ndarray | None = None,
                             per_class: bool = False) -> Estimate:
    """An accuracy of several seeds' probes (correct: (seeds, n)), plain or the mean of per-class accuracies."""
    correct = np.asarray(correct, dtype=bool)
    if per_class:
        return seeded_estimate(lambda s, idx: mean_per_class(correct[s, idx], labels[idx]), *correct.shape,
                               higher_is_better=True, unit=FRACTION)
    return seeded_estimate(lambda s, idx: float(correct[s, idx].mean()), *correct.shape, higher_is_better=True,
                           unit=FRACTION)


def paired_difference(a: np.ndarray, b: np.ndarray, *, higher_is_better: bool, unit: str) -> Estimate:
    """Mean of a minus mean of b over the same items, with a paired percentile bootstrap 95% CI (positive means a
    scored more, which is better when higher is)."""
    return mean_estimate(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64),
                         higher_is_better=higher_is_better, unit=unit)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test: two-sided binomial test on the items exactly one of the two gets right."""
    from scipy.stats import binomtest

    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


# ------------------------------------------------------------- DAVIS region and boundary measures
# As the official DAVIS evaluation (davis2017-evaluation) defines them.


def region_j(truth: np.ndarray, mask: np.ndarray) -> float:
    """Jaccard index of two binary masks; 1 when both are empty."""
    truth, mask = truth.astype(bool), mask.astype(bool)
    union = np.logical_or(truth, mask).sum()
    return 1.0 if union == 0 else float(np.logical_and(truth, mask).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask, offset half a pixel toward the origin (Martin et al.'s seg2bmap)."""
    seg = mask.astype(bool)
    east, south, southeast = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    southeast[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ southeast)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def _within(boundary: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within Euclidean distance `tolerance` of a boundary pixel: the official evaluation's dilation by
    a disk (offsets with dx^2 + dy^2 <= r^2), computed with an exact distance transform."""
    from scipy.ndimage import distance_transform_edt

    if not boundary.any():
        return np.zeros_like(boundary)
    return distance_transform_edt(~boundary) <= tolerance


def boundary_f(truth: np.ndarray, mask: np.ndarray, threshold: float = 0.008) -> float:
    """Boundary F-measure: boundaries match within ceil(threshold * image diagonal) pixels."""
    tolerance = int(np.ceil(threshold * np.linalg.norm(mask.shape)))
    fg, gt = boundary_map(mask), boundary_map(truth)
    fg_dilated = _within(fg, tolerance)
    gt_dilated = _within(gt, tolerance)
    n_fg, n_gt = int(fg.sum()), int(gt.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = float((fg & gt_dilated).sum()) / n_fg
        recall = float((gt & fg_dilated).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def davis_object_scores(truth: np.ndarray, predicted: np.ndarray, object_id: int) -> dict:
    """Per-object J and F over frames 1..T-2 (first and last excluded): mean and recall (share above 0.5)."""
    j = np.array([region_j(t == object_id, p == object_id) for t, p in zip(truth[1:-1], predicted[1:-1], strict=True)])
    f = np.array([boundary_f(t == object_id, p == object_id) for t, p in zip(truth[1:-1], predicted[1:-1], strict=True)])
    return {"J": float(j.mean()), "F": float(f.mean()), "J_recall": float((j > 0.5).mean()),
            "F_recall": float((f > 0.5).mean()), "J_frames": j.tolist(), "F_frames": f.tolist()}


MAX_CLASSES = 1000  # classes of a confusion matrix a record keeps (Kinetics-700 fits; a record over it keeps none)


def confusion(predictions: dict | None) -> dict | None:
    """Per-class counts of a classification record's test predictions: the classes named (true or predicted,
    sorted) and the confusion matrix (row: true class, column: predicted; a record with one prediction per seed
    counts each), or None for predictions without true and predicted labels or with more than MAX_CLASSES classes."""
    if not predictions or "label" not in predictions or "predicted" not in predictions:
        return None
    pairs = [(true, guess) for true, row in zip(predictions["label"], predictions["predicted"], strict=True)
             for guess in (row if isinstance(row, list) else [row])]
    classes = sorted({name for pair in pairs for name in pair})
    if not classes or len(classes) > MAX_CLASSES:
        return None
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, ([index[t] for t, _ in pairs], [index[p] for _, p in pairs]), 1)
    return {"classes": classes, "confusion": matrix.tolist()}
