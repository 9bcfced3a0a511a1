"""Label propagation for semi-supervised video object segmentation (DAVIS), scored with J and F.

The unified formulation of CRW / "Implementation factors matter": per-frame feature
maps, L2-normalised over channels. For target frame t the context is frame 0 (the
ground-truth labels, one-hot, area-downsampled to the feature grid) plus the soft
predictions of the n previous frames. Each target position is compared by cosine
with every position of frame 0 and with the positions of the previous frames within
Euclidean grid distance r; the top k affinities over all context frames together are
softmaxed at temperature tau and average the context labels. The label map is
upsampled bilinearly to frame size and its argmax is the mask. Features are read one
video at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ProbeError
from ..masks import mask_files, read_label_mask, write_palette_mask
from ..metrics import davis_object_scores, share_estimate
from ..protocol import Task
from .base import ProbeOutcome, ProbeSpec
from .common import ProbeInput


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Config:
    context: int = 20
    topk: int = 10
    temperature: float = 0.07
    radius: float = 12
    boundary_threshold: float = 0.008

    def __post_init__(self) -> None:
        if isinstance(self.context, bool) or not isinstance(self.context, int) or self.context < 0:
            raise ValueError(f"context must be a non-negative integer, got {self.context!r}")
        if isinstance(self.topk, bool) or not isinstance(self.topk, int) or self.topk < 1:
            raise ValueError(f"topk must be a positive integer, got {self.topk!r}")
        if not (_positive(self.temperature) and _positive(self.radius) and _positive(self.boundary_threshold)
                and self.boundary_threshold < 1):
            raise ValueError("temperature and radius must be positive, boundary_threshold in (0, 1)")


def _grid_distance(rows: range, band: range, width: int, device: torch.device) -> torch.Tensor:
    """Euclidean grid distance between target positions (rows x width) and band positions (band x width)."""
    ty, tx = torch.meshgrid(torch.tensor(list(rows), device=device), torch.arange(width, device=device), indexing="ij")
    cy, cx = torch.meshgrid(torch.tensor(list(band), device=device), torch.arange(width, device=device), indexing="ij")
    dy = ty.reshape(-1, 1).float() - cy.reshape(1, -1).float()
    dx = tx.reshape(-1, 1).float() - cx.reshape(1, -1).float()
    return torch.sqrt(dy * dy + dx * dx)


def _topk_labels(affinity: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k highest affinities per row and the label vectors at those positions: (n, k), (n, k, C)."""
    top, index = affinity.topk(min(k, affinity.shape[1]), dim=1)
    return top, labels[index]


def propagate(features: torch.Tensor, first_labels: torch.Tensor, config: Config, rows_per_chunk: int = 8) -> torch.Tensor:
    """Soft label maps (T, h, w, C) at the feature grid, frame 0 = `first_labels` (h, w, C)."""
    t_count, h, w, d = features.shape
    feats = F.normalize(features.float(), dim=-1)
    labels = [first_labels.float()]
    radius = int(np.floor(config.radius))
    for t in range(1, t_count):
        previous = list(range(max(1, t - config.context), t))
        out = torch.empty(h, w, first_labels.shape[-1], device=features.device)
        for y0 in range(0, h, rows_per_chunk):
            rows = range(y0, min(h, y0 + rows_per_chunk))
            query = feats[t, rows.start:rows.stop].reshape(-1, d)
            # top-k of each context frame, then top-k of their union: the joint top-k, without
            # materialising the affinity to every context position at once
            candidates = [_topk_labels(query @ feats[0].reshape(-1, d).T, labels[0].reshape(-1, labels[0].shape[-1]),
                                       config.topk)]
            if previous:
                band = range(max(0, rows.start - radius), min(h, rows.stop + radius))
                far = _grid_distance(rows, band, w, features.device) > config.radius
                for p in previous:
                    local = (query @ feats[p, band.start:band.stop].reshape(-1, d).T).masked_fill_(far, -torch.inf)
                    context = labels[p][band.start:band.stop].reshape(-1, labels[p].shape[-1])
                    candidates.append(_topk_labels(local, context, config.topk))
            affinity = torch.cat([c[0] for c in candidates], 1)
            context = torch.cat([c[1] for c in candidates], 1)
            top, index = affinity.topk(min(config.topk, affinity.shape[1]), dim=1)
            weights = torch.softmax(top / config.temperature, dim=1)
            chosen = torch.gather(context, 1, index.unsqueeze(-1).expand(-1, -1, context.shape[-1]))
            out[rows.start:rows.stop] = (weights.unsqueeze(-1) * chosen).sum(1).view(len(rows), w, -1)
        labels.append(out)
    return torch.stack(labels)


