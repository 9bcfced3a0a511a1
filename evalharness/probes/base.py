"""What every probe declares and returns: its spec (name, tasks, config type, entry point) and a typed outcome."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..metrics import Estimate
from ..protocol import Task


@dataclass(frozen=True)
class ProbeOutcome:
    """A probe's result on the test split: its metrics (one named headline), the settings it chose, per-item
    predictions for paired comparison, and caveats a reader of the score must see (printed, recorded, marked in
    tables), such as a k larger than the train split."""

    headline: str
    metrics: dict[str, Estimate]
    chosen: dict
    predictions: dict | None
    caveats: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.headline not in self.metrics:
            raise ValueError(f"headline metric '{self.headline}' is not among the metrics")


@dataclass(frozen=True)
class ProbeSpec:
    """A registered probe: the tasks it applies to, its frozen config dataclass, `run(data, config, device,
    **options)`, and the options it takes beyond the card (such as where to save masks)."""

    name: str
    tasks: frozenset[Task]
    config: type
    run: Callable[..., ProbeOutcome]
    options: frozenset[str] = frozenset()


def config_from_card(cls: type, raw: Any) -> Any:
    """A probe config from a card's settings: a mapping of known fields only, normalised by the class's
    optional `normalise(raw)`, validated by its `__post_init__`."""
    if not isinstance(raw, dict):
        raise ValueError("settings must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        raise ValueError(f"unknown setting '{unknown[0]}' (allowed: {', '.join(sorted(known))})")
    normalise = getattr(cls, "normalise", None)
    return cls(**(normalise(dict(raw)) if normalise else raw))


def positive_ints(value: Any, name: str) -> None:
    """A non-empty, strictly increasing sequence of positive integers (what a normalised k list is)."""
    ks = list(value) if isinstance(value, (list, tuple)) else None
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    if ks != sorted(set(ks)):
        raise ValueError(f"{name} must be strictly increasing, got {value!r}")


def sorted_unique(value: Any) -> Any:
    """A list of integers sorted without duplicates; anything else unchanged (for validation to refuse)."""
    if isinstance(value, (list, tuple)) and all(isinstance(k, int) and not isinstance(k, bool) for k in value):
        return tuple(sorted(set(value)))
    return value
