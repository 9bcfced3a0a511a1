"""Frame-index formulas and spatial view grids of DESIGN.md, in exact integer arithmetic.

Every implementation that follows these formulas gets the same indices, so two
harnesses (or two papers) that cite a card feed a model the same frames.
"""

from __future__ import annotations

import numpy as np

from .errors import DecodeError
from .protocol import Frames


def uniform_indices(n: int, count: int, views: int) -> np.ndarray:
    """Segment-based sampling: view v takes the point (v + 0.5) / V through each of `count` segments."""
    j = np.arange(count, dtype=np.int64)[None, :]
    v = np.arange(views, dtype=np.int64)[:, None]
    return ((2 * j * views + 2 * v + 1) * n) // (2 * views * count)


def dense_indices(n: int, count: int, stride: int, views: int) -> np.ndarray:
    """Strided clips of span (count - 1) * stride + 1, starts spread evenly (round half up); short videos repeat
    the last frame."""
    span = (count - 1) * stride + 1
    offsets = np.arange(count, dtype=np.int64) * stride
    if n < span:
        return np.minimum(offsets, n - 1)[None, :].repeat(views, axis=0)
    if views == 1:
        starts = np.array([(n - span) // 2], dtype=np.int64)
    else:
        v = np.arange(views, dtype=np.int64)
        starts = (2 * v * (n - span) + views - 1) // (2 * (views - 1))
    return starts[:, None] + offsets[None, :]


def frame_indices(frames: Frames, temporal_views: int, n: int) -> np.ndarray:
    """Indices (temporal_views, k) of the presented frames a card feeds for a video of n decodable frames."""
    if n < 1:
        raise DecodeError("video has no decodable frames")
    if frames.sampling == "uniform":
        out = uniform_indices(n, frames.count, temporal_views)
    elif frames.sampling == "dense":
        out = dense_indices(n, frames.count, frames.stride, temporal_views)
    else:
        out = np.arange(n, dtype=np.int64)[None, :]
    return out.astype(np.int32)


def resized_size(height: int, width: int, short: int, long_multiple: int | None = None) -> tuple[int, int]:
    """Short side to `short`, long side scaled and rounded half up, in integers; with `long_multiple`, the scaled long
    side floored to a multiple of it instead (DINO's video segmentation input: 854 x 480 -> 832 x 480)."""
    if height <= width:
        return short, _scaled_long(width, height, short, long_multiple)
    return _scaled_long(height, width, short, long_multiple), short


def _scaled_long(long: int, side: int, short: int, multiple: int | None) -> int:
    """The long side once the short `side` becomes `short`: rounded half up, or floored to a multiple of `multiple`."""
    if multiple is None:
        return (2 * long * short + side) // (2 * side)
    return long * short // (side * multiple) * multiple


def crop_offsets(height: int, width: int, crop: int, spatial_views: int) -> list[tuple[int, int]]:
    """Top-left corners of the crops: centred, or start / centre / end along the long side."""
    if height <= width:
        top = (height - crop) // 2
        lefts = [(width - crop) // 2] if spatial_views == 1 else [0, (width - crop) // 2, width - crop]
        return [(top, left) for left in lefts]
    left = (width - crop) // 2
    tops = [(height - crop) // 2] if spatial_views == 1 else [0, (height - crop) // 2, height - crop]
    return [(top, left) for top in tops]
