"""Frame-index formulas and spatial view grids of DESIGN.md, in exact integer arithmetic.

Every implementation that follows these formulas gets the same indices, so two
harnesses (or two papers) that cite a card feed a model the same frames.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .errors import DecodeError, ProtocolError
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
    if frames.sampling == "sliding":
        raise ProtocolError("sampling 'sliding' feeds a sequence of snippets: use snippet_indices or video.read_snippets")
    if frames.sampling == "uniform":
        out = uniform_indices(n, frames.count, temporal_views)
    elif frames.sampling == "dense":
        out = dense_indices(n, frames.count, frames.stride, temporal_views)
    else:
        out = np.arange(n, dtype=np.int64)[None, :]
    return out.astype(np.int32)


def round_half_up(x: Fraction) -> int:
    """floor(x + 1/2) of an exact fraction (never banker's rounding)."""
    return (2 * x.numerator + x.denominator) // (2 * x.denominator)


def snippet_geometry(frames: Frames, fps: Fraction | None = None) -> tuple[int, int]:
    """A sliding card's window W and hop H in frames: W = window_frames, or window_seconds x fps rounded half up (fps:
    the stream's average frame rate, needed only then); H = W - round_half_up(W x overlap), at least 1."""
    if frames.sampling != "sliding":
        raise ProtocolError(f"sampling '{frames.sampling}' has no snippets (only 'sliding' does)")
    if frames.window_frames is not None:
        window = frames.window_frames
    else:
        if not fps or fps <= 0:
            raise DecodeError(f"the stream has no average frame rate to turn {frames.window_seconds} s into frames")
        window = round_half_up(frames.window_seconds_exact * Fraction(fps))
        if window < 1:
            raise DecodeError(f"a window of {frames.window_seconds} s is under half a frame at {Fraction(fps)} fps")
    span = (frames.count - 1) * frames.stride + 1 if frames.stride is not None else 1
    if span > window:
        timed = f" ({frames.window_seconds} s at {Fraction(fps)} fps)" if frames.window_frames is None else ""
        raise DecodeError(f"a window of {window} frames{timed} is shorter than {frames.count} frames at stride "
                          f"{frames.stride} (span {span})")
    return window, max(1, window - round_half_up(window * frames.overlap_exact))


def snippet_offsets(frames: Frames, window: int) -> np.ndarray:
    """Where a snippet's `count` frames sit in its window of `window` frames: the strided clip centred in it (the
    `dense` rule with one view), or the segment centres (the `uniform` rule) when the card has no stride."""
    if frames.stride is None:
        return uniform_indices(window, frames.count, 1)[0]
    return dense_indices(window, frames.count, frames.stride, 1)[0]


def snippet_windows(n: int, frames: Frames, fps: Fraction | None = None) -> np.ndarray:
    """(T, 2) [first, last] frames of each snippet of a video of n frames: T = 1 + (n - W) // H windows [t*H,
    t*H + W - 1] (frames after the last full window feed none), or [0, n - 1] alone when n < W."""
    if n < 1:
        raise DecodeError("video has no decodable frames")
    window, hop = snippet_geometry(frames, fps)
    if n < window:
        return np.array([[0, n - 1]], dtype=np.int64)
    starts = np.arange(1 + (n - window) // hop, dtype=np.int64) * hop
    return np.stack([starts, starts + window - 1], axis=1)


def snippet_indices(n: int, frames: Frames, fps: Fraction | None = None) -> np.ndarray:
    """(T, count) int32 frames each snippet feeds: its window's first frame plus `snippet_offsets`, the last frame
    repeated past the end of a video shorter than one window."""
    window, _ = snippet_geometry(frames, fps)
    starts = snippet_windows(n, frames, fps)[:, :1]
    return np.minimum(starts + snippet_offsets(frames, window)[None, :], n - 1).astype(np.int32)


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
