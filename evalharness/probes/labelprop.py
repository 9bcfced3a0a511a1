"""Label propagation for semi-supervised video object segmentation (DAVIS), scored with J and F.

Per-frame feature maps, L2-normalised over channels. The labels of frame 0 (its annotation brought to the feature
grid) and the soft label maps predicted for earlier frames propagate to each target position through its top-k
cosine affinities to the positions of the context frames, softmaxed at a temperature; the label map is upsampled
and its argmax is the mask. Two presets are their reference code's propagation: `crw` (Jabri et al. 2020,
ajabri/videowalk code/test.py as its README runs it for 67.6 J&F) and `dino` (Caron et al. 2021,
eval_video_segmentation.py); the tests compare masks with line-by-line copies of both. Every setting the two differ
in is a field of `Config`, so the probe hash covers it. Features are read one video at a time and affinities are
computed a few query rows at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ProbeError
from ..masks import mask_files, read_label_mask, write_palette_mask
from ..metrics import INTERVALS, davis_object_scores, sequence_share_estimate
from ..progress import bar
from .base import ProbeOutcome
from .common import ProbeInput
from .labelprop_config import Config

# the most affinities held at once (query positions x context positions), about 64 MB in float32
_CHUNK_ELEMENTS = 1 << 24
def _context(t: int, config: Config) -> dict[tuple[int, bool], int]:
    """The context of target frame t: (frame, windowed) -> how many times it counts in the top-k. Frame 0 once, the
    previous frames once each, and with pad_first as many more copies of frame 0 as frames are missing (CRW's padded
    video gives target t <= context that many windowed copies of frame 0)."""
    previous = range(max(1, t - config.context), t)
    context = {(0, config.restrict_first): 1}
    if config.pad_first and len(previous) < config.context:
        context[0, True] = context.get((0, True), 0) + config.context - len(previous)
    return context | {(p, True): 1 for p in previous}


def _window(rows: range, band: range, width: int, config: Config, device: torch.device) -> torch.Tensor:
    """Which band positions (band x width) each target position (rows x width) may use: (len(rows) * width, ...)."""
    ty, tx = torch.meshgrid(torch.arange(rows.start, rows.stop, device=device), torch.arange(width, device=device),
                            indexing="ij")
    cy, cx = torch.meshgrid(torch.arange(band.start, band.stop, device=device), torch.arange(width, device=device),
                            indexing="ij")
    dy = ty.reshape(-1, 1) - cy.reshape(1, -1)
    dx = tx.reshape(-1, 1) - cx.reshape(1, -1)
    if config.window == "disc":
        return (dy * dy + dx * dx).float() ** 0.5 < config.radius
    return (dy.abs() <= config.radius) & (dx.abs() <= config.radius)


def _chunks(h: int, w: int, config: Config, device: torch.device) -> list[tuple[range, range, torch.Tensor]]:
    """The query rows of each step, the band of context rows they may reach, and the window between them; steps are
    as tall as keeps one step's affinities (query positions x context positions) within _CHUNK_ELEMENTS."""
    reach = math.floor(config.radius)
    whole = 0 if config.restrict_first else 1
    windowed = config.context + 1 - whole

    def size(rows: int) -> int:
        return rows * w * (whole * h * w + windowed * min(h, rows + 2 * reach) * w)

    step = h
    while step > 1 and size(step) > _CHUNK_ELEMENTS:
        step -= 1
    out = []
    for y0 in range(0, h, step):
        rows = range(y0, min(h, y0 + step))
        band = range(max(0, rows.start - reach), min(h, rows.stop + reach))
        out.append((rows, band, _window(rows, band, w, config, device)))
    return out


