"""Label propagation for semi-supervised video object segmentation (DAVIS), scored with J and F.

Per-frame feature maps, L2-normalised over channels. The labels of frame 0 (its annotation brought to the feature
grid) and the soft label maps predicted for earlier frames propagate to each target position through its top-k
cosine affinities to the positions of the context frames, softmaxed at a temperature; the label map is upsampled
and its argmax is the mask. Two presets are their reference code's propagation: `crw` (Jabri et al. 2020,
ajabri/videowalk code/test.py as its README runs it for 67.6 J&F) and `dino` (Caron et al. 2021,
eval_video_segmentation.py); the tests compare masks with line-by-line copies of both. Every setting the two differ
in is a field of `Config`, so the probe hash covers it. Features are read one video at a time; affinities are computed
for tiles of 8 x 8 target positions against the patch of context positions their windows reach (frame 0 searched whole
against all of it), a tile row at a time, in blocks of consecutive context frames, each reduced to its top k at once;
the top k of the joint context is merged from the blocks'. The context frames are kept as column bands in a ring, so
that each patch is read in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
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

# the most affinities one product writes, 32 MB in float32 (of 8/16/32/64/128/512 MB, fastest on a 2-core AMD EPYC with
# 32 MB of L3: the top-k pass reads the block while it is still in the cache)
_BLOCK_ELEMENTS = 1 << 23
# target positions are taken in tiles of _TILE x _TILE, each against the context positions its windows can reach
_TILE = 8
# with keep_ties, candidates kept per block beyond the k-th for the ties at it (rows with more are recomputed from the
# whole block; 2-4 were fastest on real DAVIS frames, 0 forces that for every row)
_TIE_ROOM = 4


def _context(t: int, config: Config) -> tuple[range, int, int]:
    """The context of target frame t: the previous frames (windowed, each counting once in the top-k), how many times
    frame 0 counts windowed and how many times searched whole. Frame 0 once, and with pad_first as many more windowed
    copies of it as previous frames are missing (CRW's padded video gives target t <= context that many)."""
    previous = range(max(1, t - config.context), t)
    pads = config.context - len(previous) if config.pad_first else 0
    if config.restrict_first:
        return previous, 1 + pads, 0
    return previous, pads, 1


def _window(dy: torch.Tensor, dx: torch.Tensor, config: Config) -> torch.Tensor:
    """Whether a target position may use the context position at grid offset (dy, dx) from it."""
    if config.window == "disc":
        return (dy * dy + dx * dx).float() ** 0.5 < config.radius
    return (dy.abs() <= config.radius) & (dx.abs() <= config.radius)


def _reach(config: Config, extent: int) -> int:
    """The largest offset along one axis of the grid that the window admits, at most `extent` (no position of a
    grid is further from another)."""
    limit = extent if config.radius > extent else math.ceil(config.radius)
    offsets = torch.arange(-limit, limit + 1)
    admitted = offsets[_window(offsets, torch.zeros_like(offsets), config)]
    return int(admitted.abs().max()) if len(admitted) else 0


class _Tiles:
    """The tiling of an h x w grid. A tile's patch is the tile and the window's reach around it (along each axis at
    most the grid's extent): every position its targets' windows can reach. Maps are kept as column bands (a tile
    column's patch columns, all rows, padded by the reach) so that each tile's patch is one contiguous block and a tile
    row's patches in consecutive frames are one strided batch for the product. Where a patch would be no smaller than
    the grid (`whole`), every tile's patch is the whole map instead, kept as it is."""

    def __init__(self, h: int, w: int, config: Config, device: torch.device, dtype: torch.dtype) -> None:
        self.h, self.w, self.config, self.device, self.dtype = h, w, config, device, dtype
        self.down, self.across = _reach(config, h - 1), _reach(config, w - 1)
        self.rows, self.cols = -(-h // _TILE), -(-w // _TILE)
        self.patch_rows, self.patch_cols = _TILE + 2 * self.down, _TILE + 2 * self.across
        self.whole = self.patch_rows * self.patch_cols >= h * w
        if self.whole:
            self.down = self.across = 0
            self.patch_rows, self.patch_cols = h, w
        self.group = self.patch_cols
        self.frames = max(1, _BLOCK_ELEMENTS // (self.cols * _TILE * _TILE * self.patch_rows * self.patch_cols))
        self.windowed = None if self.whole else self._bias(range(self.rows))

    def _bias(self, rows: range) -> torch.Tensor:
        """0 where a target position of the tiles in tile rows `rows` may use a position of its patch, -inf
        elsewhere: (len(rows) * cols, _TILE ** 2, patch positions)."""
        arange = partial(torch.arange, device=self.device)
        top = arange(self.rows)[rows.start:rows.stop, None, None] * _TILE
        left = arange(self.cols)[None, :, None] * _TILE
        ty, tx = top + arange(_TILE).repeat_interleave(_TILE), left + arange(_TILE).repeat(_TILE)
        sy = arange(self.patch_rows).repeat_interleave(self.patch_cols) - self.down
        sx = arange(self.patch_cols).repeat(self.patch_rows) - self.across
        if not self.whole:
            sy, sx = top + sy, left + sx
        inside = (sy >= 0) & (sy < self.h) & (sx >= 0) & (sx < self.w)
        allowed = _window(sy[..., None, :] - ty[..., None], sx[..., None, :] - tx[..., None], self.config)
        allowed &= inside[..., None, :]
        bias = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device).masked_fill_(~allowed, -torch.inf)
        return bias.reshape(-1, *bias.shape[2:])

    def bias(self, row: int) -> torch.Tensor:
        """0 where a target position of tile row `row` may use a position of its tile's patch, -inf elsewhere:
        (cols, _TILE ** 2, patch positions); computed on demand for whole maps, whose bias would be (h w)^2."""
        if self.windowed is None:
            return self._bias(range(row, row + 1))
        return self.windowed[row * self.cols:(row + 1) * self.cols]

    def bands(self, count: int, channels: int, like: torch.Tensor) -> torch.Tensor:
        """Room for the column bands of `count` maps: (count, cols, down + rows * _TILE + down, patch_cols, channels);
        for whole maps (count, 1, h, w, channels)."""
        if self.whole:
            return like.new_zeros(count, 1, self.h, self.w, channels)
        return like.new_zeros(count, self.cols, self.rows * _TILE + 2 * self.down, self.patch_cols, channels)

    def to_bands(self, grid: torch.Tensor, out: torch.Tensor) -> None:
        """Write one map (h, w, C) into `out` (one map's column bands), zero outside the grid."""
        if self.whole:
            out[0].copy_(grid)
            return
        padded = grid.new_zeros(out.shape[1], self.cols * _TILE + 2 * self.across, grid.shape[-1])
        padded[self.down:self.down + self.h, self.across:self.across + self.w] = grid
        row, col, channel = padded.stride()
        out.copy_(padded.as_strided(out.shape, (_TILE * col, row, col, channel)))

    def patches(self, bands: torch.Tensor, row: int) -> torch.Tensor:
        """The patches of tile row `row` in consecutive maps' bands, without copying: (F, cols, patch_rows *
        patch_cols, C); for whole maps (F, 1, h w, C), the same for every tile."""
        if self.whole:
            return bands.reshape(bands.shape[0], 1, self.h * self.w, bands.shape[-1])
        chosen = bands[:, :, row * _TILE:row * _TILE + self.patch_rows]
        return chosen.reshape(bands.shape[0], self.cols, self.patch_rows * self.patch_cols, bands.shape[-1])

    def targets(self, grid: torch.Tensor, row: int) -> torch.Tensor:
        """The target positions of tile row `row` of one map (h, w, C), zero past the grid's edges: (cols,
        _TILE ** 2, C)."""
        rows = grid[row * _TILE:(row + 1) * _TILE]
        padded = rows.new_zeros(_TILE, self.cols * _TILE, grid.shape[-1])
        padded[:len(rows), :self.w] = rows
        return padded.view(_TILE, self.cols, _TILE, -1).transpose(0, 1).reshape(self.cols, _TILE * _TILE, -1)

    def untile(self, tiles: torch.Tensor, row: int) -> torch.Tensor:
        """(cols, _TILE * _TILE, C) of tile row `row` -> its grid rows (at most _TILE, w, C)."""
        grid = tiles.reshape(self.cols, _TILE, _TILE, -1).transpose(0, 1).reshape(_TILE, self.cols * _TILE, -1)
        return grid[:self.h - row * _TILE, :self.w]


@dataclass
class _Bands:
    """Column bands of the maps propagation reads: the feature and label maps of the previous frames in a ring
    (frame f in slot f % slots) and of frame 0."""

    features: torch.Tensor
    labels: torch.Tensor
    first_features: torch.Tensor
    first_labels: torch.Tensor


def _runs(frames: range, slots: int, most: int) -> list[slice]:
    """The ring slots of consecutive frames, as runs of consecutive slots at most `most` long."""
    runs, frame = [], frames.start
    while frame < frames.stop:
        start = frame % slots
        length = min(most, frames.stop - frame, slots - start)
        runs.append(slice(start, start + length))
        frame += length
    return runs


def _group_max(values: torch.Tensor, group: int) -> torch.Tensor:
    """The maxima of consecutive groups of `group` along the last axis: (..., m) -> (..., m // group). A reduction
    vectorises along its axis, so it suits long groups; short ones are max-pooled, which vectorises across them."""
    if group >= 64:
        return values.unflatten(-1, (-1, group)).amax(-1)
    pooled = F.max_pool1d(values.reshape(-1, 1, values.shape[-1]), group, group)
    return pooled.view(*values.shape[:-1], -1)


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
    maxima = _group_max(affinity, group).permute(1, 2, 0, 3).reshape(batch, n, -1)
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


@dataclass
class _Block:
    """One product's share of the targets' joint context: its top k (B, n, k) and where they are, its affinities
    (F, B, n, m; kept only where every affinity at least the k-th counts), the labels of its positions (F, B or 1,
    m, C) and how many times each of its frames counts."""

    values: torch.Tensor
    index: torch.Tensor
    affinity: torch.Tensor | None
    labels: torch.Tensor
    copies: int


def _block(affinity: torch.Tensor, labels: torch.Tensor, group: int, copies: int, config: Config) -> _Block:
    """A block of affinities (-inf where the window excludes a position) reduced to its top k at once, while they
    are still in the cache; where every affinity at least the k-th counts, _TIE_ROOM more, for ties."""
    values, index = _top(affinity, group, config.topk + (_TIE_ROOM if config.keep_ties else 0))
    return _Block(values, index, affinity if config.keep_ties else None, labels, copies)


def _tied_weights(block: _Block, least: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's sums of weights exp(a / T), those under `least` (B, n, 1) counting 0, and of weighted labels: (B, n,
    1), (B, n, C). From its top candidates, except in rows where even the last candidate counts (more may follow it):
    there from all of the block's affinities."""
    weights = torch.exp(block.values / temperature)
    weights.masked_fill_(weights < least, 0)
    total = weights.sum(-1, keepdim=True)
    weighted = (weights.unsqueeze(-2) @ _labels_at(block.labels, block.index)).squeeze(-2)
    frames, _, _, m = block.affinity.shape
    full = weights[..., -1] > 0
    if block.values.shape[-1] < frames * m and full.any():
        rows = full.nonzero(as_tuple=True)
        dense = torch.exp(block.affinity[:, rows[0], rows[1]] / temperature)
        dense.masked_fill_(dense < least[rows], 0)
        labels = block.labels[:, rows[0]] if block.labels.shape[1] > 1 else block.labels[:, 0, None]
        total[rows] = dense.sum(-1).sum(0)[:, None]
        weighted[rows] = (dense.unsqueeze(-2) @ labels).sum(0).squeeze(-2)
    return total, weighted


def _combine(blocks: list[_Block], config: Config) -> torch.Tensor:
    """Labels (B, n, C) of B x n target positions from their blocks. The top k of all blocks together, from each
    block's top k: exactly k softmaxed (CRW), or every affinity at least the k-th, weighted exp(a / T) / sum (DINO)."""
    values = torch.cat([block.values for block in blocks for _ in range(block.copies)], -1)
    k = min(config.topk, values.shape[-1])
    if config.keep_ties:
        least = torch.exp(values.topk(k, dim=-1).values[..., -1:] / config.temperature)
        sums = [_tied_weights(block, least, config.temperature) for block in blocks]
        total = sum(block.copies * part for block, (part, _) in zip(blocks, sums, strict=True))
        weighted = sum(block.copies * part for block, (_, part) in zip(blocks, sums, strict=True))
        return weighted / total
    picked = [_labels_at(block.labels, block.index) for block in blocks]
    labels = torch.cat([at for at, block in zip(picked, blocks, strict=True) for _ in range(block.copies)], -2)
    batch = values.shape[:-1]
    top, index = (values.reshape(-1, values.shape[-1]) / config.temperature).topk(k, dim=1)
    labels = labels.reshape(-1, *labels.shape[-2:])
    chosen = torch.gather(labels, 1, index.unsqueeze(-1).expand(-1, -1, labels.shape[-1]))
    return (torch.softmax(top, dim=1).unsqueeze(-1) * chosen).sum(1).reshape(*batch, -1)


def _windowed(query: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, row: int,
              tiles: _Tiles, copies: int, config: Config) -> _Block:
    """The block of the targets `query` (cols, _TILE ** 2, D) of tile row `row` (its window `bias`) against their
    patches in the bands of F consecutive frames with their labels' bands."""
    affinity = torch.matmul(query, tiles.patches(features, row).transpose(-1, -2))
    affinity += bias
    return _block(affinity, tiles.patches(labels, row), tiles.group, copies, config)


def _predict(t: int, feats: torch.Tensor, labels: torch.Tensor, bands: _Bands, tiles: _Tiles, config: Config) -> None:
    """Frame t's soft labels into `labels` and its bands into the ring, a tile row at a time: the previous frames
    against each tile's patch in blocks of consecutive ring slots, frame 0 windowed (counted `first` times) in
    another, frame 0 searched whole against all of it."""
    previous, first, whole = _context(t, config)
    slots = bands.features.shape[0]
    tiles.to_bands(feats[t], bands.features[t % slots])
    runs = _runs(previous, slots, tiles.frames)
    d, c = feats.shape[-1], labels.shape[-1]
    for row in range(tiles.rows):
        query, bias = tiles.targets(feats[t], row), tiles.bias(row)
        blocks = [_windowed(query, bias, bands.features[run], bands.labels[run], row, tiles, 1, config)
                  for run in runs]
        if first:
            blocks.append(_windowed(query, bias, bands.first_features, bands.first_labels, row, tiles, first, config))
        if whole:
            affinity = (query.reshape(-1, d) @ feats[0].reshape(-1, d).T).view(1, *query.shape[:2], -1)
            blocks.append(_block(affinity, labels[0].reshape(1, 1, -1, c), tiles.w, whole, config))
        grid = tiles.untile(_combine(blocks, config), row)
        labels[t, row * _TILE:row * _TILE + grid.shape[0]] = grid
    tiles.to_bands(labels[t], bands.labels[t % slots])


def propagate(features: torch.Tensor, first_labels: torch.Tensor, config: Config,
              done: Callable[[int], object] | None = None) -> torch.Tensor:
    """Soft label maps (T, h, w, C) at the feature grid, frame 0 = `first_labels` (h, w, C); each predicted map is
    context for the frames after it, soft, as both references feed it back. Computed in float32 (float64 features:
    in float64). `done(1)` is called after each predicted frame (a progress bar's update)."""
    t_count, h, w, d = features.shape
    c = first_labels.shape[-1]
    feats = F.normalize(features.to(torch.promote_types(features.dtype, torch.float32)), dim=-1)
    labels = torch.empty(t_count, h, w, c, dtype=feats.dtype, device=features.device)
    labels[0] = first_labels
    tiles = _Tiles(h, w, config, features.device, feats.dtype)
    slots = min(config.context + 1, t_count)
    bands = _Bands(tiles.bands(slots, d, feats), tiles.bands(slots, c, feats), tiles.bands(1, d, feats),
                   tiles.bands(1, c, feats))
    tiles.to_bands(feats[0], bands.first_features[0])
    tiles.to_bands(labels[0], bands.first_labels[0])
    for t in range(1, t_count):
        _predict(t, feats, labels, bands, tiles, config)
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

