import os

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from evalharness.cards import load_protocol, shipped_cards
from evalharness.datasets import resolve_manifest
from evalharness.errors import ManifestError
from evalharness.extract import ExtractConfig, extract
from evalharness.masks import mask_files, read_label_mask
from evalharness.metrics import boundary_f, boundary_map, davis_object_scores, region_j
from evalharness.probes.labelprop import Config, first_labels, propagate, to_masks

from conftest import small_labelprop_card
from helpers import probe


def block(rows, cols, shape=(6, 6)):
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_boundary_map_by_hand():
    # a 2x2 block at rows 1-2, cols 1-2: its boundary sits half a pixel toward the origin
    expected = {(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)}
    got = {tuple(p) for p in np.argwhere(boundary_map(block((1, 3), (1, 3))))}
    assert got == expected


def test_region_and_boundary_measures_by_hand():
    truth = block((1, 3), (1, 3))
    assert region_j(truth, truth) == 1.0 and boundary_f(truth, truth) == 1.0
    empty = np.zeros_like(truth)
    assert region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert region_j(truth, empty) == 0.0 and boundary_f(truth, empty) == 0.0
    assert boundary_f(empty, truth) == 0.0
    # shifted by one column: J = 2 / 6; every boundary pixel is within the 1-pixel tolerance
    assert region_j(truth, block((1, 3), (2, 4))) == pytest.approx(1 / 3)
    assert boundary_f(truth, block((1, 3), (2, 4))) == 1.0
    # shifted by two columns: J = 0; 5 of 8 boundary pixels match each way -> F = 5/8
    assert region_j(truth, block((1, 3), (3, 5))) == 0.0
    assert boundary_f(truth, block((1, 3), (3, 5))) == pytest.approx(5 / 8)


def test_tolerance_grows_with_the_image_diagonal():
    # 480 x 854: ceil(0.008 * 979.6) = 8 pixels, so a 8-pixel shift of a boundary still matches, 9 does not
    truth = block((100, 300), (100, 400), (480, 854))
    assert boundary_f(truth, block((100, 300), (108, 408), (480, 854))) == 1.0
    assert boundary_f(truth, block((100, 300), (109, 409), (480, 854))) < 1.0


def test_first_and_last_frames_are_not_scored():
    truth = np.stack([block((1, 3), (1, 3))] * 4).astype(np.uint8)
    predicted = truth.copy()
    predicted[0] = 0
    predicted[3] = 0
    scores = davis_object_scores(truth, predicted, 1)
    assert scores["J"] == 1.0 and scores["F"] == 1.0 and len(scores["J_frames"]) == 2
    predicted[1] = 0
    scores = davis_object_scores(truth, predicted, 1)
    assert scores["J"] == 0.5 and scores["J_recall"] == 0.5


def test_static_features_propagate_the_first_mask_unchanged():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 10, 16).repeat(5, 1, 1, 1)
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[16:40, 24:56] = 1
    mask[40:64, 0:16] = 2
    first = first_labels(mask, 2, (64, 80), (8, 10), 8)
    soft = propagate(features, first, Config(context=2, topk=1, radius=3))
    assert all(torch.equal(s, first) for s in soft)
    predicted = to_masks(soft, (64, 80), 8, (64, 80))
    assert all(np.array_equal(p, predicted[0]) for p in predicted)
    # bilinear upsampling of the 8x8 cells rounds the block corners only
    assert region_j(mask == 1, predicted[0] == 1) == 1 - 4 * 6 / 768  # six pixels per corner
    assert region_j(mask == 2, predicted[0] == 2) > 0.95


@pytest.fixture()
def davis_root(tmp_path, realdata):
    """The two real DAVIS-2016 sequences, cut to their first 10 frames, in the official layout."""
    root = tmp_path / "davis"
    for seq in ("blackswan", "car-shadow"):
        for kind, suffix in (("JPEGImages", "jpg"), ("Annotations", "png")):
            folder = root / kind / "480p" / seq
            folder.mkdir(parents=True)
            for i in range(10):
                os.symlink(realdata / "davis2016" / kind / "480p" / seq / f"{i:05d}.{suffix}", folder / f"{i:05d}.{suffix}")
    (root / "ImageSets" / "2016").mkdir(parents=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("blackswan\ncar-shadow\n")
    card = tmp_path / "davis16.yaml"
    raw = yaml.safe_load(shipped_cards()["davis2017-val-480p"].read_text())
    raw.update(name="davis2016-first10", dataset={"adapter": "davis", "year": 2016, "resolution": "480p", "test": "val"})
    card.write_text(yaml.safe_dump(raw))
    return root, card


def test_davis_adapter_reads_the_official_layout(davis_root):
    root, card = davis_root
    manifest = resolve_manifest(load_protocol(card), root)
    assert manifest.ids == ["blackswan", "car-shadow"]
    assert len(mask_files(manifest.items[0].masks)) == 10
    assert set(np.unique(read_label_mask(manifest.items[0].masks / "00000.png"))) == {0, 1}
    (root / "ImageSets" / "2016" / "val.txt").write_text("blackswan\nno-such-seq\n")
    with pytest.raises(ManifestError, match=r"val.txt line 2: no annotations folder"):
        resolve_manifest(load_protocol(card), root)


@pytest.mark.slow
def test_label_propagation_on_real_davis_sequences(tmp_path, davis_root):
    root, card = davis_root
    protocol = load_protocol(card)
    out = tmp_path / "d.h5"
    extract("builtin:stats", protocol, root, out, ExtractConfig(batch_size=1, workers=0, quiet=True))
    masks_dir = tmp_path / "masks"
    record = probe("labelprop", out, protocol, root, options={"save_masks": masks_dir})
    m = record["metrics"]
    assert m["J&F"]["value"] == pytest.approx((m["J"]["value"] + m["F"]["value"]) / 2)
    assert 0.5 < m["J&F"]["value"] <= 1.0 and m["J&F"]["n"] == 2
    assert record["config"] == {"context": 20, "topk": 10, "temperature": 0.07, "radius": 12, "boundary_threshold": 0.008}
    # the saved masks, scored again from disk as the official evaluation would, give the recorded J and F
    for seq in ("blackswan", "car-shadow"):
        saved = sorted((masks_dir / seq).glob("*.png"))
        assert [p.name for p in saved] == [f"{i:05d}.png" for i in range(10)]
        assert Image.open(saved[3]).mode == "P"
        truth = np.stack([read_label_mask(p) for p in mask_files(root / "Annotations" / "480p" / seq)])
        predicted = np.stack([np.array(Image.open(p)) for p in saved])
        scores = davis_object_scores(truth, predicted, 1)
        stored = record["chosen"]["per_sequence"][seq]["1"]
        assert scores["J"] == pytest.approx(stored["J"]) and scores["F"] == pytest.approx(stored["F"])


@pytest.mark.slow
def test_label_propagation_on_the_synthetic_masks(tmp_path, synth30):
    card = small_labelprop_card(tmp_path)
    protocol = load_protocol(card)
    out = tmp_path / "lp.h5"
    extract("builtin:stats", protocol, synth30, out, ExtractConfig(batch_size=3, workers=0, quiet=True))
    record = probe("labelprop", out, protocol, synth30)
    assert record["metrics"]["J&F"]["n"] == 9
    assert 0.0 < record["metrics"]["J&F"]["value"] < 1.0
