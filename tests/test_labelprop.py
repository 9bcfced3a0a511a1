import copy
import math
import os
import queue

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from evalharness.cards import load_protocol, parse_protocol, shipped_cards
from evalharness.datasets import resolve_manifest
from evalharness.errors import ManifestError
from evalharness.extract import ExtractConfig, extract
from evalharness.masks import mask_files, read_label_mask
from evalharness.metrics import (
    INTERVALS,
    boundary_f,
    boundary_map,
    davis_object_scores,
    region_j,
    sequence_share_estimate,
)
from evalharness.probes import build_config, resolve_config
from evalharness.probes.labelprop import Config, first_labels, propagate, to_masks
from evalharness.probes.labelprop_config import PRESETS
from evalharness.protocol import Task
from evalharness.sampling import resized_size
from evalharness.store import Chunk, DenseMaps, Header

from conftest import small_labelprop_card
from helpers import probe, write_file


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


# ------------------------------------------------------------------------------ the references, line by line
# Independent copies of the two reference propagations, written after their code (not ours), to prove the presets.


def cv2_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(img, size) of a float32 (H, W, C) array with its default INTER_LINEAR, as OpenCV computes it:
    half-pixel centres, edges clamped, positions in double precision, then each row, then each column (agrees with
    OpenCV 5.0 to 2e-7 on these sizes; OpenCV is not a dependency)."""

    def taps(n_in, n_out):
        scale = 1.0 / (n_out / n_in)
        first, second, alpha = [], [], []
        for d in range(n_out):
            f = (d + 0.5) * scale - 0.5
            s = math.floor(f)
            f -= s
            if s < 0:
                f, s = 0.0, 0
            if s >= n_in - 1:
                f, s = 0.0, n_in - 1
            first.append(s)
            second.append(min(s + 1, n_in - 1))
            alpha.append(f)
        return np.array(first), np.array(second), np.array(alpha, dtype=np.float32)

    x0, x1, ax = taps(img.shape[1], size[0])
    y0, y1, ay = taps(img.shape[0], size[1])
    rows = img[:, x0] * (1 - ax)[None, :, None] + img[:, x1] * ax[None, :, None]
    return rows[y0] * (1 - ay)[:, None, None] + rows[y1] * ay[:, None, None]


def crw_reference(feats, annotations, n_context=20, radius=12, temperature=0.05, topk=10, dtype=torch.float32):
    """CRW's label propagation after ajabri/videowalk: code/data/vos.py (make_paths pads the video with n_context
    copies of frame 0; labels one-hot over frame 0's label set, cv2-resized to the feature grid), code/test.py (test,
    long_mem [0]), code/utils/__init__.py (MaskedAttention) and code/utils/test_utils.py (context_index_bank,
    mem_efficient_batched_affinity, dump_predictions). feats (T, h, w, D), annotations (T, H, W) ids -> (T, H, W).
    `dtype`: what the features and labels are computed in after loading (CRW: float32)."""
    t_count, h, w, _ = feats.shape
    paths = [max(0, i - n_context) for i in range(t_count + n_context)]
    lblset = np.unique(annotations[0])
    lbls = torch.from_numpy(np.stack([cv2_resize(np.float32(np.stack([annotations[i] == ll for ll in lblset], -1)), (w, h))
                                      for i in paths])).to(dtype)
    feats = F.normalize(feats[paths].permute(3, 0, 1, 2)[None].to(dtype), dim=1)
    n = feats.shape[2] - n_context
    key_indices = torch.cat([torch.zeros(n, 1).long(), torch.arange(n_context)[None].repeat(n, 1) + torch.arange(n)[:, None]],
                            dim=-1)
    keys, query = feats[:, :, key_indices], feats[:, :, n_context:]
    gx, gy = torch.meshgrid(torch.arange(0, h), torch.arange(0, w), indexing="ij")
    d = ((gx[None, None, :, :] - gx[:, :, None, None]) ** 2 + (gy[None, None, :, :] - gy[:, :, None, None]) ** 2).float() ** 0.5
    d = (d < radius)[None].to(dtype)[None]
    d = d.flatten(-4, -3).flatten(-2)
    d[d == 0] = -1e10
    d[d == 1] = 0
    keys, query = keys.flatten(-2), query.flatten(-2)
    Ws, Is = [], []
    for b in range(0, keys.shape[2], 2):
        _k, _q = keys[:, :, b:b + 2], query[:, :, b:b + 2]
        w_s, i_s = [], []
        for pb in range(0, _k.shape[-1], 100):
            A = torch.einsum("ijklm,ijkn->iklmn", _k, _q[..., pb:pb + 100])
            A[0, :, 1:] += d[..., pb:pb + 100]
            _, nn, tt, h1w1, hw = A.shape
            A = A.view(nn, tt * h1w1, hw)
            A /= temperature
            weights, ids = torch.topk(A, topk, dim=-2)
            w_s.append(F.softmax(weights, dim=-2))
            i_s.append(ids)
        Ws += list(torch.cat(w_s, dim=-1))
        Is += list(torch.cat(i_s, dim=-1))
    lbls[n_context:] *= 0
    out = []
    for t in range(key_indices.shape[0]):
        ctx_lbls = lbls[key_indices[t]].flatten(0, 2).transpose(0, 1)
        pred = (ctx_lbls[:, Is[t]] * Ws[t][None]).sum(1).view(-1, h, w).permute(1, 2, 0)
        if t > 0:
            lbls[t + n_context] = pred
        else:
            pred = lbls[0]
            lbls[t + n_context] = pred
        pred_dist = cv2_resize(pred.numpy(), annotations.shape[:0:-1])
        out.append(lblset[np.argmax(pred_dist, axis=-1)])
    return np.stack(out)


def dino_reference(feats, annotation, patch, n_last_frames=7, topk=5, size_mask_neighborhood=12, dtype=torch.float32):
    """DINO's label propagation after facebookresearch/dino eval_video_segmentation.py (eval_video_tracking_davis,
    label_propagation, restrict_neighborhood, norm_mask, read_seg, to_one_hot), on the CPU. feats (T, h, w, D) of
    frames h * patch x w * patch; annotation: frame 0's ids at the original size (H, W) -> (T, H, W) ids. `dtype`:
    what the features and labels are computed in (DINO: float32)."""
    ori_h, ori_w = annotation.shape
    h, w = feats.shape[1:3]
    small_seg = np.array(Image.fromarray(annotation).resize((w, h), 0))
    y = torch.from_numpy(small_seg.copy()).contiguous().float().unsqueeze(0)
    n_dims = int(y.max() + 1)
    y = y.type(torch.LongTensor).view(-1, 1)
    first_seg = torch.zeros(y.size()[0], n_dims).scatter_(1, y, 1).view(h, w, n_dims).permute(2, 0, 1).unsqueeze(0)
    first_seg = first_seg.to(dtype)

    mask = torch.zeros(h, w, h, w)
    r = size_mask_neighborhood
    for i in range(h):
        for j in range(w):
            mask[i, j, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1] = 1
    mask_neighborhood = mask.reshape(h * w, h * w).unsqueeze(0).to(dtype)

    def label_propagation(feat_tar, list_frame_feats, list_segs):
        return_feat_tar = feat_tar.T
        ncontext = len(list_frame_feats)
        feat_sources = F.normalize(torch.stack(list_frame_feats), dim=1, p=2)
        feat_tar = F.normalize(feat_tar, dim=1, p=2).unsqueeze(0).repeat(ncontext, 1, 1)
        aff = torch.exp(torch.bmm(feat_tar, feat_sources) / 0.1)
        aff *= mask_neighborhood
        aff = aff.transpose(2, 1).reshape(-1, h * w)
        tk_val, _ = torch.topk(aff, dim=0, k=topk)
        tk_val_min, _ = torch.min(tk_val, dim=0)
        aff[aff < tk_val_min] = 0
        aff = aff / torch.sum(aff, keepdim=True, axis=0)
        segs = torch.cat(list_segs)
        nmb_context, C = segs.shape[:2]
        segs = segs.reshape(nmb_context, C, -1).transpose(2, 1).reshape(-1, C).T
        return torch.mm(segs, aff).reshape(1, C, h, w), return_feat_tar

    def norm_mask(mask):
        for cnt in range(mask.shape[0]):
            mask_cnt = mask[cnt, :, :]
            if mask_cnt.max() > 0:
                mask_cnt = mask_cnt - mask_cnt.min()
                mask[cnt, :, :] = mask_cnt / mask_cnt.max()
        return mask

    que = queue.Queue(n_last_frames)
    frame1_feat = feats[0].reshape(-1, feats.shape[-1]).to(dtype).T
    out = [annotation]
    for cnt in range(1, feats.shape[0]):
        used_frame_feats = [frame1_feat] + [pair[0] for pair in list(que.queue)]
        used_segs = [first_seg] + [pair[1] for pair in list(que.queue)]
        frame_tar_avg, feat_tar = label_propagation(feats[cnt].reshape(-1, feats.shape[-1]).to(dtype), used_frame_feats,
                                                    used_segs)
        if que.qsize() == n_last_frames:
            que.get()
        que.put([feat_tar, copy.deepcopy(frame_tar_avg)])
        frame_tar_avg = F.interpolate(frame_tar_avg, scale_factor=patch, mode="bilinear", align_corners=False,
                                      recompute_scale_factor=False)[0]
        _, frame_tar_seg = torch.max(norm_mask(frame_tar_avg), dim=0)
        frame_tar_seg = np.array(frame_tar_seg.squeeze().cpu().numpy(), dtype=np.uint8)
        out.append(np.array(Image.fromarray(frame_tar_seg).resize((ori_w, ori_h), 0)))
    return np.stack(out)


def ours(preset, feats, annotations, stride):
    """Our probe's masks for every frame but the first, under a named preset."""
    config = build_config("labelprop", {"preset": preset})
    first = first_labels(annotations[0], int(annotations[0].max()), tuple(feats.shape[1:3]), config.downsample)
    return to_masks(propagate(feats, first, config), stride, annotations.shape[1:], config)[1:]