def _combine(blocks: list[tuple[torch.Tensor, torch.Tensor, int]], config: Config) -> torch.Tensor:
    """Labels (n, C) of n target positions from blocks of (affinities (n, m) to context positions, -inf where the
    window excludes them; their labels (m, C); how many times the block counts). The top k of all blocks together:
    exactly k softmaxed (CRW), or every affinity at least the k-th, weighted exp(a / T) / sum (DINO)."""
    tops = [affinity.topk(min(config.topk, affinity.shape[1]), dim=1) for affinity, _, _ in blocks]
    values = torch.cat([top.values for top, (_, _, copies) in zip(tops, blocks, strict=True) for _ in range(copies)], 1)
    k = min(config.topk, values.shape[1])
    if config.keep_ties:
        least = torch.exp(values.topk(k, dim=1).values[:, -1:] / config.temperature)
        total, weighted = 0, 0
        for affinity, labels, copies in blocks:
            weights = torch.exp(affinity / config.temperature)
            weights[weights < least] = 0
            total = total + copies * weights.sum(1, keepdim=True)
            weighted = weighted + copies * (weights @ labels)
        return weighted / total
    labels = torch.cat([labels[top.indices] for top, (_, labels, copies) in zip(tops, blocks, strict=True)
                        for _ in range(copies)], 1)
    top, index = (values / config.temperature).topk(k, dim=1)
    chosen = torch.gather(labels, 1, index.unsqueeze(-1).expand(-1, -1, labels.shape[-1]))
    return (torch.softmax(top, dim=1).unsqueeze(-1) * chosen).sum(1)


def propagate(features: torch.Tensor, first_labels: torch.Tensor, config: Config,
              done: Callable[[int], object] | None = None) -> torch.Tensor:
    """Soft label maps (T, h, w, C) at the feature grid, frame 0 = `first_labels` (h, w, C); each predicted map is
    context for the frames after it, soft, as both references feed it back. Computed in float32 (float64 features:
    in float64). `done(1)` is called after each predicted frame (a progress bar's update)."""
    t_count, h, w, d = features.shape
    feats = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    labels = torch.empty(t_count, h, w, first_labels.shape[-1], dtype=feats.dtype, device=features.device)
    labels[0] = first_labels
    chunks = _chunks(h, w, config, features.device)
    for t in range(1, t_count):
        context = _context(t, config)
        for rows, band, allowed in chunks:
            query = feats[t, rows.start:rows.stop].reshape(-1, d)
            blocks = []
            for (frame, windowed), copies in context.items():
                span = slice(band.start, band.stop) if windowed else slice(None)
                affinity = query @ feats[frame, span].reshape(-1, d).T
                if windowed:
                    affinity.masked_fill_(~allowed, -torch.inf)
                blocks.append((affinity, labels[frame, span].reshape(-1, labels.shape[-1]), copies))
            labels[t, rows.start:rows.stop] = _combine(blocks, config).view(len(rows), w, -1)
        if done is not None:
            done(1)
    return labels


def _taps(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's INTER_LINEAR along one axis: the two source indices and the weight of the second for each output
    index (half-pixel centres, clamped at the edges, positions in double precision as OpenCV computes them)."""
    x = (np.arange(n_out) + 0.5) * (1.0 / (n_out / n_in)) - 0.5
    first = np.floor(x)
    frac = x - first
    frac[first < 0], first[first < 0] = 0, 0
    last = first >= n_in - 1
    frac[last], first[last] = 0, n_in - 1
    first = torch.from_numpy(first.astype(np.int64))
    return first, (first + 1).clamp_(max=n_in - 1), torch.from_numpy(frac.astype(np.float32))


def resize_linear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, H, W) -> (C, *size) as cv2.resize(..., INTER_LINEAR) resizes float maps (what CRW calls): no
    antialiasing, each row along its width first, then each column. torch's bilinear, whose positions are float32,
    differs from it by up to 6e-5 on DAVIS sizes."""
    y0, y1, fy = _taps(maps.shape[-2], size[0])
    x0, x1, fx = _taps(maps.shape[-1], size[1])
    rows = maps[..., x0] * (1 - fx) + maps[..., x1] * fx
    return rows[..., y0, :] * (1 - fy)[:, None] + rows[..., y1, :] * fy[:, None]


def first_labels(mask: np.ndarray, n_objects: int, grid: tuple[int, int], downsample: str) -> torch.Tensor:
    """(h, w, K + 1) labels of the first annotation (object ids) on the feature grid: its one-hot map resized
    bilinearly (CRW) or the ids resized by nearest neighbour, then one-hot (DINO)."""
    if downsample == "nearest":
        small = np.array(Image.fromarray(mask.astype(np.uint8)).resize((grid[1], grid[0]), Image.NEAREST))
        return F.one_hot(torch.from_numpy(small.astype(np.int64)), n_objects + 1).float()
    onehot = F.one_hot(torch.from_numpy(mask.astype(np.int64)), n_objects + 1).permute(2, 0, 1).float()
    return resize_linear(onehot, grid).permute(1, 2, 0)


def _norm_mask(maps: torch.Tensor) -> torch.Tensor:
    """DINO's norm_mask: each channel with a positive maximum shifted to minimum 0 and scaled to maximum 1."""
    out = maps.clone()
    for c, channel in enumerate(maps):
        if channel.max() > 0:
            shifted = channel - channel.min()
            out[c] = shifted / shifted.max()
    return out


def frame_mask(soft: torch.Tensor, stride: int, size: tuple[int, int], config: Config) -> np.ndarray:
    """Object ids (H, W) = `size` of one frame's soft label map (h, w, C); of equal maxima the first label wins, as
    in np.argmax (CRW) and torch.max (DINO)."""
    maps = soft.permute(2, 0, 1)
    if config.upsample == "frame":
        maps = resize_linear(maps, size)
    else:
        maps = F.interpolate(maps[None], scale_factor=stride, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)[0]
    if config.norm_mask:
        maps = _norm_mask(maps)
    ids = maps.max(0).indices.to(torch.uint8).numpy()
    if ids.shape != tuple(size):
        ids = np.array(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))
    return ids


