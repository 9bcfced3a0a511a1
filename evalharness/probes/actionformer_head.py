"""Temporal action localization head: ActionFormer's local-attention feature pyramid with per-position classification
and boundary regression, decoded with multiclass Gaussian Soft-NMS.

As `happyharrycn/actionformer_release` (libs/modeling, libs/utils/nms.py): masked convolutions
embed the features, pre-norm transformer blocks with depthwise-convolution projections attend
within a local window (stride 2 between pyramid levels, max-pooled skip, drop path with a learned
per-channel scale from 1e-4), an identity neck with LayerNorm, and two shared 3-layer heads. The
settings, and where this differs from the reference, are in `localization_config.Config`.
Segments are in feature-index units: a position t of level l stands at t * 2^l.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..progress import bar
from .localization_config import Config

Video = tuple[np.ndarray, np.ndarray, np.ndarray]
VideoDetections = tuple[np.ndarray, np.ndarray, np.ndarray]
Score = Callable[[list[VideoDetections], list[tuple[np.ndarray, np.ndarray]]], float]
ETA_MIN = 1e-8  # the cosine schedule's floor (LinearWarmupCosineAnnealingLR's eta_min)
LOSS_NORM_MOMENTUM = 0.9
MAX_TRIALS = 200  # truncate_feats' tries for a window that keeps an action


class Norm(nn.Module):
    """LayerNorm over the channels of (B, C, T)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, 1e-5).transpose(1, 2)


class MaskedConv(nn.Module):
    """A 'same' Conv1d (odd kernel) whose output is zero at masked positions; stride s keeps every s-th mask entry."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = True):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        if bias:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_mask = mask[:, :, ::self.stride]
        return self.conv(x) * out_mask, out_mask


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, C, T) -> (B, heads, T, C / heads)."""
    b, c, t = x.shape
    return x.reshape(b, heads, c // heads, t).transpose(2, 3)


def _local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor, half: int) -> torch.Tensor:
    """Each query attends to the valid keys within `half` positions of it: (B, H, T, c) each, keys (B, T) bool."""
    width = 2 * half + 1
    kw = F.pad(k, (0, 0, half, half)).unfold(2, width, 1)
    vw = F.pad(v, (0, 0, half, half)).unfold(2, width, 1)
    valid = F.pad(keys.float(), (half, half)).unfold(1, width, 1) > 0
    scores = torch.einsum("bhtc,bhtcw->bhtw", q, kw).masked_fill(~valid[:, None], torch.finfo(q.dtype).min)
    return torch.einsum("bhtw,bhtcw->bhtc", scores.softmax(-1), vw)


