"""The kNN probe's settings (a card's `probes.knn` block), apart from `knn.py` so that reading a card never loads
torch or faiss."""

from __future__ import annotations

from dataclasses import dataclass

from .base import positive_ints, sorted_unique
from .settings import as_floats


@dataclass(frozen=True)
class Config:
    k: tuple[int, ...] = (10, 20, 100, 200)
    temperature: float = 0.07
    headline_k: int = 20

    def __post_init__(self) -> None:
        positive_ints(self.k, "k")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, float) or not self.temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {self.temperature!r}")
        if self.headline_k not in self.k:
            raise ValueError(f"headline_k {self.headline_k} must be one of k {list(self.k)}")

    @staticmethod
    def normalise(raw: dict) -> dict:
        """k sorted without duplicates, temperature as a float (so equal settings hash equally)."""
        if "k" in raw:
            raw["k"] = sorted_unique(raw["k"])
        return as_floats(raw, ("temperature",))
