"""The temporal action segmentation head's settings (MS-TCN), apart from `tcn_head.py` so that reading a card never
loads torch."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import as_floats, finite, whole


@dataclass(frozen=True)
class Config:
    """A multi-stage temporal convolution head as MS-TCN (source: github.com/yabufarha/ms-tcn, `model.py` and
    `main.py`): `stages` single-stage models of `layers` dilated residual layers (dilation 2^i, kernel 3, `channels`
    feature maps, dropout `dropout`), each later stage refining the softmax of the one before; the loss of every
    stage is cross-entropy plus `smoothing_weight` x the truncated MSE of frame-to-frame log-probability differences
    (squared differences clamped at `smoothing_clamp`, tau 4); Adam at `lr` for `epochs` epochs over batches of
    `batch_size` videos in a seeded order.

    Differences from the reference: the epoch is chosen on validation videos carved from train by the score the
    caller passes (MS-TCN keeps its last epoch); with more than one video a batch, sequences are padded and masked and
    the smoothing term is averaged over valid frames, and each stage's input and first projection are masked too, so
padding never reaches a valid frame (MS-TCN trains one video a batch, where all of this agrees); frames are
    taken at the rate the caller gives (MS-TCN's sample_rate 2 on 50Salads is the data plumbing's)."""

    stages: int = 4
    layers: int = 10
    channels: int = 64
    dropout: float = 0.5
    epochs: int = 50
    batch_size: int = 1
    lr: float = 0.0005
    smoothing_weight: float = 0.15
    smoothing_clamp: float = 16.0
    val_fraction: float = 0.1
    split_seed: int = 0
    seeds: tuple = (0,)

    @staticmethod
    def normalise(raw: dict) -> dict:
        """Lists as tuples and whole numbers of the float settings as floats, so equal settings hash equally."""
        if isinstance(raw.get("seeds"), list):
            raw["seeds"] = tuple(raw["seeds"])
        return as_floats(raw, ("dropout", "lr", "smoothing_weight", "smoothing_clamp"))

    def __post_init__(self) -> None:
        for name, low in (("stages", 1), ("layers", 1), ("channels", 1), ("epochs", 1), ("batch_size", 1),
                          ("split_seed", 0)):
            if not whole(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if not finite(self.dropout) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not finite(self.smoothing_weight) or self.smoothing_weight < 0:
            raise ValueError(f"smoothing_weight must be a non-negative number, got {self.smoothing_weight!r}")
        if not finite(self.smoothing_clamp) or self.smoothing_clamp <= 0:
            raise ValueError(f"smoothing_clamp must be a positive number, got {self.smoothing_clamp!r}")
        if not isinstance(self.val_fraction, float) or not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        seeds = self.seeds
        if not isinstance(seeds, tuple) or not seeds or not all(whole(s, 0) for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers, got {seeds!r}")
