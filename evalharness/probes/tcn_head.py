"""Temporal action segmentation head: MS-TCN's multi-stage temporal convolutions over per-frame features.

As `yabufarha/ms-tcn` (model.py): each stage is a 1x1 convolution to `channels` maps, `layers`
dilated residual layers (kernel 3, dilation 2^i, ReLU, 1x1 convolution, dropout, residual, mask)
and a 1x1 convolution to class logits; every stage after the first takes the softmax of the
previous one. Loss per stage: cross-entropy over valid frames + 0.15 x the mean over valid frame
pairs of min((log p_t - log p_{t-1})^2, 16), the previous frame detached. Adam, one video a batch
by default. The epoch is chosen by a validation score (see `segmentation_config.Config`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..progress import bar
from .segmentation_config import Config

Sequences = Sequence[tuple[np.ndarray, np.ndarray]]
Score = Callable[[list[np.ndarray], list[np.ndarray]], float]
IGNORE = -100


class DilatedResidual(nn.Module):
    """x + dropout(conv1x1(relu(dilated conv(x)))), masked."""

    def __init__(self, dilation: int, channels: int, dropout: float):
        super().__init__()
        self.dilated = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (x + self.dropout(self.pointwise(F.relu(self.dilated(x))))) * mask


class Stage(nn.Module):
    """One single-stage TCN: (B, D, T) -> logits (B, K, T)."""

    def __init__(self, layers: int, channels: int, dim: int, classes: int, dropout: float):
        super().__init__()
        self.inp = nn.Conv1d(dim, channels, 1)
        self.layers = nn.ModuleList(DilatedResidual(2 ** i, channels, dropout) for i in range(layers))
        self.out = nn.Conv1d(channels, classes, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.inp(x * mask) * mask
        for layer in self.layers:
            x = layer(x, mask)
        return self.out(x) * mask


class MultiStageTCN(nn.Module):
    """Features (B, D, T) and mask (B, 1, T) -> logits of every stage (stages, B, K, T)."""

    def __init__(self, dim: int, classes: int, stages: int = 4, layers: int = 10, channels: int = 64,
                 dropout: float = 0.5):
        super().__init__()
        self.stages = nn.ModuleList(Stage(layers, channels, dim if s == 0 else classes, classes, dropout)
                                    for s in range(stages))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        outputs = []
        for s, stage in enumerate(self.stages):
            x = stage(x if s == 0 else F.softmax(x, dim=1) * mask, mask)
            outputs.append(x)
        return torch.stack(outputs)


def _batch(items: Sequences, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features (B, D, T), targets (B, T) with IGNORE past each end, mask (B, 1, T)."""
    longest = max(len(x) for x, _ in items)
    feats = torch.zeros(len(items), items[0][0].shape[1], longest)
    targets = torch.full((len(items), longest), IGNORE, dtype=torch.int64)
    mask = torch.zeros(len(items), 1, longest)
    for i, (x, y) in enumerate(items):
        feats[i, :, :len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32)).T
        targets[i, :len(y)] = torch.from_numpy(np.asarray(y, dtype=np.int64))
        mask[i, :, :len(x)] = 1.0
    return feats.to(device), targets.to(device), mask.to(device)


def segmentation_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, weight: float = 0.15,
                      clamp: float = 16.0) -> torch.Tensor:
    """MS-TCN's loss summed over stages: cross-entropy over valid frames + weight x the truncated MSE of consecutive
    log-probabilities over valid frame pairs (and classes), the earlier frame detached."""
    pairs = mask[:, :, 1:] * mask[:, :, :-1]
    total = logits.new_zeros(())
    for out in logits:
        total = total + F.cross_entropy(out, targets, ignore_index=IGNORE)
        logp = F.log_softmax(out, dim=1)
        squared = (logp[:, :, 1:] - logp.detach()[:, :, :-1]).pow(2).clamp(0, clamp)
        total = total + weight * (squared * pairs).sum() / (pairs.sum() * out.shape[1]).clamp(min=1)
    return total


def predict_segmentation(model: MultiStageTCN, sequences: Sequence[np.ndarray], device: str = "cpu") -> list[np.ndarray]:
    """The last stage's argmax class per frame (T,) int64 of each (T, D) sequence, one at a time (any length)."""
    model.eval()
    out = []
    with torch.no_grad():
        for x in sequences:
            feats = torch.from_numpy(np.asarray(x, dtype=np.float32)).T[None].to(device)
            logits = model(feats, torch.ones(1, 1, feats.shape[2], device=device))
            out.append(logits[-1, 0].argmax(0).cpu().numpy().astype(np.int64))
    return out


def _check(items: Sequences, classes: int, name: str) -> None:
    if not items:
        raise ValueError(f"{name} holds no videos")
    for x, y in items:
        if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0:
            raise ValueError(f"{name}: each video needs features (T, D) and labels (T,) with T > 0, got {x.shape} and "
                             f"{y.shape}")
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"{name}: labels must lie in [0, {classes}), got {int(y.min())}..{int(y.max())}")


def _train_epoch(model: MultiStageTCN, optimizer: torch.optim.Optimizer, train: Sequences, order: np.ndarray,
                 config: Config, device: torch.device) -> None:
    """One pass over `train` in `order`, `batch_size` videos a step."""
    model.train()
    for start in range(0, len(train), config.batch_size):
        feats, targets, mask = _batch([train[i] for i in order[start:start + config.batch_size]], device)
        optimizer.zero_grad(set_to_none=True)
        loss = segmentation_loss(model(feats, mask), targets, mask, config.smoothing_weight, config.smoothing_clamp)
        if not torch.isfinite(loss):
            raise FloatingPointError("training diverged: non-finite loss")
        loss.backward()
        optimizer.step()


def fit_segmentation(train: Sequences, val: Sequences, num_classes: int, config: Config, seed: int, score: Score,
                     device: str = "cpu", quiet: bool = False) -> tuple[MultiStageTCN, int, list[float]]:
    """Train MS-TCN on `train` (features (T, D), labels (T,)) and keep the epoch (1-based) whose weights score best on
    `val` by `score(predicted, true)` (ties: the earliest); returns the model, that epoch and the score per epoch."""
    _check(train, num_classes, "train")
    _check(val, num_classes, "val")
    torch.manual_seed(seed)
    where = torch.device(device)
    model = MultiStageTCN(train[0][0].shape[1], num_classes, config.stages, config.layers, config.channels,
                          config.dropout).to(where)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)
    curve, best, best_state = [], -np.inf, None
    with bar(config.epochs, "segmentation head", "epoch", quiet=quiet) as progress:
        for epoch in range(config.epochs):
            _train_epoch(model, optimizer, train, rng.permutation(len(train)), config, where)
            value = float(score(predict_segmentation(model, [x for x, _ in val], device), [y for _, y in val]))
            if not np.isfinite(value):
                raise ValueError(f"the validation score of epoch {epoch + 1} is not finite: {value}")
            curve.append(value)
            if value > best:
                best, best_state = value, copy.deepcopy(model.state_dict())
            progress.update(1)
    model.load_state_dict(best_state)
    return model.eval(), curve.index(best) + 1, curve