def _global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each query attends to every valid key."""
    scores = (q @ k.transpose(-2, -1)).masked_fill(~keys[:, None, None], torch.finfo(q.dtype).min)
    return scores.softmax(-1) @ v


class Attention(nn.Module):
    """ActionFormer's (Local)MaskedMHCA: depthwise-conv (strided) q, k, v with LayerNorm, then multi-head attention,
    local within `window` positions or global (window 0), and an output projection."""

    def __init__(self, dim: int, heads: int, window: int, stride: int, dropout: float):
        super().__init__()
        kernel = stride + 1 if stride > 1 else 3
        self.heads, self.half = heads, window // 2
        self.convs = nn.ModuleList(MaskedConv(dim, dim, kernel, stride, groups=dim, bias=False) for _ in range(3))
        self.norms = nn.ModuleList(Norm(dim) for _ in range(3))
        self.projections = nn.ModuleList(nn.Conv1d(dim, dim, 1) for _ in range(3))
        self.proj, self.drop = nn.Conv1d(dim, dim, 1), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for conv, norm, projection in zip(self.convs, self.norms, self.projections, strict=True):
            y, out_mask = conv(x, mask)
            parts.append(_heads(projection(norm(y) * out_mask), self.heads))
        q, k, v = parts
        q = q * q.shape[-1] ** -0.5
        keys = out_mask[:, 0]
        out = _local_attention(q, k, v, keys, self.half) if self.half else _global_attention(q, k, v, keys)
        b, h, t, c = out.shape
        return self.drop(self.proj(out.transpose(2, 3).reshape(b, h * c, t))) * out_mask, out_mask


class ScaledDropPath(nn.Module):
    """Drop path per sample after a learned per-channel scale starting at 1e-4 (AffineDropPath)."""

    def __init__(self, dim: int, p: float):
        super().__init__()
        self.scale, self.p = nn.Parameter(1e-4 * torch.ones(1, dim, 1)), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale * x
        if not self.training or self.p == 0:
            return x
        keep = (1 - self.p + torch.rand(x.shape[0], 1, 1, dtype=x.dtype, device=x.device)).floor()
        return x / (1 - self.p) * keep


class Block(nn.Module):
    """Pre-norm transformer block; stride 2 halves the length (max-pooled skip, strided attention)."""

    def __init__(self, dim: int, heads: int, window: int, stride: int, dropout: float, droppath: float):
        super().__init__()
        self.stride = stride
        self.norm1, self.norm2 = Norm(dim), Norm(dim)
        self.attn = Attention(dim, heads, window, stride, dropout)
        self.mlp = nn.Sequential(nn.Conv1d(dim, 4 * dim, 1), nn.GELU(), nn.Dropout(dropout), nn.Conv1d(4 * dim, dim, 1),
                                 nn.Dropout(dropout))
        self.path1 = ScaledDropPath(dim, droppath) if droppath > 0 else nn.Identity()
        self.path2 = ScaledDropPath(dim, droppath) if droppath > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_mask = self.attn(self.norm1(x) * mask, mask)
        skip = x
        if self.stride > 1:
            pooled = F.max_pool1d(x.masked_fill(~mask, float("-inf")), self.stride + 1, self.stride, (self.stride + 1) // 2)
            skip = pooled.masked_fill(~out_mask, 0.0)
        out = skip * out_mask + self.path1(out)
        return out + self.path2(self.mlp(self.norm2(out) * out_mask) * out_mask), out_mask


class Head(nn.Module):
    """Two masked conv + LayerNorm + ReLU layers and a masked conv to `out` channels, shared by every level."""

    def __init__(self, dim: int, out: int, layers: int = 3):
        super().__init__()
        self.convs = nn.ModuleList(MaskedConv(dim, dim, 3, bias=False) for _ in range(layers - 1))
        self.norms = nn.ModuleList(Norm(dim) for _ in range(layers - 1))
        self.last = MaskedConv(dim, out, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x, mask)[0]) * mask)
        return self.last(x, mask)[0]


def sinusoid(length: int, dim: int) -> torch.Tensor:
    """The (1, dim, length) sine / cosine position table of the Transformer."""
    position = np.arange(length)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None]
    position[:, 0::2], position[:, 1::2] = np.sin(position[:, 0::2]), np.cos(position[:, 1::2])
    return torch.tensor(position, dtype=torch.float32).T[None]


class ActionFormer(nn.Module):
    """Features (B, D, T) and mask (B, 1, T) -> per level: class logits (B, T_l, K), boundary distances in strides
    (B, T_l, 2), mask (B, T_l)."""

    def __init__(self, input_dim: int, classes: int, config: Config):
        super().__init__()
        dim, c = config.dim, config
        self.max_len, self.use_abs_pe = c.max_seq_len, c.use_abs_pe
        self.embed = nn.ModuleList(MaskedConv(input_dim if i == 0 else dim, dim, 3, bias=False)
                                   for i in range(c.embed_convs))
        self.embed_norms = nn.ModuleList(Norm(dim) for _ in range(c.embed_convs))
        self.register_buffer("pe", sinusoid(c.max_seq_len, dim) / dim ** 0.5, persistent=False)
        self.stem = nn.ModuleList(Block(dim, c.heads, c.windows[0], 1, c.dropout, c.droppath)
                                  for _ in range(c.stem_blocks))
        self.branch = nn.ModuleList(Block(dim, c.heads, c.windows[level], 2, c.dropout, c.droppath)
                                    for level in range(1, c.levels))
        for module in [*self.embed.modules(), *self.stem.modules(), *self.branch.modules()]:
            if isinstance(module, nn.Conv1d) and module.bias is not None:
                nn.init.zeros_(module.bias)
        self.neck = nn.ModuleList(Norm(dim) for _ in range(c.levels))
        self.cls_head, self.reg_head = Head(dim, classes), Head(dim, 2)
        nn.init.constant_(self.cls_head.last.conv.bias, -math.log((1 - c.cls_prior_prob) / c.cls_prior_prob))
        self.scales = nn.Parameter(torch.ones(c.levels))

    def _position(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = x.shape[2]
        pe = self.pe
        if not self.training and length >= self.max_len:
            pe = F.interpolate(pe, length, mode="linear", align_corners=False)
        return x + pe[:, :, :length] * mask

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                      list[torch.Tensor]]:
        x = x * mask
        for conv, norm in zip(self.embed, self.embed_norms, strict=True):
            x = F.relu(norm(conv(x, mask)[0]) * mask)
        if self.use_abs_pe:
            x = self._position(x, mask)
        for block in self.stem:
            x, mask = block(x, mask)
        feats, masks = [x], [mask]
        for block in self.branch:
            x, mask = block(x, mask)
            feats.append(x)
            masks.append(mask)
        logits, offsets = [], []
        for level, (feat, m) in enumerate(zip(feats, masks, strict=True)):
            feat = self.neck[level](feat) * m
            logits.append(self.cls_head(feat, m).transpose(1, 2))
            offsets.append(F.relu(self.scales[level] * self.reg_head(feat, m)).transpose(1, 2))
        return logits, offsets, [m[:, 0] for m in masks]


def points(lengths: Sequence[int], config: Config, device: torch.device) -> torch.Tensor:
    """(sum of T_l, 4): each level's positions t * 2^l, its regression range (low, high) and its stride."""
    rows = []
    for level, length in enumerate(lengths):
        stride = 2 ** level
        low, high = config.regression_ranges[level]
        where = torch.arange(length, dtype=torch.float32, device=device) * stride
        rows.append(torch.stack([where, torch.full_like(where, low), torch.full_like(where, high),
                                 torch.full_like(where, stride)], 1))
    return torch.cat(rows)


