import filecmp
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy.stats import chi2_contingency

from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.datasets.synthetic import FACTORS, SynthConfig, assign_factors, generate, render_clip
from evalharness.errors import ProtocolError

from helpers import decode_all


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    a, b, c = (generate(tmp_path / name, SynthConfig(seed=seed, clips=10)) for name, seed in (("a", 3), ("b", 3), ("c", 4)))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 10 + 10 * 48
    _match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert (a / "manifest.csv").read_bytes() != (c / "manifest.csv").read_bytes()


def test_factors_are_balanced_and_independent():
    rows = [f for f, _ in assign_factors(SynthConfig(clips=360))]
    for name, values in FACTORS.items():
        counts = Counter(r[name] for r in rows)
        assert set(counts) == set(values) and max(counts.values()) - min(counts.values()) <= 1
    appearance = [f"{r['colour']}-{r['texture']}" for r in rows]
    motion = [f"{r['direction']}-{r['speed']}" for r in rows]
    table = np.array([[sum(1 for a, m in zip(appearance, motion, strict=True) if a == x and m == y) for y in sorted(set(motion))]
                      for x in sorted(set(appearance))])
    assert chi2_contingency(table).pvalue > 0.01


def test_masks_and_decoded_frames_follow_the_rendering(synth30):
    manifest = resolve_manifest(load_protocol("synthetic-motion").__class__(**{
        **load_protocol("synthetic-motion").__dict__,
        "dataset": {**load_protocol("synthetic-motion").dataset, "clips": 30}}), synth30)
    item = manifest.items[4]
    masks = sorted(item.masks.glob("*.png"))
    assert len(masks) == 48 and Image.open(masks[0]).mode == "P"
    factors, seed = assign_factors(SynthConfig(clips=30))[4]
    frames, truth = render_clip(factors, SynthConfig(clips=30), np.random.default_rng(seed))
    stored = np.stack([np.array(Image.open(m)) for m in masks]).astype(bool)
    assert np.array_equal(stored, truth)
    area = truth.sum(axis=(1, 2))
    assert (area > 0.7 * np.pi * (0.15 * 64) ** 2).all() and (area < 1.3 * np.pi * (0.17 * 64) ** 2).all()
    decoded = decode_all(item.path).astype(np.int16)
    assert np.abs(decoded - frames).mean() < 6


def test_reversed_playback_is_the_time_reverse_of_forward(tmp_path):
    cfg = SynthConfig(clips=10)
    factors = {"shape": "square", "colour": "red", "texture": "solid", "direction": "left", "speed": "slow",
               "rotation": "cw", "playback": "forward"}
    forward, _ = render_clip(factors, cfg, np.random.default_rng(1))
    flipped = {**factors, "direction": "right", "rotation": "ccw", "playback": "reversed"}
    backward, _ = render_clip(flipped, cfg, np.random.default_rng(1))
    assert np.array_equal(forward[::-1], backward)
    # equal time means: an appearance-only model cannot tell the two playbacks apart
    assert np.array_equal(forward.mean(0), backward.mean(0))


def test_card_that_the_data_cannot_satisfy_is_an_error(synth30):
    with pytest.raises(ProtocolError, match="clips is 30 but the card needs 360; regenerate it with seed 0 and 360 clips"):
        resolve_manifest(load_protocol("synthetic-motion"), synth30)
