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
_TOKEN_GRID = 8
_POSITION_SCALE = 0.3
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


def _positions(t: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """(t, h, w, 18): sine and cosine of each token's frame, row and column at one, two and four cycles over the grid,
    the position a transformer's tokens carry (so the order of tokens, hence motion, can be read from them)."""
    codes = []
    for axis, size in enumerate((t, h, w)):
        phase = torch.arange(size, device=device, dtype=torch.float32) * (2 * math.pi / size)
        for cycles in (1, 2, 4):
            for fn in (torch.sin, torch.cos):
                shape = [1, 1, 1]
                shape[axis] = size
                codes.append(fn(cycles * phase).view(shape).expand(t, h, w))
    return torch.stack(codes, -1)


def _cells(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, g, g, C): the mean over each cell of the token grid."""
    b, t, c = x.shape[:3]
    return F.adaptive_avg_pool2d(x.flatten(0, 1), _TOKEN_GRID).view(b, t, c, _TOKEN_GRID, _TOKEN_GRID).permute(0, 1, 3, 4, 2)


def _cell_tokens(rgb: torch.Tensor, local: torch.Tensor, layer: int) -> torch.Tensor:
    """(B, T, g, g, 24) tokens: each cell's mean colour (3), mean horizontal and vertical brightness gradient (2), one
    more local statistic (`local`, (B, T, 1, H, W)) and its position (18), scaled so that local features are of order
    one and positions smaller. The builtins have one layer and no final norm, so any norm setting gives the same
    tokens."""
    if layer not in (1, -1):
        raise ValueError(f"builtin backbones have one layer (1 or -1), not {layer}")
    b, t = rgb.shape[:2]
    gray = rgb.mean(2, keepdim=True)
    gx = F.pad(gray[..., :, 1:] - gray[..., :, :-1], (0, 1))
    gy = F.pad(gray[..., 1:, :] - gray[..., :-1, :], (0, 0, 0, 1))
    cells = _cells(torch.cat([rgb, 64 * gx, 64 * gy, local], 2))
    position = _POSITION_SCALE * _positions(t, _TOKEN_GRID, _TOKEN_GRID, rgb.device).expand(b, -1, -1, -1, -1)
    return torch.cat([cells, position], -1)


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

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        """Per frame, an 8 x 8 grid of cells: mean colour, gradients, brightness contrast within the cell, position."""
        rgb = _rgb(self, clips)
        gray = rgb.mean(2, keepdim=True)
        local = (gray - F.avg_pool2d(gray.flatten(0, 1), 3, 1, 1, count_include_pad=False).view_as(gray)).abs()
        return _cell_tokens(rgb, 16 * local, layer)


def block_matching(gray: torch.Tensor, radius: int = _MATCH_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel displacement (dy, dx) between consecutive frames (T, H, W) by 5x5 block matching.

    Returns displacements (T-1, 2, H, W) and weights (T-1, H, W) = how much each pixel changed. All shifts are
    costed in one batch (a loop over them is thousands of tiny operations); of equal costs the first shift in
    (dy, dx) order wins.
    """
    prev, nxt = gray[:-1], gray[1:]
    shifts = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    rolled = torch.stack([torch.roll(prev, shift, dims=(-2, -1)) for shift in shifts])
    cost = F.avg_pool2d((nxt - rolled).abs().flatten(0, 1).unsqueeze(1), 5, 1, 2, count_include_pad=False)
    index = cost.view_as(rolled).argmin(0)
    table = torch.tensor(shifts, dtype=gray.dtype, device=gray.device)
    # (2, T-1, H, W) in memory as before: atan2 of its rows downstream rounds differently on another layout
    best = torch.stack([table[:, 0][index], table[:, 1][index]])
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

    def tokens(self, clips: torch.Tensor, layer: int, norm: str) -> torch.Tensor:
        """Per frame, an 8 x 8 grid of cells: mean colour, gradients, brightness change since the previous frame (zero
        on the first), position. Each token holds what one frame shows; motion is in how tokens follow each other."""
        rgb = _rgb(self, clips)
        gray = rgb.mean(2, keepdim=True)
        change = torch.cat([torch.zeros_like(gray[:, :1]), gray[:, 1:] - gray[:, :-1]], 1)
        return _cell_tokens(rgb, 32 * change, layer)

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