def assign(pts: torch.Tensor, segments: torch.Tensor, labels: torch.Tensor, classes: int,
           radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ActionFormer's targets: a position is positive for the shortest action whose centre region (radius x stride,
    within the action) holds it and whose longer boundary distance lies in its level's range (ties within 1e-3 of
    that length all count); class targets (N, K) and distances to both boundaries in strides (N, 2)."""
    n = len(pts)
    if len(segments) == 0:
        return pts.new_zeros(n, classes), pts.new_zeros(n, 2)
    t, stride = pts[:, 0, None], pts[:, 3, None]
    left, right = t - segments[None, :, 0], segments[None, :, 1] - t
    centre = 0.5 * (segments[None, :, 0] + segments[None, :, 1])
    inside = torch.minimum(t - torch.maximum(centre - stride * radius, segments[None, :, 0]),
                           torch.minimum(centre + stride * radius, segments[None, :, 1]) - t) > 0
    farthest = torch.maximum(left, right)
    in_range = (farthest >= pts[:, 1, None]) & (farthest <= pts[:, 2, None])
    lengths = (segments[:, 1] - segments[:, 0])[None].expand(n, -1).masked_fill(~(inside & in_range), float("inf"))
    shortest, which = lengths.min(1)
    chosen = ((lengths <= shortest[:, None] + 1e-3) & torch.isfinite(lengths)).float()
    cls_targets = (chosen @ F.one_hot(labels, classes).float()).clamp(0, 1)
    reg = torch.stack([left, right], -1)[torch.arange(n, device=pts.device), which] / stride
    return cls_targets, reg


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """RetinaNet's focal loss per element, summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    return (ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))).sum()


