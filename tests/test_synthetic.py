import filecmp
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.stats import chi2_contingency

from evalharness.cards import load_protocol, parse_protocol, shipped_cards
from evalharness.datasets import Segment, resolve_manifest
from evalharness.datasets.synthetic import (
    BACKGROUND,
    FACTORS,
    TIMELINE,
    SynthConfig,
    TimelineConfig,
    action_step,
    assign_factors,
    assign_timelines,
    generate,
    generate_timeline,
    idle_tour,
    label_classes,
    render_clip,
    render_timeline,
)
from evalharness.datasets.temporal import frame_runs
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


# ----------------------------------------------------------------------------------------------- the timeline

TIMELINE10 = TimelineConfig(clips=10)


@pytest.fixture(scope="module")
def timeline10(tmp_path_factory):
    """A 10-video timeline (seed 0) under a fresh root."""
    root = tmp_path_factory.mktemp("timeline10")
    generate_timeline(root, TIMELINE10)
    return root


def timeline_card(name: str, **dataset):
    """A shipped timeline card for the 10-video timeline, its dataset block changed by `dataset`."""
    card = yaml.safe_load(Path(str(shipped_cards()[name])).read_text())
    return parse_protocol({**card, "name": "t", "dataset": {**card["dataset"], "clips": 10, **dataset}})


def _columns(masks: np.ndarray) -> np.ndarray:
    """The object's column in each frame: the circular mean of its mask's columns (the frame wraps around)."""
    size = masks.shape[2]
    angle = np.exp(2j * np.pi * np.arange(size) / size)
    return np.angle((masks * angle).sum(axis=(1, 2))) * size / (2 * np.pi) % size


def test_the_object_moves_as_the_segments_say():
    cfg = TIMELINE10
    for factors, labels, seed in assign_timelines(cfg)[:3]:
        frames, masks = render_timeline(factors, labels, cfg, np.random.default_rng(seed))
        assert frames.shape == (cfg.frames, cfg.size, cfg.size, 3) and len(labels) == cfg.frames
        spacing = cfg.size / cfg.places
        hops = (np.diff(_columns(masks)) / spacing + cfg.places / 2) % cfg.places - cfg.places / 2
        assert np.allclose(hops, np.rint(hops), atol=1e-6)
        for hop, label in zip(np.rint(hops).astype(int), labels[1:], strict=True):
            if label == BACKGROUND:  # idling jumps more than a quarter of the frame: never a slide of 1 or 3 places
                assert abs(hop) > cfg.places // 4
            else:
                assert hop == action_step(label)
        assert masks.sum(axis=(1, 2)).min() == masks.sum(axis=(1, 2)).max()  # the same object throughout


def test_windows_inside_a_stretch_have_the_same_mean_whatever_the_stretch():
    cfg = TIMELINE10
    factors, labels, seed = assign_timelines(cfg)[0]
    frames, _ = render_timeline(factors, labels, cfg, np.random.default_rng(seed))
    runs = frame_runs(labels)
    assert {s.label for s in runs} > {BACKGROUND} and len(runs) >= 5
    means = [frames[t:t + cfg.places].mean(axis=0) for s in runs for t in range(int(s.start), int(s.end) + 2 - cfg.places)]
    assert len(means) > 50 and all(np.array_equal(m, means[0]) for m in means)


def test_timeline_schedules_are_idle_first_and_last_and_deterministic():
    cfg = TIMELINE10
    videos = assign_timelines(cfg)
    assert videos == assign_timelines(cfg) and videos != assign_timelines(TimelineConfig(seed=1, clips=10))
    for _, labels, _ in videos:
        runs = frame_runs(labels)
        assert runs[0].label == runs[-1].label == BACKGROUND and len(runs) % 2 == 1
        assert all((s.label == BACKGROUND) == (i % 2 == 0) for i, s in enumerate(runs))
        for s in runs[1:-1]:
            low, high = cfg.idle if s.label == BACKGROUND else cfg.action
            assert low <= s.end - s.start + 1 <= high
    assert idle_tour(np.random.default_rng(3), 16) == idle_tour(np.random.default_rng(3), 16)


def test_timeline_files_are_the_same_for_the_same_seed(timeline10, tmp_path):
    again = generate_timeline(tmp_path, TIMELINE10)
    files = sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
    assert len(files) == 3 + 10
    _match, mismatch, errors = filecmp.cmpfiles(timeline10 / TIMELINE, again, files, shallow=False)
    assert not mismatch and not errors


def test_segmentation_manifest_has_every_frame_and_balanced_folds(timeline10):
    manifest = resolve_manifest(timeline_card("synthetic-segmentation"), timeline10)
    assert manifest.classes == tuple(sorted([BACKGROUND, *label_classes("motion")])) and len(manifest.items) == 10
    assert Counter(item.group for item in manifest.items) == {"fold1": 3, "fold2": 3, "fold3": 2, "fold4": 2}
    for item in manifest.items:
        assert item.split == "all" and item.segments[0].start == 0 and item.segments[-1].end == TIMELINE10.frames - 1
        assert all(a.end + 1 == b.start for a, b in zip(item.segments, item.segments[1:], strict=False))
    item = manifest.items[0]
    assert len(decode_all(item.path)) == TIMELINE10.frames
    _, labels, _ = assign_timelines(TIMELINE10)[0]
    assert item.segments == frame_runs(labels)


def test_localization_manifest_has_the_actions_in_seconds(timeline10):
    manifest = resolve_manifest(timeline_card("synthetic-localization"), timeline10)
    assert manifest.classes == tuple(sorted(label_classes("motion")))
    assert {item.split for item in manifest.items} == {"train", "test"} and len(manifest.items) == 9
    _, labels, _ = assign_timelines(TIMELINE10)[0]
    fps = TIMELINE10.fps
    assert manifest.items[0].segments == tuple(Segment(s.start / fps, (s.end + 1) / fps, s.label)
                                               for s in frame_runs(labels) if s.label != BACKGROUND)


@pytest.mark.parametrize(("card", "dataset", "key"), [
    ("synthetic-segmentation", {"timeline": "detection"}, "dataset.timeline"),
    ("synthetic-segmentation", {"test": "test"}, "dataset.test"),
    ("synthetic-localization", {"label": "motion"}, "dataset.label"),
    ("synthetic-localization", {"test": "all"}, "dataset.test"),
])
def test_impossible_timeline_cards_are_refused_when_loaded(card, dataset, key):
    with pytest.raises(ProtocolError) as info:
        timeline_card(card, **dataset)
    assert f"key '{key}'" in str(info.value) and "\n" not in str(info.value)


def test_a_root_without_a_timeline_says_so(synth30):
    with pytest.raises(ProtocolError, match="no synthetic timeline"):
        resolve_manifest(timeline_card("synthetic-segmentation"), synth30)
