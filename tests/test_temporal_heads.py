"""The temporal heads of issue 14 on synthetic sequences whose classes are decodable from the features: MS-TCN for
segmentation, ActionFormer for localization, Soft-NMS and label assignment by hand, configs refusing bad values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evalharness.probes.actionformer_head import (
    ActionFormer,
    assign,
    fit_localization,
    learning_rate,
    points,
    predict_localization,
    soft_nms,
    truncate,
)
from evalharness.probes.localization_config import PRESETS
from evalharness.probes.localization_config import Config as LocConfig
from evalharness.probes.segmentation_config import Config as SegConfig
from evalharness.probes.tcn_head import MultiStageTCN, fit_segmentation, predict_segmentation, segmentation_loss

pytestmark = pytest.mark.usefixtures("one_thread")
SEG_CLASSES, LOC_CLASSES, DIM = 4, 2, 8
TINY_SEG = SegConfig(stages=2, layers=4, channels=16, epochs=8, batch_size=2, lr=0.005)
TINY_LOC = LocConfig(preset="custom", max_seq_len=64, dim=32, heads=4, windows=(5, 5, 5), stem_blocks=1,
                     regression_ranges=((0.0, 4.0), (4.0, 8.0), (8.0, 10000.0)), epochs=9, warmup_epochs=1,
                     batch_size=4, lr=0.003, init_loss_norm=10.0, ema_decay=0.9, max_seg_num=20)


def segmentation_videos(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Runs of 5-19 frames of one class; features: the class's one-hot code + noise."""
    videos = []
    for _ in range(n):
        labels: list[int] = []
        while len(labels) < rng.integers(30, 80):
            labels += [int(rng.integers(SEG_CLASSES))] * int(rng.integers(5, 20))
        y = np.array(labels, dtype=np.int64)
        x = 0.3 * rng.standard_normal((len(y), DIM)).astype(np.float32)
        x[np.arange(len(y)), y] += 1.0
        videos.append((x, y))
    return videos


def localization_videos(n: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """40-64 positions of background code with actions of 6-16 positions carrying their class's code, + noise."""
    videos = []
    for _ in range(n):
        length = int(rng.integers(40, 65))
        x = 0.2 * rng.standard_normal((length, DIM)).astype(np.float32)
        x[:, LOC_CLASSES] += 1.0
        segments, labels, t = [], [], int(rng.integers(2, 8))
        while t + (size := int(rng.integers(6, 17))) <= length - 2:
            c = int(rng.integers(LOC_CLASSES))
            x[t:t + size, LOC_CLASSES] -= 1.0
            x[t:t + size, c] += 1.0
            segments.append((t, t + size))
            labels.append(c)
            t += size + int(rng.integers(4, 10))
        videos.append((x, np.array(segments, dtype=np.float32).reshape(-1, 2), np.array(labels, dtype=np.int64)))
    return videos


def frame_accuracy(predicted: list[np.ndarray], true: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate(predicted) == np.concatenate(true)))


def tiou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def recall(detections, truths, threshold: float = 0.5) -> float:
    """Share of true actions matched (same label, tIoU >= threshold) by one of a video's top 2 x #actions detections."""
    hits = total = 0
    for (segs, _, labels), (true_segs, true_labels) in zip(detections, truths, strict=True):
        top = 2 * len(true_segs)
        for seg, label in zip(true_segs, true_labels, strict=True):
            total += 1
            hits += any(tiou(seg, d) >= threshold and c == label for d, c in zip(segs[:top], labels[:top], strict=True))
    return hits / max(total, 1)


@pytest.fixture(scope="module")
def segmentation_fit():
    rng = np.random.default_rng(0)
    train, val, test = segmentation_videos(16, rng), segmentation_videos(4, rng), segmentation_videos(6, rng)
    model, epoch, curve = fit_segmentation(train, val, SEG_CLASSES, TINY_SEG, 0, frame_accuracy, quiet=True)
    return model, epoch, curve, test


@pytest.fixture(scope="module")
def localization_fit():
    rng = np.random.default_rng(1)
    train, val, test = localization_videos(16, rng), localization_videos(4, rng), localization_videos(6, rng)
    model, epoch, curve = fit_localization(train, val, LOC_CLASSES, TINY_LOC, 0, recall, quiet=True)
    return model, epoch, curve, test


