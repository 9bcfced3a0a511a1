"""Weight-free baselines that run anywhere: the embedded default and the tests use them.

`builtin:pixels` sees appearance only (downsampled frames averaged over time);
`builtin:stats` adds motion statistics from block matching between frames, so the
pair shows on any benchmark how much of a score needs motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import HarnessError
from .base import Backbone

_GRID = 8
_DENSE_STRIDE = 8
_BINS = 8
_MATCH_SIZE = 24
_MATCH_RADIUS = 6
_MAGNITUDE_EDGES = (0.75, 3.0)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1, eps=1e-12)


def _rgb(backbone: Backbone, x: torch.Tensor) -> torch.Tensor:
    """Undo the model normalisation: values back in [0, 1]."""
    mean = torch.tensor(backbone.input.mean, device=x.device).view(3, 1, 1)
    std = torch.tensor(backbone.input.std, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp_(0.0, 1.0)


def _histogram(values: torch.Tensor, weights: torch.Tensor | None = None, bins: int = _BINS) -> torch.Tensor:
    """Histogram of values in [0, 1] per channel; values (..., C, N) -> (C * bins,) summing to 1 per channel."""
    index = (values.clamp(0, 1 - 1e-6) * bins).long()
    w = torch.ones_like(values) if weights is None else weights.expand_as(values)
    out = torch.zeros(values.shape[-2], bins, dtype=values.dtype, device=values.device)
    out.scatter_add_(1, index.reshape(values.shape[-2], -1), w.reshape(values.shape[-2], -1))
    return (out / out.sum(1, keepdim=True).clamp_min(1e-12)).flatten()


def _dense_pool(frames: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(frames, _DENSE_STRIDE, _DENSE_STRIDE)


@dataclass
class Pixels(Backbone):
    """Frames pooled to an 8x8 grid and averaged over time: appearance without motion."""

    def __post_init__(self) -> None:
        self.dense_stride = _DENSE_STRIDE

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        pooled = F.adaptive_avg_pool2d(clips.flatten(0, 1), _GRID).reshape(b, t, -1)
        return pooled.mean(1)

    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        return _dense_pool(frames).permute(0, 2, 3, 1).contiguous()


def block_matching(gray: torch.Tensor, radius: int = _MATCH_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel displacement (dy, dx) between consecutive frames (T, H, W) by 5x5 block matching.

    Returns displacements (T-1, 2, H, W) and weights (T-1, H, W) = how much each pixel changed.
    """
    prev, nxt = gray[:-1], gray[1:]
    best_cost = torch.full_like(nxt, float("inf"))
    best = torch.zeros((2,) + nxt.shape, dtype=gray.dtype, device=gray.device)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            cost = F.avg_pool2d((nxt - torch.roll(prev, (dy, dx), dims=(-2, -1))).abs().unsqueeze(1), 5, 1, 2,
                                count_include_pad=False).squeeze(1)
            better = cost < best_cost
            best_cost = torch.where(better, cost, best_cost)
            best[0][better], best[1][better] = float(dy), float(dx)
    return best.permute(1, 0, 2, 3), (nxt - prev).abs()


def motion_histogram(gray: torch.Tensor) -> torch.Tensor:
    """Direction (8 bins) x magnitude (3 bins) histogram of block-matching motion, weighted by change, plus energy."""
    if gray.shape[0] < 2:
        return torch.zeros(_BINS * 3 + 1, device=gray.device)
    shift, weight = block_matching(gray)
    dy, dx = shift[:, 0], shift[:, 1]
    magnitude = torch.sqrt(dy * dy + dx * dx)
    angle = torch.atan2(dy, dx) % (2 * math.pi)
    direction = (angle / (2 * math.pi) * _BINS).long().clamp_(0, _BINS - 1)
    speed = torch.bucketize(magnitude, torch.tensor(_MAGNITUDE_EDGES, device=gray.device))
    moving = magnitude > 0
    bins = torch.zeros(_BINS * 3, device=gray.device)
    bins.scatter_add_(0, (speed * _BINS + direction)[moving], weight[moving])
    energy = weight.mean().reshape(1)
    return torch.cat([bins / bins.sum().clamp_min(1e-12), energy * 10])


@dataclass
class Stats(Backbone):
    """Colour histograms of the whole frame and of the moving pixels, plus block-matching motion histograms."""

    def __post_init__(self) -> None:
        self.dense_stride = _DENSE_STRIDE

    def _one(self, clip: torch.Tensor) -> torch.Tensor:
        rgb = _rgb(self, clip)
        t = rgb.shape[0]
        flat = rgb.permute(1, 0, 2, 3).reshape(3, -1)
        background = rgb.median(0).values
        change = (rgb - background).abs().amax(1, keepdim=True)
        moving = (change > 0.15).float()
        fraction = moving.flatten(1).mean(1)
        moving_colour = _histogram(flat, moving.permute(1, 0, 2, 3).reshape(1, -1))
        small = F.interpolate(rgb, size=(_MATCH_SIZE, _MATCH_SIZE), mode="area")
        gray = small.mean(1)
        spread = torch.stack([fraction.mean(), fraction.std(unbiased=False) if t > 1 else fraction.new_zeros(())]) * 10
        blocks = [_histogram(flat), torch.cat([moving_colour, spread]), motion_histogram(gray)]
        return torch.cat([_unit(b) for b in blocks])

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._one(clip) for clip in clips])

    def dense(self, frames: torch.Tensor) -> torch.Tensor:
        rgb = _rgb(self, frames)
        gray = rgb.mean(1, keepdim=True)
        gx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1))
        gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1))
        magnitude = torch.sqrt(gx * gx + gy * gy)
        orientation = ((torch.atan2(gy, gx) % math.pi) / math.pi * _BINS).long().clamp_(0, _BINS - 1)
        hog = torch.zeros(frames.shape[0], _BINS, *frames.shape[-2:], device=frames.device)
        hog.scatter_(1, orientation, magnitude)
        features = torch.cat([_dense_pool(rgb), _dense_pool(hog) * 4], 1)
        return features.permute(0, 2, 3, 1).contiguous()


_BUILTINS = {"pixels": Pixels, "stats": Stats}


def build(name: str, weights: str | None = None) -> Backbone:
    if weights is not None:
        raise HarnessError(f"model 'builtin:{name}' has no weights; give it no weights file")
    if name not in _BUILTINS:
        raise HarnessError(f"model 'builtin:{name}': unknown builtin (known: {', '.join('builtin:' + n for n in _BUILTINS)})")
    return _BUILTINS[name](name=f"builtin:{name}")
