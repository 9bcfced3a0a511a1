"""The retrieval probe's settings (a card's `probes.retrieval` block), apart from `retrieval.py` so that reading a
card never loads torch."""

from __future__ import annotations

from dataclasses import dataclass

from .base import positive_ints, sorted_unique


@dataclass(frozen=True)
class Config:
    k: tuple[int, ...] = (1, 5, 10, 20, 50)

    def __post_init__(self) -> None:
        positive_ints(self.k, "k")

    @staticmethod
    def normalise(raw: dict) -> dict:
        """k sorted without duplicates (so equal settings hash equally)."""
        if "k" in raw:
            raw["k"] = sorted_unique(raw["k"])
        return raw