def test_tcn_segments_decodable_frames(segmentation_fit):
    model, epoch, curve, test = segmentation_fit
    assert len(curve) == TINY_SEG.epochs and curve[epoch - 1] == max(curve)
    predicted = predict_segmentation(model, [x for x, _ in test])
    assert all(p.dtype == np.int64 and p.shape == y.shape for p, (_, y) in zip(predicted, test, strict=True))
    assert frame_accuracy(predicted, [y for _, y in test]) >= 0.9


def test_tcn_is_deterministic_for_a_seed():
    rng = np.random.default_rng(2)
    train, val = segmentation_videos(6, rng), segmentation_videos(2, rng)
    config = SegConfig(stages=2, layers=3, channels=8, epochs=2, batch_size=2)
    fits = [fit_segmentation(train, val, SEG_CLASSES, config, 7, frame_accuracy, quiet=True) for _ in range(2)]
    first, second = (predict_segmentation(model, [x for x, _ in val]) for model, _, _ in fits)
    assert fits[0][1:] == fits[1][1:]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_tcn_padding_does_not_reach_valid_frames():
    torch.manual_seed(0)
    model = MultiStageTCN(DIM, SEG_CLASSES, stages=2, layers=5, channels=8).eval()
    x = torch.randn(1, DIM, 37)
    padded = torch.cat([x, 100 * torch.randn(1, DIM, 23)], 2)
    mask = torch.zeros(1, 1, 60)
    mask[..., :37] = 1
    with torch.no_grad():
        alone, batched = model(x, torch.ones(1, 1, 37)), model(padded, mask)
    torch.testing.assert_close(batched[..., :37], alone, atol=1e-5, rtol=1e-5)


def test_tcn_loss_is_ms_tcn_s_for_one_video():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 1, 5, 20), torch.randint(0, 5, (1, 20))
    expected = sum(torch.nn.functional.cross_entropy(p.transpose(2, 1).reshape(-1, 5), targets.view(-1))
                   + 0.15 * torch.mean(torch.clamp((torch.log_softmax(p[:, :, 1:], 1)
                                                    - torch.log_softmax(p[:, :, :-1], 1)) ** 2, 0, 16))
                   for p in logits)
    torch.testing.assert_close(segmentation_loss(logits, targets, torch.ones(1, 1, 20)), expected)


def test_actionformer_finds_the_segments(localization_fit):
    model, epoch, curve, test = localization_fit
    assert len(curve) == TINY_LOC.epochs + TINY_LOC.warmup_epochs and curve[epoch - 1] == max(curve)
    detections = predict_localization(model, [x for x, _, _ in test], TINY_LOC)
    for (segs, scores, labels), (x, _, _) in zip(detections, test, strict=True):
        assert segs.shape == (len(scores), 2) and labels.shape == scores.shape and len(scores) <= TINY_LOC.max_seg_num
        assert np.all(np.diff(scores) <= 0) and segs.min() >= 0 and segs.max() <= len(x)
    assert recall(detections, [(s, lab) for _, s, lab in test]) >= 0.8


def test_actionformer_runs_long_sequences_whole(localization_fit):
    model, _, _, test = localization_fit
    x = np.concatenate([v[0] for v in test[:3]])
    shifts = np.cumsum([0] + [len(v[0]) for v in test[:2]])
    segments = np.concatenate([v[1] + shift for v, shift in zip(test[:3], shifts, strict=True)])
    labels = np.concatenate([v[2] for v in test[:3]])
    assert len(x) > TINY_LOC.max_seq_len
    detections = predict_localization(model, [x], TINY_LOC)
    assert detections[0][0].max() > TINY_LOC.max_seq_len
    assert recall(detections, [(segments, labels)]) >= 0.8


def test_actionformer_resized_like_activitynet():
    rng = np.random.default_rng(4)
    train, val, test = localization_videos(16, rng), localization_videos(4, rng), localization_videos(6, rng)
    config = LocConfig(**{**_fields(TINY_LOC), "resize": True, "use_abs_pe": True, "windows": (5, 5, 0),
                          "label_smoothing": 0.1, "loss_weight": 2.0})
    model, _, _ = fit_localization(train, val, LOC_CLASSES, config, 0, recall, quiet=True)
    detections = predict_localization(model, [x for x, _, _ in test], config)
    assert all(segs.max() <= len(x) for (segs, _, _), (x, _, _) in zip(detections, test, strict=True))
    assert recall(detections, [(s, lab) for _, s, lab in test]) >= 0.8


