"""The attentive probe's settings (a card's `probes.attentive` block), apart from `attentive.py` so that reading a
card never loads torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .settings import whole

VIEWS = ("joint", "segments", "average")
DECAYS = ("matrices", "all")


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _numbers(value: object, name: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, tuple) and value and all(
        _positive(v) or (allow_zero and v == 0 and not isinstance(v, bool)) for v in value)
    if not ok or len(set(value)) != len(value):
        raise ValueError(f"{name} must be a non-empty list of distinct {'non-negative' if allow_zero else 'positive'} "
                         f"numbers, got {list(value) if isinstance(value, tuple) else value!r}")


@dataclass(frozen=True)
class Config:
    """The pooler (depth, heads, MLP ratio, output projection of the cross-attention, queries), how views meet
    (`joint`: one sequence of every view's tokens; `segments`: one sequence of the temporal views of each spatial
    view, probabilities averaged over spatial views, V-JEPA's attend_across_segments; `average`: each view
    classified, probabilities averaged), the schedule (cosine to `final_lr_fraction`; weight decay by cosine to
    `final_wd_fraction` of its value, as V-JEPA's CosineWDSchedule), which parameters decay (`matrices`: not biases
    and 1-d ones, V-JEPA; `all`: V-JEPA 2's single group), gradient clipping by norm (0: none; V-JEPA clips at 1),
    the head grid (lrs x weight_decays), the validation split and the seeds. `depth` > 1 puts self-attention
    blocks before the cross-attention (V-JEPA 2); `queries` > 1 (averaged) and `cross_proj` with `depth` > 1 are
    combinations neither reference runs."""

    depth: int = 1
    num_heads: int = 16
    mlp_ratio: float = 4.0
    cross_proj: bool = True
    queries: int = 1
    views: str = "joint"
    epochs: int = 20
    batch_size: int = 256
    lrs: tuple = (0.001,)
    weight_decays: tuple = (0.01,)
    warmup_epochs: float = 0.0
    final_lr_fraction: float = 0.0
    final_wd_fraction: float = 1.0
    decay: str = "matrices"
    clip_grad: float = 0.0
    val_fraction: float = 0.1
    split_seed: int = 0
    seeds: tuple = (0,)

    @staticmethod
    def normalise(raw: dict) -> dict:
        for key in ("lrs", "weight_decays", "seeds"):
            if isinstance(raw.get(key), list):
                raw[key] = tuple(raw[key])
        return raw

    def __post_init__(self) -> None:
        for name, low in (("depth", 1), ("num_heads", 1), ("queries", 1), ("epochs", 1), ("batch_size", 1),
                          ("split_seed", 0)):
            if not whole(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if not _positive(self.mlp_ratio) or not isinstance(self.cross_proj, bool):
            raise ValueError("mlp_ratio must be positive and cross_proj true or false")
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {', '.join(VIEWS)}, got {self.views!r}")
        _numbers(self.lrs, "lrs")
        _numbers(self.weight_decays, "weight_decays", allow_zero=True)
        seeds = self.seeds
        if not isinstance(seeds, tuple) or not seeds or not all(whole(s, 0) for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers, got {seeds!r}")
        if not (_positive(self.warmup_epochs) or self.warmup_epochs == 0) or self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs!r}")
        for name in ("final_lr_fraction", "final_wd_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        if not (_positive(self.clip_grad) or self.clip_grad == 0) or isinstance(self.clip_grad, bool):
            raise ValueError(f"clip_grad must be 0 (none) or a positive norm, got {self.clip_grad!r}")
        if not isinstance(self.val_fraction, float) or not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")

    def grid(self) -> list[tuple[float, float]]:
        """The heads trained together: every (learning rate, weight decay) pair, learning rate major."""
        return [(float(lr), float(wd)) for lr in self.lrs for wd in self.weight_decays]
