"""The temporal action localization head's settings (ActionFormer) and the presets of its two reference configs,
apart from `actionformer_head.py` so that reading a card never loads torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .settings import as_floats, expand_preset, finite, preset_of, whole

EVALUATIONS = ("thumos14", "activitynet")  # which official tIoU thresholds the mAP averages over
RANGES = ((0.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0), (32.0, 64.0), (64.0, 10000.0))

# What both configs take from libs/core/config.py's DEFAULTS (backbone_arch (2, 2, 5), regression_range, n_head 4,
# dropout 0, droppath 0.1, cls_prior_prob 0.01, center_sample radius 1.5, warmup 5 epochs, pre_nms_thresh 0.001,
# iou_threshold 0.1, the loss normaliser's momentum 0.9) or state alike (trunc_thresh, crop_ratio, clip_grad_l2norm,
# pre_nms_topk, min_score), and train.py's EMA of the weights (decay 0.999).
_COMMON: dict = {"trunc_thresh": 0.5, "crop_ratio": (0.9, 1.0), "heads": 4, "embed_convs": 2, "stem_blocks": 2,
                 "regression_ranges": RANGES, "weight_decay": 0.05, "warmup_epochs": 5, "clip_grad": 1.0,
                 "cls_prior_prob": 0.01, "center_sample_radius": 1.5, "dropout": 0.0, "droppath": 0.1,
                 "ema_decay": 0.999, "pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "iou_threshold": 0.1,
                 "min_score": 0.001}

# thumos14: configs/thumos_i3d.yaml with multiclass_nms (no external classifier scores); activitynet:
# configs/anet_i3d.yaml (features resized to 192, abs. position encoding, global attention on the last level).
PRESETS: dict[str, dict] = {
    "thumos14": {**_COMMON, "evaluation": "thumos14", "max_seq_len": 2304, "resize": False, "dim": 512, "windows": (19,) * 6,
                 "use_abs_pe": False, "lr": 0.0001, "epochs": 30, "batch_size": 2, "init_loss_norm": 100.0,
                 "loss_weight": 1.0, "label_smoothing": 0.0, "max_seg_num": 200, "nms_sigma": 0.5,
                 "duration_thresh": 0.05},
    "activitynet": {**_COMMON, "evaluation": "activitynet", "max_seq_len": 192, "resize": True, "dim": 256,
                    "windows": (7, 7, 7, 7, 7, 0),
                    "use_abs_pe": True, "lr": 0.001, "epochs": 10, "batch_size": 16, "init_loss_norm": 200.0,
                    "loss_weight": 2.0, "label_smoothing": 0.1, "max_seg_num": 100, "nms_sigma": 0.75,
                    "duration_thresh": 0.001},
}

_FLOATS = ("trunc_thresh", "lr", "weight_decay", "clip_grad", "cls_prior_prob", "center_sample_radius", "dropout",
           "droppath", "ema_decay", "init_loss_norm", "loss_weight", "label_smoothing", "pre_nms_thresh",
           "iou_threshold", "min_score", "nms_sigma", "duration_thresh", "val_fraction")


def _tuples(value: object) -> object:
    """Lists (nested ones too) as tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class Config:
    """An anchor-free single-stage localization head as ActionFormer (source: github.com/happyharrycn/actionformer_release,
    `libs/modeling/{meta_archs,backbones,blocks,necks,losses}.py`, `libs/utils/nms.py`, `libs/datasets/data_utils.py`,
    `libs/core/config.py` and the presets' configs; defaults: the thumos14 preset).

    Sequences longer than `max_seq_len` are cut for training at a random window keeping at least one action by
    `trunc_thresh`, and shorter ones cropped to a random share in `crop_ratio` (`resize`: every sequence first
    linearly resized to `max_seq_len`, ActivityNet's force_upsampling); `embed_convs` masked convolutions to `dim`,
    `stem_blocks` transformer blocks, then one strided block per further pyramid level, each level's attention local
    within `windows[level]` positions (0: global), `heads` heads, dropout `dropout`, drop path `droppath`; on each
    level a 3-layer classification head (prior `cls_prior_prob`) and regression head for the distances to both
    boundaries; a position is positive for an action within `center_sample_radius` x stride of its centre whose
    longest distance lies in the level's `regression_ranges`; sigmoid focal loss + `loss_weight` x DIoU loss, both
    divided by an EMA (0.9) of the positives from `init_loss_norm`, `label_smoothing` on the class targets; AdamW
    (`lr`, `weight_decay` on conv weights only), linear warm-up for `warmup_epochs` then cosine over `epochs`,
    gradients clipped at `clip_grad`, an EMA of the weights (`ema_decay`) evaluated. Inference runs each whole
    sequence (padded, as the reference); per level the scores above `pre_nms_thresh`, at most `pre_nms_topk`,
    segments longer than `duration_thresh`; Gaussian Soft-NMS per class (score x exp(-IoU^2 / `nms_sigma`), dropped
    under `min_score`), at most `max_seg_num` a video.

    Differences from the reference: the checkpoint is the epoch whose EMA weights score best on validation videos
    carved from train, by the score the caller passes (the reference keeps its last epoch and evaluates on the
    reported split); NMS is always per class (the reference's ActivityNet config runs class-agnostic proposals fused
    with an external video classifier's scores, and THUMOS14's shipped config fuses external scores too; its
    multiclass_nms option is the setting used here), so `iou_threshold` and seg voting play no part (Gaussian
    Soft-NMS ignores the threshold); one `dim` for the embedding, neck and heads (both configs set them equal);
    padded positions are zeroed after every normalisation and ignored by max-pooling, so padding never reaches a
    valid position (the reference leaves LayerNorm's bias there); local attention is computed on unfolded windows
    rather than Longformer's chunks, so lengths need only be divisible by the pyramid's total stride (and there is
no point buffer, max_buffer_len_factor: positions are made for any length); segments are
    in feature-index units and clamped to [0, length] (the reference converts to seconds and clamps to the
    duration)."""

    preset: str = "thumos14"
    evaluation: str = "thumos14"  # the tIoU thresholds of the mAP: thumos14 0.3:0.1:0.7, activitynet 0.5:0.05:0.95
    max_seq_len: int = 2304
    resize: bool = False
    trunc_thresh: float = 0.5
    crop_ratio: tuple = (0.9, 1.0)
    dim: int = 512
    heads: int = 4
    windows: tuple = (19,) * 6
    embed_convs: int = 2
    stem_blocks: int = 2
    regression_ranges: tuple = RANGES
    use_abs_pe: bool = False
    lr: float = 0.0001
    weight_decay: float = 0.05
    epochs: int = 30
    warmup_epochs: int = 5
    batch_size: int = 2
    init_loss_norm: float = 100.0
    clip_grad: float = 1.0
    cls_prior_prob: float = 0.01
    center_sample_radius: float = 1.5
    loss_weight: float = 1.0
    label_smoothing: float = 0.0
    dropout: float = 0.0
    droppath: float = 0.1
    ema_decay: float = 0.999
    pre_nms_thresh: float = 0.001
    pre_nms_topk: int = 2000
    iou_threshold: float = 0.1
    min_score: float = 0.001
    max_seg_num: int = 200
    nms_sigma: float = 0.5
    duration_thresh: float = 0.05
    val_fraction: float = 0.1
    split_seed: int = 0
    seeds: tuple = (0,)

    @staticmethod
    def normalise(raw: dict) -> dict:
        """Expand a named preset into its settings (a card that names one and changes one of them is refused), write
        lists as tuples and numbers of float settings as floats, and name the preset the settings amount to."""
        name = raw.pop("preset", None)
        raw = {key: _tuples(value) for key, value in raw.items()}
        if "regression_ranges" in raw:
            raw["regression_ranges"] = tuple(tuple(float(v) for v in pair) for pair in raw["regression_ranges"])
        if "crop_ratio" in raw:
            raw["crop_ratio"] = tuple(float(v) for v in raw["crop_ratio"])
        raw = expand_preset(as_floats(raw, _FLOATS), name, PRESETS)
        raw["preset"] = preset_of({**_DEFAULTS, **raw}, PRESETS)
        return raw

    @property
    def levels(self) -> int:
        """Pyramid levels (strides 1, 2, 4, ...)."""
        return len(self.windows)

    @property
    def divisor(self) -> int:
        """What every padded length must be a multiple of: the stride of the coarsest level."""
        return 2 ** (self.levels - 1)

    def __post_init__(self) -> None:
        self._check_shape()
        self._check_training()
        self._check_inference()
        actual = preset_of({f.name: getattr(self, f.name) for f in fields(self)}, PRESETS)
        if self.preset != actual:
            raise ValueError(f"preset {self.preset!r} does not match the settings, which are preset {actual!r}")

    def _check_shape(self) -> None:
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {', '.join(EVALUATIONS)}, got {self.evaluation!r}")
        for name, low in (("max_seq_len", 1), ("dim", 1), ("heads", 1), ("embed_convs", 1), ("stem_blocks", 0)):
            if not whole(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        if not isinstance(self.resize, bool) or not isinstance(self.use_abs_pe, bool):
            raise ValueError("resize and use_abs_pe must be true or false")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        windows = self.windows
        if (not isinstance(windows, tuple) or not windows
                or not all(whole(w, 0) and (w == 0 or (w >= 3 and w % 2)) for w in windows)):
            raise ValueError(f"windows must be a non-empty list of odd window sizes >= 3 or 0 (global attention), one "
                             f"per pyramid level, got {windows!r}")
        ranges = self.regression_ranges
        if (not isinstance(ranges, tuple) or len(ranges) != len(windows)
                or not all(isinstance(r, tuple) and len(r) == 2 and all(finite(v) for v in r) and 0 <= r[0] < r[1]
                           for r in ranges)):
            raise ValueError(f"regression_ranges must hold one (low, high) pair with 0 <= low < high per pyramid level "
                             f"({len(windows) if isinstance(windows, tuple) else '?'}), got {ranges!r}")
        if self.max_seq_len % self.divisor:
            raise ValueError(f"max_seq_len {self.max_seq_len} must be divisible by {self.divisor}, the stride of the "
                             f"coarsest of {self.levels} pyramid levels")

    def _check_training(self) -> None:
        for name, low in (("epochs", 1), ("warmup_epochs", 0), ("batch_size", 1), ("split_seed", 0)):
            if not whole(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("lr", "init_loss_norm", "center_sample_radius", "loss_weight"):
            if not finite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("weight_decay", "clip_grad"):
            if not finite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a non-negative number (clip_grad 0: none), got {getattr(self, name)!r}")
        for name in ("trunc_thresh", "label_smoothing", "dropout", "droppath", "ema_decay"):
            if not finite(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not finite(self.cls_prior_prob) or not 0 < self.cls_prior_prob < 1:
            raise ValueError(f"cls_prior_prob must be in (0, 1), got {self.cls_prior_prob!r}")
        crop = self.crop_ratio
        if not (isinstance(crop, tuple) and len(crop) == 2 and all(finite(v) for v in crop)
                and 0 < crop[0] <= crop[1] <= 1):
            raise ValueError(f"crop_ratio must be a pair 0 < low <= high <= 1, got {crop!r}")
        if not isinstance(self.val_fraction, float) or not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        seeds = self.seeds
        if not isinstance(seeds, tuple) or not seeds or not all(whole(s, 0) for s in seeds) or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct non-negative integers, got {seeds!r}")

    def _check_inference(self) -> None:
        for name, low in (("pre_nms_topk", 1), ("max_seg_num", 1)):
            if not whole(getattr(self, name), low):
                raise ValueError(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("pre_nms_thresh", "iou_threshold", "min_score"):
            if not finite(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("nms_sigma", "duration_thresh"):
            if not finite(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")


_DEFAULTS = {f.name: f.default for f in fields(Config)}
