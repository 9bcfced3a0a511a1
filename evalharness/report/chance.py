"""The score a classifier reaches by guessing, for the chance line of a plot: derived from the classes a record names
(its per-class counts, else its predictions' true labels), since records do not state it."""

from __future__ import annotations

import re

from ..metrics import FRACTION

_GUESSABLE = re.compile(r"(?:top(\d+)|mean_class)(?:@k\d+)?")  # the accuracies the classification probes write


def class_count(record: dict) -> int | None:
    """How many classes a classification record names, or None for a record without class labels."""
    per_class = record.get("per_class")
    if per_class:
        return len(per_class["classes"])  # checked when the record was loaded
    predictions = record.get("predictions") or {}
    labels = predictions.get("label")
    if "predicted" not in predictions or not isinstance(labels, list) or not labels:
        return None
    return len(set(labels)) if all(isinstance(label, str) for label in labels) else None


def chance(record: dict, metric: str) -> float | None:
    """Guessing's expected score on `metric` of a classification record with C classes: 1/C for top-1 and mean
    per-class accuracy, k/C for top-k; None for any other metric or record."""
    found = _GUESSABLE.fullmatch(metric)
    classes = class_count(record)
    if not found or not classes or record["metrics"][metric]["unit"] != FRACTION:
        return None
    return min(1.0, int(found.group(1) or 1) / classes)