def moving_scene(t_count, grid, stride, size, seed):
    """Features (T, h, w, 8), rounded to float16 as the file stores them, of a textured field drifting one cell every
    third frame, and annotations (T, H, W) of three elliptic objects drifting with it, apart from each other, two of
    them touching the right and bottom edges beyond the grid (H, W larger than grid x stride). Sizes with no pixel
    exactly halfway between two cells, nor a cell between two pixels: there two labels of equal value tie exactly and
    the order of float sums, which differs between any two implementations, picks the winner."""
    gen = torch.Generator().manual_seed(seed)
    h, w = grid
    field = torch.randn(h, w + t_count, 8, generator=gen)
    feats = torch.stack([field[:, t // 3:t // 3 + w] + 0.3 * torch.randn(h, w, 8, generator=gen) for t in range(t_count)])
    y, x = np.mgrid[:size[0], :size[1]]
    annotations = np.zeros((t_count,) + size, dtype=np.uint8)
    for t in range(t_count):
        shift = (t // 3) * stride
        ellipses = [(40.3, 90.6 - shift, 18.2, 27.5), (size[0] - 5.3, size[1] - 8.7 - shift, 31.4, 40.2),
                    (45.2, size[1] - 1.6, 25.3, 9.1)]
        for obj, (cy, cx, ry, rx) in enumerate(ellipses, 1):
            annotations[t][((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = obj
    return feats.half().float(), annotations


def reference(preset, feats, annotations, stride, dtype):
    """The masks of the reference code of a preset, for every frame but the first."""
    if preset == "crw":
        return crw_reference(feats, annotations, dtype=dtype)[1:]
    return dino_reference(feats, annotations[0], stride, dtype=dtype)[1:]


@pytest.mark.parametrize("preset", ["crw", "dino"])
def test_presets_give_the_masks_of_the_reference_code(preset):
    # a 15 x 30 grid (radius 12 restricts it), 23 frames (past the 20 frames of CRW's padded context), annotations 5
    # and 6 pixels larger than the grid covers. In float64 every pixel of every frame is the reference's. In float32,
    # as both run, sums taken in another order round differently, and a pixel whose two best labels, or a position
    # whose k-th and next affinities, tie to within that rounding may go the other way (as between the reference
    # on a CPU and on a GPU)
    feats, annotations = moving_scene(23, (15, 30), 8, (125, 246), seed=0)
    got = ours(preset, feats.double(), annotations, 8)
    assert np.array_equal(got, reference(preset, feats, annotations, 8, torch.float64))
    assert (got[:, :, 240:] == 3).any() and (got[:, 120:] == 2).any()  # beyond the grid's 240 x 120 pixels
    assert (ours(preset, feats, annotations, 8) == reference(preset, feats, annotations, 8, torch.float32)).mean() > 0.9999


def davis_sequence(realdata, seq, count):
    """The first `count` frames (T, 480, 854, 3) and annotations (T, 480, 854) of a real DAVIS-2016 sequence."""
    folder = realdata / "davis2016"
    frames = np.stack([np.array(Image.open(folder / "JPEGImages" / "480p" / seq / f"{i:05d}.jpg")) for i in range(count)])
    masks = np.stack([read_label_mask(folder / "Annotations" / "480p" / seq / f"{i:05d}.png") for i in range(count)])
    return frames, masks


def patch_features(frames, patch, width):
    """A ViT-like grid of features: each patch x patch block of the first `width` columns, less the video's mean
    colour (so that cosine similarities spread as a model's do), randomly projected to 16 dimensions, in float16."""
    t, h = frames.shape[:2]
    rows, cols = h // patch, width // patch
    pixels = frames[:, :rows * patch, :cols * patch].astype(np.float32) / 255
    pixels -= pixels.mean((0, 1, 2))
    blocks = pixels.reshape(t, rows, patch, cols, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    pixels = torch.from_numpy(np.ascontiguousarray(blocks).reshape(t, rows, cols, -1))
    return (pixels @ torch.randn(pixels.shape[-1], 16, generator=torch.Generator().manual_seed(0))).half().float()


@pytest.mark.parametrize("seq", ["blackswan", "car-shadow"])
def test_presets_give_the_masks_of_the_reference_code_on_real_davis_frames(realdata, seq):
    # at DAVIS's own 854 x 480: CRW's grid of 16-pixel patches covers 848 columns and its label maps are stretched
    # over all 854, as CRW does; DINO's frames are 832 wide (30 x 52 patches), its masks brought back to 854 by
    # nearest neighbour. Six frames (CRW's padded context; the test above goes past it), in float64 as above
    frames, masks = davis_sequence(realdata, seq, 6)
    crw = patch_features(frames, 16, 854)
    assert np.array_equal(ours("crw", crw.double(), masks, 16), reference("crw", crw, masks, 16, torch.float64))
    dino = patch_features(frames, 16, 832)
    assert np.array_equal(ours("dino", dino.double(), masks, 16), reference("dino", dino, masks, 16, torch.float64))


def test_static_features_propagate_the_first_mask_unchanged():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 10, 16).repeat(5, 1, 1, 1)
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[16:40, 24:56] = 1
    mask[40:64, 0:16] = 2
    config = Config(preset="custom", context=2, topk=1, radius=3.0)
    first = first_labels(mask, 2, (8, 10), "nearest")
    soft = propagate(features, first, config)
    assert all(torch.equal(s, first) for s in soft)
    predicted = to_masks(soft, 8, (64, 80), config)
    assert all(np.array_equal(p, predicted[0]) for p in predicted)
    # bilinear upsampling of the 8x8 cells rounds the block corners only
    assert region_j(mask == 1, predicted[0] == 1) == 1 - 4 * 6 / 768  # six pixels per corner
    assert region_j(mask == 2, predicted[0] == 2) > 0.95


def test_presets_expand_to_every_setting_and_refuse_changes():
    crw, dino = (resolve_config("labelprop", {"preset": name}, Task.LABEL_PROPAGATION) for name in ("crw", "dino"))
    assert crw == {**PRESETS["crw"], "preset": "crw", "boundary_threshold": 0.008}
    assert dino == {**PRESETS["dino"], "preset": "dino", "boundary_threshold": 0.008}
    # the settings name their preset: equal settings hash equally, however the card says them
    assert resolve_config("labelprop", {}, Task.LABEL_PROPAGATION) == crw
    assert resolve_config("labelprop", {**PRESETS["dino"], "radius": 12}, Task.LABEL_PROPAGATION) == dino
    custom = resolve_config("labelprop", {"preset": "dino", "boundary_threshold": 0.01}, Task.LABEL_PROPAGATION)
    assert custom["preset"] == "dino"  # not a propagation setting
    assert resolve_config("labelprop", {"context": 5}, Task.LABEL_PROPAGATION)["preset"] == "custom"
    with pytest.raises(ValueError, match="preset crw sets topk to 10, not 5; name preset custom to change it"):
        resolve_config("labelprop", {"preset": "crw", "topk": 5}, Task.LABEL_PROPAGATION)
    with pytest.raises(ValueError, match="preset must be one of crw, dino, custom"):
        resolve_config("labelprop", {"preset": "stc"}, Task.LABEL_PROPAGATION)
    with pytest.raises(ValueError, match="preset 'crw' does not match the settings, which are preset 'custom'"):
        Config(topk=5)
    with pytest.raises(ValueError, match="with keep_ties the weights are exp"):
        Config(preset="custom", keep_ties=True, temperature=0.01)
    cards = {name: load_protocol(name) for name in ("davis2017-val-480p", "davis2017-val-480p-dino")}
    assert cards["davis2017-val-480p"].probes["labelprop"] == crw
    assert cards["davis2017-val-480p-dino"].probes["labelprop"] == dino
    assert resized_size(480, 854, 480, cards["davis2017-val-480p-dino"].transform.long_multiple) == (480, 832)
    assert resized_size(480, 854, 480, cards["davis2017-val-480p"].transform.long_multiple) == (480, 854)


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
    assert record["config"] == resolve_config("labelprop", {"preset": "crw"}, Task.LABEL_PROPAGATION)
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


def test_intervals_resample_sequences_not_objects(tmp_path):
    # three videos of two objects each: the objects of a video enter and leave a bootstrap resample together
    rng = np.random.default_rng(3)
    rows, dense = ["id,path,split,masks"], {}
    for i in range(3):
        folder = tmp_path / "masks" / f"v{i}"
        folder.mkdir(parents=True)
        for t in range(4):
            mask = np.zeros((24, 32), np.uint8)
            mask[2 + t:12 + t, 4:14] = 1
            mask[16:24, 20 - 2 * i:32] = 2
            Image.fromarray(mask, mode="L").convert("P").save(folder / f"{t:05d}.png")
        rows.append(f"v{i},v{i},test,masks/v{i}")
        dense[f"v{i}"] = DenseMaps(rng.normal(size=(4, 3, 4, 6)).astype(np.float16), 8, (24, 32))
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    protocol = parse_protocol({"name": "lp", "version": 1, "task": "label-propagation", "frames": {"sampling": "all"},
                               "dataset": {"adapter": "manifest", "test": "test"},
                               "transform": {"resize_short": 24, "crop": None}, "probes": {"labelprop": {"preset": "dino"}}})
    manifest = resolve_manifest(protocol, tmp_path)
    header = Header(model="m", model_revision="", weights_sha256="", model_config="{}", protocol="lp", protocol_version=1,
                    extraction_hash=protocol.extraction_hash, protocol_json="{}", manifest_hash=manifest.hash,
                    harness_version="0", environment="{}")
    chunk = Chunk(manifest.ids, rng.normal(size=(3, 1, 6)).astype(np.float32), np.tile(np.arange(4, dtype=np.int32), (3, 1, 1)),
                  dense)
    record = probe("labelprop", write_file(tmp_path / "parts", header, tmp_path / "lp.h5", [chunk]), protocol, tmp_path)
    assert record["predictions"]["ids"] == ["v0_1", "v0_2", "v1_1", "v1_2", "v2_1", "v2_2"]
    assert record["chosen"]["sequences"] == 3 and record["chosen"]["interval"] == INTERVALS["bootstrap-sequences"]
    for key in ("J&F", "J", "F"):
        values = record["predictions"]["value" if key == "J&F" else key]
        expected = sequence_share_estimate(values, ["v0", "v0", "v1", "v1", "v2", "v2"])
        got = record["metrics"][key]
        assert (got["interval"], got["n"], got["ci_low"], got["ci_high"]) == ("bootstrap-sequences", 6, expected.ci_low,
                                                                              expected.ci_high)


def direct_propagation(feats, first, config):
    """Soft labels by the definition, independent of the probe's tiling and top-k merging: every target position
    against every position of the joint context (frame 0 whole or windowed, its padded copies, the previous frames),
    -inf outside its window, and the top k of all of it at once."""
    t_count, h, w, d = feats.shape
    unit = F.normalize(feats, dim=-1).reshape(t_count, h * w, d)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy, dx = y.reshape(-1, 1) - y.reshape(1, -1), x.reshape(-1, 1) - x.reshape(1, -1)
    if config.window == "disc":
        window = (dy * dy + dx * dx).float() ** 0.5 < config.radius  # in float32, as CRW's MaskedAttention compares
    else:
        window = (dy.abs() <= config.radius) & (dx.abs() <= config.radius)
    labels = [first.reshape(h * w, -1)]
    for t in range(1, t_count):
        previous = list(range(max(1, t - config.context), t))
        pads = config.context - len(previous) if config.pad_first else 0
        context = [(0, config.restrict_first)] + [(0, True)] * pads + [(p, True) for p in previous]
        affinity = torch.cat([(unit[t] @ unit[p].T).masked_fill(~window if windowed else torch.zeros_like(window), -math.inf)
                              for p, windowed in context], 1)
        context_labels = torch.cat([labels[p] for p, _ in context])
        k = min(config.topk, affinity.shape[1])
        if config.keep_ties:
            weights = torch.exp(affinity / config.temperature)
            weights[weights < torch.exp(affinity.topk(k, dim=1).values[:, -1:] / config.temperature)] = 0
            labels.append(weights @ context_labels / weights.sum(1, keepdim=True))
        else:
            top = (affinity / config.temperature).topk(k, dim=1)
            labels.append((torch.softmax(top.values, 1)[..., None] * context_labels[top.indices]).sum(1))
    return torch.stack(labels).reshape(t_count, h, w, -1)


CUSTOM = [
    {"preset": "crw"},
    {"preset": "dino"},
    {"window": "square", "radius": 3.0, "pad_first": False, "keep_ties": True, "temperature": 0.1, "topk": 4, "context": 2},
    {"radius": 4.5, "restrict_first": True, "topk": 3, "context": 0},
    {"window": "square", "radius": 2.0, "restrict_first": True, "keep_ties": True, "temperature": 0.1, "topk": 7,
     "context": 10},
    {"radius": 2.5, "topk": 30, "context": 3},
    {"radius": 1.5, "pad_first": False, "restrict_first": True, "topk": 2, "context": 4},
]


@pytest.mark.parametrize("frames_per_block", ["one", "all"])
@pytest.mark.parametrize("settings", CUSTOM, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_tiled_propagation_equals_the_direct_masked_computation(settings, frames_per_block, monkeypatch):
    # an 11 x 19 grid, 6 frames: windows cut by every edge of the grid and of its 8 x 8 tiles (radius 12 reaches past
    # the whole grid); context 0, shorter and longer than the video (the ring of context frames wraps); blocks of one
    # context frame, or of as many consecutive ring slots as there are
    import evalharness.probes.labelprop as labelprop

    monkeypatch.setattr(labelprop, "_BLOCK_ELEMENTS", 1 if frames_per_block == "one" else 1 << 30)
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 11, 19, 8, generator=gen, dtype=torch.float64)
    first = torch.softmax(3 * torch.randn(11, 19, 3, generator=gen, dtype=torch.float64), -1)
    config = build_config("labelprop", {"preset": "custom", **settings} if "preset" not in settings else settings)
    got = propagate(feats, first, config)
    assert torch.allclose(got, direct_propagation(feats, first, config), rtol=0, atol=1e-12)
    assert not torch.allclose(got[1:], first.expand(5, -1, -1, -1), atol=1e-3)  # the labels do move


def test_every_tied_affinity_counts_as_dino_counts_it(monkeypatch):
    # features drawn from 3 unit vectors of +-1/2 entries, so every affinity is a multiple of 1/4, exact in any order of
    # summation: dozens of equal affinities at every k-th, more than the candidates a block keeps beyond its top k, so
    # the weights of those rows come from all of the block's affinities
    import evalharness.probes.labelprop as labelprop

    monkeypatch.setattr(labelprop, "_TIE_ROOM", 2)
    gen = torch.Generator().manual_seed(2)
    palette = F.pad(torch.randn(3, 4, generator=gen, dtype=torch.float64).sign() / 2, (0, 4))
    feats = palette[torch.randint(3, (6, 11, 19), generator=gen)]
    first = torch.softmax(3 * torch.randn(11, 19, 3, generator=gen, dtype=torch.float64), -1)
    config = build_config("labelprop", {"preset": "dino"})
    assert torch.allclose(propagate(feats, first, config), direct_propagation(feats, first, config), rtol=0,
                          atol=1e-12)


def test_context_memory_stays_a_few_frames_however_large_the_window():
    # a 480p grid: radius 12 keeps each context frame as column bands (30 x 30 patches, under 6x the frame); a window
    # as large as the grid keeps each frame once, as it is (a patch would be larger than the frame)
    from evalharness.probes.labelprop import _Tiles

    frame = 60 * 106 * 4
    for settings, most in (({"preset": "crw"}, 6 * frame), ({"preset": "custom", "radius": 200.0}, frame)):
        tiles = _Tiles(60, 106, build_config("labelprop", settings), torch.device("cpu"), torch.float32)
        assert tiles.bands(1, 4, torch.zeros(1)).numel() <= most
