"""The Backbone interface every adapter implements, and the input it declares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a backbone accepts: a fixed frame count and crop size (None = any) and its pixel normalisation."""

    frames: int | None = None
    size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class Backbone(ABC):
    """A frozen model: clips in, one vector per clip out; optionally token features, dense per-frame maps and text
    vectors. `token_patch` (h, w) and `token_tubelet` describe the token grid (0 where they do not apply)."""

    name: str
    input: InputSpec = field(default_factory=InputSpec)
    revision: str = ""
    weights_sha256: str = ""
    dense_stride: int | None = None
    token_patch: tuple[int, int] = (0, 0)
    token_tubelet: int = 0

    @abstractmethod
    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) normalised clips -> (B, D) embeddings."""

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        """(B, T, 3, H, W) normalised clips -> (B, t, h, w, D) token features of block `layer` (k >= 1: block k;
        -1: the last), before or after the model's final norm (`norm`: 'before' | 'after')."""
        raise NotImplementedError(f"backbone {self.name} gives no token features")

    def encode(self, clips: torch.Tensor, layer: int, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The clip vectors and the token features of the same clips (adapters override it to run the model once)."""
        return self.embed(clips), self.tokens(clips, layer, norm)

    @property
    def has_tokens(self) -> bool:
        """Whether this model gives token features (attentive probes)."""
        return type(self).tokens is not Backbone.tokens

    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        """(T, 3, H, W) normalised frames -> (T, h, w, D) feature maps for label propagation."""
        raise NotImplementedError(f"backbone {self.name} has no dense feature maps")

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Captions -> (M, D) embeddings in the video space (text-video retrieval)."""
        raise NotImplementedError(f"backbone {self.name} has no text tower")

    @property
    def has_text(self) -> bool:
        """Whether this model overrides `embed_text` (a text tower for text-video retrieval)."""
        return type(self).embed_text is not Backbone.embed_text

    def config(self) -> dict:
        """What identifies this model beyond its name (recorded as `model_config`)."""
        return {"input": {"frames": self.input.frames, "size": self.input.size,
                          "mean": list(self.input.mean), "std": list(self.input.std)},
                "dense_stride": self.dense_stride}

    def to(self, device: torch.device) -> Backbone:
        return self


@dataclass
class ModuleBackbone(Backbone):
    """A backbone around a torch module (hf, timm, torchvision): moved with `to`, and the adapter's
    facts (architecture, pooling, preprocessing, weight files) added to its recorded config."""

    model: Any = None
    extra: dict = field(default_factory=dict)

    def to(self, device: torch.device) -> ModuleBackbone:
        self.model.to(device)
        return self

    def config(self) -> dict:
        return {**super().config(), **self.extra}