def diou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - IoU + (centre distance / enclosing length)^2 of segments given as distances (left, right) from one point,
    summed (ctr_diou_loss_1d)."""
    lp, rp, lg, rg = pred[:, 0], pred[:, 1], target[:, 0], target[:, 1]
    inter = torch.minimum(lp, lg) + torch.minimum(rp, rg)
    union = lp + rp + lg + rg - inter
    enclosing = torch.maximum(lp, lg) + torch.maximum(rp, rg)
    rho = 0.5 * (rp - lp - rg + lg)
    return (1 - inter / union.clamp(min=eps) + (rho / enclosing.clamp(min=eps)) ** 2).sum()


def soft_nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, sigma: float, min_score: float,
             max_num: int) -> VideoDetections:
    """Multiclass Gaussian Soft-NMS (nms_1d_cpu.softnms, method 2, per class as batched_nms): repeatedly keep the
    highest score, multiply the others' by exp(-IoU^2 / sigma), drop those under min_score; at most max_num per class,
    then the best max_num of all, by score."""
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for c in np.unique(labels):
        segs, sc = _soft_nms_class(segments[labels == c], scores[labels == c], sigma, min_score, max_num)
        kept.append((segs, sc, np.full(len(sc), c, dtype=np.int64)))
    if not kept:
        return np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=np.int64)
    segs, sc, lab = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    order = np.argsort(-sc, kind="stable")[:max_num]
    return segs[order], sc[order], lab[order]


def _soft_nms_class(segments: np.ndarray, scores: np.ndarray, sigma: float, min_score: float,
                    max_num: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS of one class, in the order kept, with the decayed scores; it stops at `max_num` picks, which
    is exact (scores only decay, so later picks could never rank above these)."""
    segs, sc = np.asarray(segments, dtype=np.float64), np.asarray(scores, dtype=np.float64).copy()
    alive, order, kept = np.arange(len(sc)), [], []
    while alive.size and len(order) < max_num:
        best = alive[np.argmax(sc[alive])]
        order.append(best)
        kept.append(sc[best])
        alive = alive[alive != best]
        inter = np.clip(np.minimum(segs[best, 1], segs[alive, 1]) - np.maximum(segs[best, 0], segs[alive, 0]), 0, None)
        union = (segs[best, 1] - segs[best, 0]) + (segs[alive, 1] - segs[alive, 0]) - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        sc[alive] *= np.exp(-(iou ** 2) / sigma)
        alive = alive[sc[alive] >= min_score]
    return segs[np.array(order, dtype=np.int64)].reshape(-1, 2), np.array(kept)


