"""Metrics and their uncertainty: top-k accuracy, mean per-class accuracy, percentile bootstrap CIs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RESAMPLES = 1000
SEED = 0


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
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(resamples)])
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy_metric(correct: np.ndarray, labels: np.ndarray | None = None, per_class: bool = False) -> dict:
    """Value, 95% bootstrap CI and n of an accuracy (plain or mean per class) over test items."""
    correct = np.asarray(correct, dtype=bool)
    if per_class:
        value = mean_per_class(correct, labels)
        low, high = bootstrap_ci(lambda idx: mean_per_class(correct[idx], labels[idx]), len(correct))
    else:
        value = float(correct.mean())
        low, high = bootstrap_ci(lambda idx: float(correct[idx].mean()), len(correct))
    return {"value": value, "ci_low": low, "ci_high": high, "n": int(len(correct))}


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Mean of a minus mean of b over the same items, with a paired percentile bootstrap 95% CI."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = a - b
    low, high = bootstrap_ci(lambda idx: float(diff[idx].mean()), len(diff), resamples, seed)
    return {"value": float(diff.mean()), "ci_low": low, "ci_high": high, "n": int(len(diff))}


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test: two-sided binomial test on the items exactly one of the two gets right."""
    from scipy.stats import binomtest

    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    only_a = int((a_correct & ~b_correct).sum())
    only_b = int((~a_correct & b_correct).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}
