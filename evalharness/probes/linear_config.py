"""The linear probe's settings (a card's `probes.linear` block), apart from `linear.py` so that reading a card never
loads torch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Config:
    c_grid: dict = field(default_factory=lambda: {"log10_min": -6, "log10_max": 6, "steps": 25})
    val_fraction: float = 0.1
    seed: int = 0
    views: str = "mean"
    max_iter: int = 1000
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        grid = self.c_grid
        if not isinstance(grid, dict) or set(grid) != {"log10_min", "log10_max", "steps"}:
            raise ValueError("c_grid must be {log10_min, log10_max, steps}")
        if not (_number(grid["log10_min"]) and _number(grid["log10_max"]) and grid["log10_min"] <= grid["log10_max"]
                and isinstance(grid["steps"], int) and not isinstance(grid["steps"], bool) and grid["steps"] >= 1):
            raise ValueError(f"c_grid {grid} is empty or not numeric")
        if not _number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.views not in ("mean", "clips"):
            raise ValueError(f"views must be 'mean' or 'clips', got {self.views!r}")
        if (isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1
                or not _number(self.tolerance) or not self.tolerance > 0):
            raise ValueError("max_iter must be a positive integer and tolerance positive")

    def grid(self) -> np.ndarray:
        g = self.c_grid
        return np.logspace(g["log10_min"], g["log10_max"], g["steps"])