def test_actionformer_is_deterministic_for_a_seed():
    rng = np.random.default_rng(3)
    train, val = localization_videos(4, rng), localization_videos(2, rng)
    config = LocConfig(**{**_fields(TINY_LOC), "dim": 16, "epochs": 1, "batch_size": 2})
    fits = [fit_localization(train, val, LOC_CLASSES, config, 5, recall, quiet=True) for _ in range(2)]
    first, second = (predict_localization(model, [x for x, _, _ in val], config) for model, _, _ in fits)
    assert fits[0][1:] == fits[1][1:]
    for a, b in zip(first, second, strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


def test_actionformer_padding_does_not_reach_valid_positions():
    torch.manual_seed(0)
    config = LocConfig(**{**_fields(TINY_LOC), "windows": (5, 5, 0), "droppath": 0.0})
    model = ActionFormer(DIM, LOC_CLASSES, config).eval()
    x = torch.randn(1, DIM, 64)
    short, long = torch.zeros(1, 1, 64, dtype=torch.bool), torch.zeros(1, 1, 128, dtype=torch.bool)
    short[..., :45], long[..., :45] = True, True
    with torch.no_grad():
        a = model(x, short)
        b = model(torch.cat([x, 50 * torch.randn(1, DIM, 64)], 2), long)
    for level, (m, n) in enumerate(zip(a[2], b[2], strict=True)):
        valid = int(m.sum())
        assert valid == int(n.sum()) == math.ceil(45 / 2 ** level)
        torch.testing.assert_close(b[0][level][:, :valid], a[0][level][:, :valid], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b[1][level][:, :valid], a[1][level][:, :valid], atol=1e-5, rtol=1e-5)


def test_soft_nms_by_hand():
    segments = np.array([[0, 10], [5, 15], [20, 30], [0, 10], [0, 10]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.5, 0.002])
    labels = np.array([0, 0, 0, 1, 0])
    segs, sc, lab = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.001, max_num=3)
    # B overlaps A by IoU 5/15: 0.8 * exp(-(1/3)^2 / 0.5); C overlaps neither; E (IoU 1 with A) falls under min_score;
    # D is another class, untouched, but only the best 3 of all are kept
    np.testing.assert_allclose(sc, [0.9, 0.7, 0.8 * math.exp(-1 / 9 / 0.5)])
    np.testing.assert_array_equal(segs, [[0, 10], [20, 30], [5, 15]])
    np.testing.assert_array_equal(lab, [0, 0, 0])
    _, sc, lab = soft_nms(segments, scores, labels, sigma=0.5, min_score=0.001, max_num=10)
    assert len(sc) == 4 and list(lab) == [0, 0, 0, 1]
    assert soft_nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64), 0.5, 0.001, 5)[0].shape == (0, 2)


