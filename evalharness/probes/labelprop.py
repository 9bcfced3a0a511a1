"""Label propagation for semi-supervised video object segmentation (DAVIS), scored with J and F.

Per-frame feature maps, L2-normalised over channels. The labels of frame 0 (its annotation brought to the feature
grid) and the soft label maps predicted for earlier frames propagate to each target position through its top-k
cosine affinities to the positions of the context frames, softmaxed at a temperature; the label map is upsampled
and its argmax is the mask. Two presets are their reference code's propagation: `crw` (Jabri et al. 2020,
ajabri/videowalk code/test.py as its README runs it for 67.6 J&F) and `dino` (Caron et al. 2021,
eval_video_segmentation.py); the tests compare masks with line-by-line copies of both. Every setting the two differ
in is a field of `Config`, so the probe hash covers it. Features are read one video at a time; affinities are computed
for tiles of 8 x 8 target positions against the patch of context positions their windows reach (frame 0 searched whole
against all of it), a few tile rows at a time, and the top k of the joint context is merged from each block's.
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

# the most affinities and gathered context features held at once, about 64 MB in float32
_CHUNK_ELEMENTS = 1 << 24
# target positions are taken in tiles of _TILE x _TILE, each against the context positions its windows can reach
_TILE = 8


def _context(t: int, config: Config) -> tuple[range, int, int]:
    """The context of target frame t: the previous frames (windowed, each counting once in the top-k), how many times
    frame 0 counts windowed and how many times searched whole. Frame 0 once, and with pad_first as many more windowed
    copies of it as previous frames are missing (CRW's padded video gives target t <= context that many)."""
    previous = range(max(1, t - config.context), t)
    pads = config.context - len(previous) if config.pad_first else 0
    if config.restrict_first:
        return previous, 1 + pads, 0
    return previous, pads, 1


class _Tiles:
    """The tiling of an h x w grid: maps padded by `reach` (the window's reach) on every side and to whole tiles, the
    tile rows a step takes, and which positions of its tile's patch (the tile plus `reach` around it) each target
    position may use. Windowed affinities are products of a tile's targets with its patch, not with whole rows."""

    def __init__(self, h: int, w: int, config: Config, device: torch.device, depth: int) -> None:
        self.h, self.w, self.reach = h, w, math.floor(config.radius)
        self.rows, self.cols = -(-h // _TILE), -(-w // _TILE)
        self.side = _TILE + 2 * self.reach
        offsets = torch.arange(self.side, device=device) - self.reach
        inner = torch.arange(_TILE, device=device)
        dy = (inner[:, None, None, None] - offsets[None, None, :, None]).expand(_TILE, _TILE, self.side, self.side)
        dx = (inner[None, :, None, None] - offsets[None, None, None, :]).expand(_TILE, _TILE, self.side, self.side)
        if config.window == "disc":
            window = (dy * dy + dx * dx).float() ** 0.5 < config.radius
        else:
            window = (dy.abs() <= config.radius) & (dx.abs() <= config.radius)
        y = torch.arange(self.rows, device=device)[:, None] * _TILE + offsets
        x = torch.arange(self.cols, device=device)[:, None] * _TILE + offsets
        inside = ((y >= 0) & (y < h))[:, None, :, None] & ((x >= 0) & (x < w))[None, :, None, :]
        self.excluded = ~(window.reshape(1, _TILE * _TILE, -1) & inside.reshape(self.rows * self.cols, 1, -1))
        whole = 0 if config.restrict_first else 1
        patches = (config.context + 1) * self.side ** 2
        per_row = self.cols * (_TILE * _TILE * (whole * h * w + patches) + patches * depth)
        self.step = max(1, _CHUNK_ELEMENTS // per_row)

    def pad(self, maps: torch.Tensor) -> torch.Tensor:
        """(T, h, w, C) -> (T, reach + rows * _TILE + reach, ..., C), zero outside the grid."""
        out = maps.new_zeros(maps.shape[0], self.rows * _TILE + 2 * self.reach, self.cols * _TILE + 2 * self.reach,
                             maps.shape[-1])
        out[:, self.reach:self.reach + self.h, self.reach:self.reach + self.w] = maps
        return out

    def targets(self, padded: torch.Tensor, rows: range) -> torch.Tensor:
        """The target positions of the tiles in tile rows `rows` of one padded frame: (tiles, _TILE * _TILE, C)."""
        inner = padded[self.reach + rows.start * _TILE:self.reach + rows.stop * _TILE, self.reach:-self.reach or None]
        tiles = inner.reshape(len(rows), _TILE, self.cols, _TILE, -1).transpose(1, 2)
        return tiles.reshape(len(rows) * self.cols, _TILE * _TILE, -1)

    def patches(self, padded: torch.Tensor, frames: range, rows: range) -> torch.Tensor:
        """The patches of the tiles in tile rows `rows` of padded frames: (frames, tiles, side * side, C)."""
        frame_stride, row_stride, col_stride, channel_stride = padded.stride()
        view = padded.as_strided((padded.shape[0], self.rows, self.cols, self.side, self.side, padded.shape[-1]),
                                 (frame_stride, _TILE * row_stride, _TILE * col_stride, row_stride, col_stride,
                                  channel_stride))
        chosen = view[frames.start:frames.stop, rows.start:rows.stop]
        return chosen.reshape(len(frames), len(rows) * self.cols, self.side ** 2, padded.shape[-1])

    def untile(self, tiles: torch.Tensor, rows: range) -> torch.Tensor:
        """(tiles, _TILE * _TILE, C) of the tile rows `rows` -> their grid rows (at most len(rows) * _TILE, w, C)."""
        grid = tiles.reshape(len(rows), self.cols, _TILE, _TILE, -1).transpose(1, 2).reshape(
            len(rows) * _TILE, self.cols * _TILE, -1)
        return grid[:self.h - rows.start * _TILE, :self.w]


def _top(affinity: torch.Tensor, group: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top min(k, F * m) affinities (F, B, n, m) of each of the B x n targets over its F frames together,
    descending, and where they are (f * m + position): (B, n, k), (B, n, k). When there are many, first the k groups
    of `group` consecutive positions with the largest maxima: the k-th largest of the group maxima is at most the
    k-th largest affinity, so the top k lie in those groups, and a top-k over their k x group affinities finds them
    (exact in the values; among equal values the one chosen may differ)."""
    frames, batch, n, m = affinity.shape
    k = min(k, frames * m)
    if m % group or frames * (m // group) <= 2 * k:
        return affinity.permute(1, 2, 0, 3).reshape(batch, n, frames * m).topk(k, dim=-1)
    groups = m // group
    maxima = affinity.view(frames, batch, n, groups, group).amax(-1).permute(1, 2, 0, 3).reshape(batch, n, -1)
    best = maxima.topk(k, dim=-1).indices
    frame, within = best // groups, best % groups
    target = torch.arange(batch * n, device=affinity.device).view(batch, n, 1)
    rows = (frame * (batch * n) + target) * groups + within
    candidates = affinity.reshape(-1, group).index_select(0, rows.flatten()).view(batch, n, -1)
    values, position = candidates.topk(k, dim=-1)
    chosen = position // group
    start = torch.gather(frame, -1, chosen) * m + torch.gather(within, -1, chosen) * group
    return values, start + position % group


def _labels_at(labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The labels (F, B or 1, m, C) at `index` (B, n, k) into each target's F x m positions, as `_top` gives them:
    (B, n, k, C)."""
    shared, m, c = labels.shape[1:]
    frame, position = index // m, index % m
    tile = torch.arange(index.shape[0], device=index.device).view(-1, 1, 1) if shared > 1 else 0
    return labels.reshape(-1, c).index_select(0, ((frame * shared + tile) * m + position).flatten()).view(*index.shape, c)


def _combine(blocks: list[tuple[torch.Tensor, torch.Tensor, int, int]], config: Config) -> torch.Tensor:
    """Labels (B, n, C) of B x n target positions from blocks of (affinities (F, B, n, m) to F context frames'
    positions, -inf where the window excludes them; their labels (F, B or 1, m, C); groups of positions for `_top`;
    how many times each frame of the block counts). The top k of all blocks together, from each block's top k: exactly
    k softmaxed (CRW), or every affinity at least the k-th, weighted exp(a / T) / sum (DINO)."""
    tops = [_top(affinity, group, config.topk) for affinity, _, group, _ in blocks]
    values = torch.cat([values for (values, _), block in zip(tops, blocks, strict=True) for _ in range(block[-1])], -1)
    k = min(config.topk, values.shape[-1])
    if config.keep_ties:
        least = torch.exp(values.topk(k, dim=-1).values[..., -1:] / config.temperature)
        total, weighted = 0, 0
        for affinity, labels, _, copies in blocks:
            weights = torch.exp(affinity / config.temperature)
            weights.masked_fill_(weights < least, 0)
            total = total + copies * weights.sum(-1, keepdim=True).sum(0)
            weighted = weighted + copies * (weights @ labels).sum(0)
        return weighted / total
    picked = [_labels_at(labels, index) for (_, index), (_, labels, _, _) in zip(tops, blocks, strict=True)]
    labels = torch.cat([at for at, block in zip(picked, blocks, strict=True) for _ in range(block[-1])], -2)
    batch = values.shape[:-1]
    top, index = (values.reshape(-1, values.shape[-1]) / config.temperature).topk(k, dim=1)
    labels = labels.reshape(-1, *labels.shape[-2:])
    chosen = torch.gather(labels, 1, index.unsqueeze(-1).expand(-1, -1, labels.shape[-1]))
    return (torch.softmax(top, dim=1).unsqueeze(-1) * chosen).sum(1).reshape(*batch, -1)


def _windowed(query: torch.Tensor, padded: torch.Tensor, padded_labels: torch.Tensor, frames: range, rows: range,
              tiles: _Tiles) -> tuple[torch.Tensor, torch.Tensor]:
    """The affinities (F, tiles, _TILE * _TILE, side * side) of the targets of the tiles in tile rows `rows` to their
    patches in F consecutive frames, -inf outside their windows, and the patches' labels (F, tiles, side * side, C)."""
    affinity = query @ tiles.patches(padded, frames, rows).transpose(-1, -2)
    affinity.masked_fill_(tiles.excluded[rows.start * tiles.cols:rows.stop * tiles.cols], -torch.inf)
    return affinity, tiles.patches(padded_labels, frames, rows)


def _predict(t: int, feats: torch.Tensor, padded: torch.Tensor, labels: torch.Tensor, padded_labels: torch.Tensor,
             tiles: _Tiles, config: Config) -> None:
    """Frame t's soft labels into `labels` and `padded_labels`, a step of tile rows at a time: the previous frames
    against each tile's patch in one batched product, frame 0 windowed (counted `first` times) in another, frame 0
    searched whole against all of it."""
    previous, first, whole = _context(t, config)
    d, c = feats.shape[-1], labels.shape[-1]
    for start in range(0, tiles.rows, tiles.step):
        rows = range(start, min(tiles.rows, start + tiles.step))
        query = tiles.targets(padded[t], rows)
        blocks = [(*_windowed(query, padded, padded_labels, previous, rows, tiles), tiles.side, 1)]
        if first:
            blocks.append((*_windowed(query, padded, padded_labels, range(1), rows, tiles), tiles.side, first))
        if whole:
            affinity = (query.reshape(-1, d) @ feats[0].reshape(-1, d).T).view(1, *query.shape[:2], -1)
            blocks.append((affinity, labels[0].reshape(1, 1, -1, c), tiles.w, whole))
        grid = tiles.untile(_combine(blocks, config), rows)
        top = rows.start * _TILE
        labels[t, top:top + grid.shape[0]] = grid
        padded_labels[t, tiles.reach + top:tiles.reach + top + grid.shape[0], tiles.reach:tiles.reach + tiles.w] = grid


def propagate(features: torch.Tensor, first_labels: torch.Tensor, config: Config,
              done: Callable[[int], object] | None = None) -> torch.Tensor:
    """Soft label maps (T, h, w, C) at the feature grid, frame 0 = `first_labels` (h, w, C); each predicted map is
    context for the frames after it, soft, as both references feed it back. Computed in float32 (float64 features:
    in float64). `done(1)` is called after each predicted frame (a progress bar's update)."""
    t_count, h, w, d = features.shape
    feats = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    labels = torch.empty(t_count, h, w, first_labels.shape[-1], dtype=feats.dtype, device=features.device)
    labels[0] = first_labels
    tiles = _Tiles(h, w, config, features.device, d)
    padded, padded_labels = tiles.pad(feats), tiles.pad(labels[:1].expand(t_count, -1, -1, -1))
    for t in range(1, t_count):
        _predict(t, feats, padded, labels, padded_labels, tiles, config)
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

