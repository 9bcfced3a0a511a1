import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evalharness.cards import load_protocol, shipped_cards
from evalharness.protocol import Frames
from evalharness.sampling import (
    crop_offsets,
    dense_indices,
    frame_indices,
    resized_size,
    snippet_indices,
    uniform_indices,
)

GOLDEN = Path(__file__).parent / "golden" / "frame_indices.json"
LENGTHS = (1, 7, 36, 48, 49, 64, 73, 164, 300, 1001)


def reference(frames: Frames, views: int, n: int) -> list[list[int]]:
    """DESIGN.md's real-valued definitions, evaluated with exact fractions (independent of the code)."""
    if frames.sampling == "all":
        return [list(range(n))]
    k = frames.count
    if frames.sampling == "uniform":
        return [[math.floor((j + Fraction(2 * v + 1, 2 * views)) * Fraction(n, k)) for j in range(k)] for v in range(views)]
    span = (k - 1) * frames.stride + 1
    if n < span:
        return [[min(j * frames.stride, n - 1) for j in range(k)] for _ in range(views)]
    if views == 1:
        starts = [math.floor(Fraction(n - span, 2))]
    else:
        starts = [math.floor(Fraction(v * (n - span), views - 1) + Fraction(1, 2)) for v in range(views)]
    return [[s + j * frames.stride for j in range(k)] for s in starts]


def sliding_reference(frames: Frames, n: int, fps: Fraction) -> list[list[int]]:
    """The README's sliding-snippet definitions with exact fractions: window W, hop H, T full windows (one clipped
    window for a short video), `count` frames per window at segment centres or as a centred strided clip."""
    w = frames.window_frames or math.floor(Fraction(str(frames.window_seconds)) * fps + Fraction(1, 2))
    h = max(1, w - math.floor(w * Fraction(str(frames.overlap or 0)) + Fraction(1, 2)))
    k = frames.count
    if frames.stride is None:
        offsets = [math.floor((j + Fraction(1, 2)) * Fraction(w, k)) for j in range(k)]
    else:
        offsets = [(w - (k - 1) * frames.stride - 1) // 2 + j * frames.stride for j in range(k)]
    starts = [t * h for t in range(1 + (n - w) // h)] if n >= w else [0]
    return [[min(s + o, n - 1) for o in offsets] for s in starts]


SLIDING_FPS = Fraction(30000, 1001)  # the rate the sliding cards' snapshot assumes (window_seconds needs one)


def test_hand_computed_examples():
    assert uniform_indices(10, 4, 1).tolist() == [[1, 3, 6, 8]]
    assert uniform_indices(48, 16, 1)[0].tolist() == list(range(1, 48, 3))
    assert dense_indices(100, 4, 2, 1).tolist() == [[46, 48, 50, 52]]
    assert dense_indices(100, 4, 2, 3).tolist() == [[0, 2, 4, 6], [47, 49, 51, 53], [93, 95, 97, 99]]
    # round half up, not to even: (n - L) = 1, V = 3 -> middle start 0.5 -> 1
    assert dense_indices(62, 16, 4, 3)[:, 0].tolist() == [0, 1, 1]
    # a video shorter than the span repeats its last frame
    assert dense_indices(5, 4, 4, 2).tolist() == [[0, 4, 4, 4], [0, 4, 4, 4]]


def test_every_shipped_card_matches_the_snapshot_and_the_exact_reference():
    golden = json.loads(GOLDEN.read_text())
    got = {}
    for name in sorted(shipped_cards()):
        p = load_protocol(name)
        got[name] = {}
        for n in LENGTHS:
            if p.frames.sampling == "sliding":
                indices = snippet_indices(n, p.frames, SLIDING_FPS)
                assert indices.tolist() == sliding_reference(p.frames, n, SLIDING_FPS), (name, n)
            else:
                indices = frame_indices(p.frames, p.views.temporal, n)
                assert indices.tolist() == reference(p.frames, p.views.temporal, n), (name, n)
            got[name][str(n)] = indices.tolist()
    assert got == golden


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 5000), k=st.integers(1, 64), views=st.integers(1, 10), stride=st.integers(1, 8),
       sampling=st.sampled_from(["uniform", "dense"]))
def test_invariants(n, k, views, stride, sampling):
    frames = Frames(sampling, k, stride if sampling == "dense" else None)
    got = frame_indices(frames, views, n)
    assert got.shape == (views, k) and got.dtype == np.int32
    assert got.min() >= 0 and got.max() < n
    assert (np.diff(got, axis=1) >= 0).all()
    assert got.tolist() == reference(frames, views, n)
    if sampling == "dense" and n >= (k - 1) * stride + 1:
        assert (np.diff(got, axis=1) == stride).all()
        assert (np.diff(got[:, 0]) >= 0).all()
    if sampling == "uniform" and n >= k * views:
        assert len(np.unique(got)) == k * views


def test_resize_and_crops():
    assert resized_size(240, 320, 224) == (224, 299)
    assert resized_size(256, 340, 224) == (224, 298)
    assert resized_size(320, 240, 224) == (299, 224)
    assert resized_size(64, 64, 64) == (64, 64)
    assert crop_offsets(224, 299, 224, 1) == [(0, 37)]
    assert crop_offsets(224, 299, 224, 3) == [(0, 0), (0, 37), (0, 75)]
    assert crop_offsets(299, 224, 224, 3) == [(0, 0), (37, 0), (75, 0)]
    assert crop_offsets(256, 340, 224, 1) == [(16, 58)]