def to_masks(soft: torch.Tensor, stride: int, size: tuple[int, int], config: Config) -> np.ndarray:
    """Object ids (T, H, W) of soft label maps (T, h, w, C), upsampled one frame at a time."""
    return np.stack([frame_mask(s, stride, size, config) for s in soft])


def run(data: ProbeInput, config: Config, device: str = "cpu", save_masks: str | Path | None = None,
        quiet: bool = False) -> ProbeOutcome:
    """Propagate the first-frame masks of every test video and score J, F and J&F per object (a progress bar over
    the sequences' frames unless `quiet`)."""
    objects, per_sequence = [], {}
    items = data.items("test")
    frames = sum(max(len(mask_files(item.masks)) - 1, 0) for item in items if item.masks is not None)
    with bar(frames, "labelprop", "frame", quiet) as progress:
        for number, item in enumerate(items, 1):
            progress.desc = f"labelprop: sequence {number}/{len(items)}"
            if item.masks is None:
                raise ProbeError(f"video '{item.id}' has no annotation folder in the manifest")
            truth = np.stack([read_label_mask(p) for p in mask_files(item.masks)])
            maps = torch.from_numpy(data.file.dense(item.id)).to(device)
            stride, _ = data.file.dense_geometry(item.id)
            if truth.shape[0] != maps.shape[0]:
                raise ProbeError(f"video '{item.id}': {truth.shape[0]} annotations but {maps.shape[0]} feature maps")
            if truth.shape[0] < 3:
                raise ProbeError(f"video '{item.id}': needs at least 3 frames (the first and last are not scored)")
            n_objects = int(truth[0].max())
            first = first_labels(truth[0], n_objects, tuple(maps.shape[1:3]), config.downsample).to(device)
            soft = propagate(maps, first, config, progress.update).cpu()
            predicted = to_masks(soft, stride, truth.shape[1:], config)
            predicted[0] = truth[0]
            if save_masks is not None:
                for path, ids in zip(mask_files(item.masks), predicted, strict=True):
                    write_palette_mask(Path(save_masks) / item.id / path.name, ids)
            per_sequence[item.id] = {}
            for obj in range(1, n_objects + 1):
                scores = davis_object_scores(truth, predicted, obj)
                per_sequence[item.id][str(obj)] = {k: scores[k] for k in ("J", "F", "J_recall", "F_recall")}
                objects.append((item.id, obj, scores))
    sequences = [seq for seq, _, _ in objects]
    values = {key: np.array([s[key] for _, _, s in objects]) for key in ("J", "F", "J_recall", "F_recall")}
    values = {"J&F": (values["J"] + values["F"]) / 2, **values}
    metrics = {key: sequence_share_estimate(v, sequences) for key, v in values.items()}
    chosen = {"preset": config.preset, "objects": len(objects), "sequences": len(per_sequence),
              "interval": INTERVALS["bootstrap-sequences"], "per_sequence": per_sequence}
    return ProbeOutcome("J&F", metrics, chosen, {"ids": [f"{seq}_{obj}" for seq, obj, _ in objects],
                                                 "value": values["J&F"].tolist(), "J": values["J"].tolist(),
                                                 "F": values["F"].tolist()})