def first_labels(mask: np.ndarray, n_objects: int, frame_size: tuple[int, int], grid: tuple[int, int],
                 stride: int) -> torch.Tensor:
    """(h, w, K + 1) label distribution of the first annotation, averaged over each feature cell.

    The annotation is first brought to the size of the frames the model saw (area averaging)."""
    onehot = F.one_hot(torch.from_numpy(mask.astype(np.int64)).clamp_(max=n_objects), n_objects + 1)
    onehot = onehot.permute(2, 0, 1).float()[None]
    if tuple(onehot.shape[-2:]) != tuple(frame_size):
        onehot = F.interpolate(onehot, size=frame_size, mode="area")
    covered = onehot[..., :grid[0] * stride, :grid[1] * stride]
    return F.adaptive_avg_pool2d(covered, grid)[0].permute(1, 2, 0)


def to_masks(soft: torch.Tensor, frame_size: tuple[int, int], stride: int, out_size: tuple[int, int]) -> np.ndarray:
    """Upsample (T, h, w, C) label maps bilinearly to the frame (cells beyond the grid are background),
    then to the annotation size, and take the argmax: (T, H, W) object ids."""
    maps = soft.permute(0, 3, 1, 2)
    covered = (min(soft.shape[1] * stride, frame_size[0]), min(soft.shape[2] * stride, frame_size[1]))
    up = F.interpolate(maps, size=(soft.shape[1] * stride, soft.shape[2] * stride), mode="bilinear", align_corners=False)
    full = torch.zeros(maps.shape[0], maps.shape[1], *frame_size)
    full[:, 0] = 1.0
    full[..., :covered[0], :covered[1]] = up[..., :covered[0], :covered[1]]
    if tuple(out_size) != tuple(frame_size):
        full = F.interpolate(full, size=out_size, mode="bilinear", align_corners=False)
    return full.argmax(1).to(torch.uint8).numpy()


def run(data: ProbeInput, config: Config, device: str = "cpu", save_masks: str | Path | None = None) -> ProbeOutcome:
    """Propagate the first-frame masks of every test video and score J, F and J&F per object."""
    items = data.items("test")
    objects, per_sequence = [], {}
    for item in items:
        if item.masks is None:
            raise ProbeError(f"video '{item.id}' has no annotation folder in the manifest")
        truth = np.stack([read_label_mask(p) for p in mask_files(item.masks)])
        maps = torch.from_numpy(data.file.dense(item.id)).to(device)
        stride, frame_size = data.file.dense_geometry(item.id)
        if truth.shape[0] != maps.shape[0]:
            raise ProbeError(f"video '{item.id}': {truth.shape[0]} annotations but {maps.shape[0]} feature maps")
        if truth.shape[0] < 3:
            raise ProbeError(f"video '{item.id}': needs at least 3 frames (the first and last are not scored)")
        n_objects = int(truth[0].max())
        first = first_labels(truth[0], n_objects, frame_size, tuple(maps.shape[1:3]), stride).to(device)
        predicted = to_masks(propagate(maps, first, config).cpu(), frame_size, stride, truth.shape[1:])
        predicted[0] = truth[0]
        if save_masks is not None:
            for path, ids in zip(mask_files(item.masks), predicted, strict=True):
                write_palette_mask(Path(save_masks) / item.id / path.name, ids)
        per_sequence[item.id] = {}
        for obj in range(1, n_objects + 1):
            scores = davis_object_scores(truth, predicted, obj)
            per_sequence[item.id][str(obj)] = {k: scores[k] for k in ("J", "F", "J_recall", "F_recall")}
            objects.append((f"{item.id}_{obj}", scores))
    j = np.array([s["J"] for _, s in objects])
    f = np.array([s["F"] for _, s in objects])
    metrics = {"J&F": share_estimate((j + f) / 2), "J": share_estimate(j), "F": share_estimate(f),
               "J_recall": share_estimate([s["J_recall"] for _, s in objects]),
               "F_recall": share_estimate([s["F_recall"] for _, s in objects])}
    return ProbeOutcome("J&F", metrics, {"objects": len(objects), "sequences": len(per_sequence),
                                         "per_sequence": per_sequence},
                        {"ids": [o for o, _ in objects], "value": ((j + f) / 2).tolist(), "J": j.tolist(), "F": f.tolist()})


SPEC = ProbeSpec("labelprop", frozenset({Task.LABEL_PROPAGATION}), Config, run, frozenset({"save_masks"}))