def _resize(x: np.ndarray, length: int) -> np.ndarray:
    """Features (T, D) linearly resized to (length, D) (F.interpolate, align_corners False)."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).T[None]
    return F.interpolate(t, length, mode="linear", align_corners=False)[0].T.numpy()


def truncate(x: np.ndarray, segments: np.ndarray, labels: np.ndarray, config: Config, rng: np.random.Generator,
             offset: float = 0.0) -> Video:
    """truncate_feats: a sequence over max_seq_len is cut at a random window that keeps at least one action by
    trunc_thresh (of 200 tries, else the last), a shorter one at a random window of crop_ratio of its length; actions
    are clipped to the window widened by `offset` on both sides (the reference's feat_offset), those under
    trunc_thresh of their length dropped."""
    length = len(x)
    window = config.max_seq_len
    if length <= window:
        low, high = config.crop_ratio
        window = int(rng.integers(max(round(low * length), 1), min(round(high * length), length) + 1))
        if window == length:
            return x, segments, labels
    for _ in range(MAX_TRIALS):
        start = int(rng.integers(0, length - window + 1))
        left = np.maximum(start - offset, segments[:, 0])
        right = np.minimum(start + window + offset, segments[:, 1])
        keep = np.clip(right - left, 0, None) / (segments[:, 1] - segments[:, 0]) >= config.trunc_thresh
        if keep.any() or not len(segments):
            break
    return (x[start:start + window], np.stack([left[keep], right[keep]], 1) - start, labels[keep])


def _training_view(video: Video, config: Config, rng: np.random.Generator, offset: float) -> Video:
    """What one training step sees of a video: resized (if the config says so), then truncated."""
    x, segs, labels = video
    segs = np.asarray(segs, dtype=np.float64).reshape(-1, 2)
    if config.resize:
        segs = segs * config.max_seq_len / len(x)
        x = _resize(x, config.max_seq_len)
    return truncate(np.asarray(x, dtype=np.float32), segs, np.asarray(labels, dtype=np.int64), config, rng, offset)


def _padded(xs: list[np.ndarray], length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (B, D, length) zero-padded and their mask (B, 1, length)."""
    feats = torch.zeros(len(xs), xs[0].shape[1], length)
    mask = torch.zeros(len(xs), 1, length, dtype=torch.bool)
    for i, x in enumerate(xs):
        feats[i, :, :len(x)] = torch.from_numpy(np.asarray(x, dtype=np.float32)).T
        mask[i, :, :len(x)] = True
    return feats.to(device), mask.to(device)


def _loss(model: ActionFormer, batch: list[Video], classes: int, config: Config, normaliser: float,
          device: torch.device) -> tuple[torch.Tensor, float]:
    """Focal + loss_weight x DIoU over a batch padded to max_seq_len, and the updated loss normaliser."""
    feats, mask = _padded([x for x, _, _ in batch], config.max_seq_len, device)
    logits, offsets, masks = model(feats, mask)
    pts = points([m.shape[1] for m in masks], config, device)
    targets = [assign(pts, torch.as_tensor(s, dtype=torch.float32, device=device),
                      torch.as_tensor(lab, dtype=torch.int64, device=device), classes, config.center_sample_radius)
               for _, s, lab in batch]
    valid = torch.cat(masks, 1)
    gt_cls = torch.stack([c for c, _ in targets])
    positive = (gt_cls.sum(-1) > 0) & valid
    count = int(positive.sum())
    normaliser = LOSS_NORM_MOMENTUM * normaliser + (1 - LOSS_NORM_MOMENTUM) * max(count, 1)
    smoothing = config.label_smoothing
    target = gt_cls[valid] * (1 - smoothing) + smoothing / (classes + 1)
    cls_loss = sigmoid_focal_loss(torch.cat(logits, 1)[valid], target) / normaliser
    pred = torch.cat(offsets, 1)[positive]
    reg_loss = diou_loss(pred, torch.stack([r for _, r in targets])[positive]) / normaliser if count else 0 * pred.sum()
    return cls_loss + config.loss_weight * reg_loss, normaliser


def _detections(model: ActionFormer, x: np.ndarray, classes: int, config: Config, device: torch.device) -> VideoDetections:
    """One whole video through the model (padded to max_seq_len, or longer to a multiple of the coarsest stride),
    decoded per level, then Soft-NMS; segments in the video's own index units, clamped to [0, T]."""
    length = len(x)
    if config.resize:
        x = _resize(x, config.max_seq_len)
    padded = max(config.max_seq_len, -(-len(x) // config.divisor) * config.divisor)
    feats, mask = _padded([x], padded, device)
    with torch.no_grad():
        logits, offsets, masks = model(feats, mask)
    segs, scores, labels = [], [], []
    for level, (cls, off, m) in enumerate(zip(logits, offsets, masks, strict=True)):
        prob = (torch.sigmoid(cls[0]) * m[0, :, None]).flatten()
        index = torch.nonzero(prob > config.pre_nms_thresh)[:, 0]
        top = prob[index].argsort(descending=True, stable=True)[:config.pre_nms_topk]
        index = index[top]
        where, label = index // classes, index % classes
        stride = 2 ** level
        seg = torch.stack([where * stride - off[0, where, 0] * stride, where * stride + off[0, where, 1] * stride], 1)
        keep = seg[:, 1] - seg[:, 0] > config.duration_thresh
        segs.append(seg[keep])
        scores.append(prob[index][keep])
        labels.append(label[keep])
    segs_np, scores_np, labels_np = (torch.cat(part).cpu().numpy() for part in (segs, scores, labels))
    segs_np, scores_np, labels_np = soft_nms(segs_np.astype(np.float64), scores_np.astype(np.float64), labels_np,
                                             config.nms_sigma, config.min_score, config.max_seg_num)
    if config.resize:
        segs_np = segs_np * length / config.max_seq_len
    return np.clip(segs_np, 0, length), scores_np, labels_np.astype(np.int64)


def predict_localization(model: ActionFormer, sequences: Sequence[np.ndarray], config: Config,
                         device: str = "cpu") -> list[VideoDetections]:
    """Per (T, D) sequence, the detections after Soft-NMS: segments (K, 2) in feature-index units, scores (K,),
    labels (K,), best first."""
    model.eval()
    return [_detections(model, x, model.cls_head.last.conv.out_channels, config, torch.device(device))
            for x in sequences]


def _optimizer(model: nn.Module, config: Config) -> torch.optim.AdamW:
    """AdamW with weight decay on convolution weights only (not biases, norms, scales), as make_optimizer."""
    decayed = [m.weight for m in model.modules() if isinstance(m, nn.Conv1d)]
    rest = [p for p in model.parameters() if all(p is not q for q in decayed)]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.lr)


def learning_rate(step: int, warmup: int, total: int, lr: float) -> float:
    """LinearWarmupCosineAnnealingLR at 0-based `step`: from 0 linearly to lr over `warmup` steps, then cosine to
    1e-8 at `total`."""
    if step < warmup:
        return lr * step / max(1, warmup - 1)
    return ETA_MIN + 0.5 * (lr - ETA_MIN) * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            e.copy_(e * decay + (1 - decay) * m if e.is_floating_point() else m)


def _check(videos: Sequence[Video], classes: int, name: str) -> None:
    if not videos:
        raise ValueError(f"{name} holds no videos")
    for x, segs, labels in videos:
        segs, labels = np.asarray(segs).reshape(-1, 2), np.asarray(labels)
        if x.ndim != 2 or len(x) == 0 or len(labels) != len(segs):
            raise ValueError(f"{name}: each video needs features (T, D) with T > 0 and as many labels as segments")
        if len(segs) and (not np.all(segs[:, 1] > segs[:, 0]) or labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{name}: segments must end after they start and labels lie in [0, {classes})")


@dataclass
class _Training:
    """One fit's moving parts: the model, its weights' EMA, the optimizer, the loss normaliser and the step count."""

    model: ActionFormer
    ema: ActionFormer
    optimizer: torch.optim.AdamW
    config: Config
    classes: int
    device: torch.device
    warmup: int
    total: int
    normaliser: float
    step: int = 0

    def update(self, batch: list[Video]) -> None:
        """One optimizer step on a batch (scheduled learning rate, clipped gradients), then the EMA."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.warmup, self.total, self.config.lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss, self.normaliser = _loss(self.model, batch, self.classes, self.config, self.normaliser, self.device)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged: non-finite loss at step {self.step + 1}")
        loss.backward()
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.optimizer.step()
        _update_ema(self.ema, self.model, self.config.ema_decay)
        self.step += 1


def _validation_score(model: ActionFormer, val: Sequence[Video], config: Config, score: Score, device: str) -> float:
    value = float(score(predict_localization(model, [x for x, _, _ in val], config, device),
                        [(np.asarray(s).reshape(-1, 2), np.asarray(lab)) for _, s, lab in val]))
    if not np.isfinite(value):
        raise ValueError(f"the validation score is not finite: {value}")
    return value


def fit_localization(train: Sequence[Video], val: Sequence[Video], num_classes: int, config: Config, seed: int,
                     score: Score, device: str = "cpu", quiet: bool = False,
                     offset: float = 0.0) -> tuple[ActionFormer, int, list[float]]:
    """Train on `train` (features (T, D), segments (S, 2) in feature-index units, labels (S,)) and keep the epoch
    (1-based, warm-up included) whose EMA weights score best on `val` by `score(detections, [(segments, labels)])`
    (ties: the earliest); returns that model, the epoch and the score per epoch. `offset`: how far, in feature
    units, a feature's frames reach past its index (0.5 x frames per feature / stride, the reference's feat_offset),
    used when cutting windows."""
    _check(train, num_classes, "train")
    _check(val, num_classes, "val")
    torch.manual_seed(seed)
    where = torch.device(device)
    model = ActionFormer(train[0][0].shape[1], num_classes, config).to(where)
    size = config.batch_size
    per_epoch = max(1, len(train) // size)  # the reference drops the last partial batch
    epochs = config.epochs + config.warmup_epochs
    training = _Training(model, copy.deepcopy(model).eval(), _optimizer(model, config), config, num_classes, where,
                         config.warmup_epochs * per_epoch, epochs * per_epoch, config.init_loss_norm)
    rng = np.random.default_rng(seed)
    curve, best, best_state = [], -np.inf, None
    with bar(epochs, "localization head", "epoch", quiet=quiet) as progress:
        for _ in range(epochs):
            model.train()
            order = rng.permutation(len(train))
            for b in range(per_epoch):
                training.update([_training_view(train[i], config, rng, offset) for i in order[b * size:(b + 1) * size]])
            curve.append(_validation_score(training.ema, val, config, score, device))
            if curve[-1] > best:
                best, best_state = curve[-1], copy.deepcopy(training.ema.state_dict())
            progress.update(1)
    training.ema.load_state_dict(best_state)
    return training.ema.eval(), curve.index(best) + 1, curve