def test_assignment_by_hand():
    # one action [4, 12] (centre 8); level 0 positions 0..15 (stride 1, range 0-4), level 1 positions 0, 2, .., 14
    # (stride 2, range 4-8): radius 1.5 strides around the centre, then the longer boundary distance within the range
    pts = points([16, 8, 4], TINY_LOC, torch.device("cpu"))
    cls, reg = assign(pts, torch.tensor([[4.0, 12.0]]), torch.tensor([1]), LOC_CLASSES, 1.5)
    positive = torch.nonzero(cls.sum(1))[:, 0].tolist()
    assert positive == [8, 16 + 3, 16 + 4, 16 + 5]  # t = 8 on level 0; t = 6, 8, 10 on level 1
    assert cls[positive, 1].eq(1).all() and cls[positive, 0].eq(0).all()
    torch.testing.assert_close(reg[[8, 19, 20, 21]], torch.tensor([[4.0, 4.0], [1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]))


def test_truncation_keeps_an_action_in_the_window():
    config = LocConfig(**{**_fields(TINY_LOC), "crop_ratio": (1.0, 1.0)})
    x = np.arange(200, dtype=np.float32)[:, None]
    segments, labels = np.array([[150.0, 170.0]]), np.array([1])
    for seed in range(5):
        cut, segs, labs = truncate(x, segments, labels, config, np.random.default_rng(seed))
        start = int(cut[0, 0])
        assert len(cut) == 64 and len(segs) == 1 and labs[0] == 1
        np.testing.assert_allclose(segs[0], np.clip(segments[0], start, start + 64) - start)
        assert segs[0, 1] - segs[0, 0] >= 0.5 * 20
    same = truncate(x[:50], segments[:0], labels[:0], config, np.random.default_rng(0))
    assert len(same[0]) == 50
    for seed in range(5):  # the reference's feat_offset widens the window the actions are clipped to
        cut, segs, _ = truncate(x, np.array([[100.0, 140.0]]), labels, config, np.random.default_rng(seed), offset=2.0)
        start = int(cut[0, 0])
        np.testing.assert_allclose(segs[0], [max(start - 2, 100) - start, min(start + 66, 140) - start])


def test_learning_rate_warms_up_then_follows_the_cosine():
    assert learning_rate(0, 10, 100, 1e-3) == 0.0
    assert learning_rate(9, 10, 100, 1e-3) == pytest.approx(1e-3)
    assert learning_rate(10, 10, 100, 1e-3) == pytest.approx(1e-3)
    assert learning_rate(55, 10, 100, 1e-3) == pytest.approx(0.5 * (1e-3 + 1e-8))
    assert learning_rate(100, 10, 100, 1e-3) == pytest.approx(1e-8)


def _fields(config: LocConfig) -> dict:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def test_localization_presets_are_the_reference_configs():
    assert LocConfig() == LocConfig(**LocConfig.normalise({"preset": "thumos14"}))
    anet = LocConfig(**LocConfig.normalise({"preset": "activitynet"}))
    assert (anet.max_seq_len, anet.resize, anet.dim, anet.windows, anet.lr, anet.nms_sigma) == (
        192, True, 256, (7, 7, 7, 7, 7, 0), 0.001, 0.75)
    assert LocConfig.normalise({"lr": 0.001, **{k: v for k, v in PRESETS["activitynet"].items() if k != "lr"}})[
        "preset"] == "activitynet"
    assert LocConfig.normalise({"preset": "thumos14", "seeds": [0, 1]})["seeds"] == (0, 1)
    with pytest.raises(ValueError, match=r"preset thumos14 sets lr to 0\.0001, not 0\.01; name preset custom"):
        LocConfig.normalise({"preset": "thumos14", "lr": 0.01})
    with pytest.raises(ValueError, match="does not match the settings, which are preset 'custom'"):
        LocConfig(dim=64)


@pytest.mark.parametrize(("changes", "message"), [
    ({"windows": (4, 5, 5)}, "windows must be a non-empty list of odd window sizes"),
    ({"regression_ranges": ((0.0, 4.0),)}, "regression_ranges must hold one"),
    ({"max_seq_len": 66}, "max_seq_len 66 must be divisible by 4"),
    ({"dim": 30}, "dim 30 must be divisible by heads 4"),
    ({"crop_ratio": (0.9, 1.2)}, "crop_ratio must be a pair"),
    ({"droppath": 1.0}, r"droppath must be in \[0, 1\)"),
    ({"nms_sigma": 0}, "nms_sigma must be a positive number"),
    ({"max_seg_num": 0}, "max_seg_num must be an integer >= 1"),
    ({"seeds": (1, 1)}, "seeds must be a non-empty list of distinct"),
])
def test_localization_config_refuses_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        LocConfig(**{**_fields(TINY_LOC), **changes})


@pytest.mark.parametrize(("changes", "message"), [
    ({"stages": 0}, "stages must be an integer >= 1"),
    ({"layers": True}, "layers must be an integer >= 1"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"smoothing_clamp": float("inf")}, "smoothing_clamp must be a positive number"),
    ({"val_fraction": 1.5}, r"val_fraction must be in \(0, 1\)"),
    ({"seeds": ()}, "seeds must be a non-empty list"),
])
def test_segmentation_config_refuses_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        SegConfig(**changes)


def test_segmentation_config_defaults_are_ms_tcn_s():
    config = SegConfig(**SegConfig.normalise({"seeds": [0], "lr": 0.0005}))
    assert (config.stages, config.layers, config.channels, config.epochs, config.batch_size, config.lr,
            config.smoothing_weight, config.smoothing_clamp) == (4, 10, 64, 50, 1, 0.0005, 0.15, 16.0)


def test_fits_refuse_malformed_videos():
    x = np.zeros((10, DIM), dtype=np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        fit_segmentation([(x, np.full(10, 4))], [(x, np.zeros(10, dtype=np.int64))], SEG_CLASSES, TINY_SEG, 0,
                         frame_accuracy, quiet=True)
    with pytest.raises(ValueError, match="segments must end after they start"):
        fit_localization([(x, np.array([[5.0, 5.0]]), np.array([0]))], [(x, np.zeros((0, 2)), np.zeros(0, dtype=int))],
                         LOC_CLASSES, TINY_LOC, 0, recall, quiet=True)
