"""The label propagation probe's settings (a card's `probes.labelprop` block) and the presets of its two reference
codes, apart from `labelprop.py` so that reading a card never loads torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .settings import as_floats, expand_preset, preset_of

WINDOWS = ("disc", "square")
DOWNSAMPLES = ("bilinear", "nearest")
UPSAMPLES = ("frame", "stride")

# Each preset as its reference runs it. crw: test.py --topk 10 --videoLen 20 --radius 12 --temperature 0.05
# --cropSize -1 (long memory [0], no --norm_mask). dino: eval_video_segmentation.py's defaults (n_last_frames 7,
# topk 5, size_mask_neighborhood 12) and its fixed temperature 0.1.
PRESETS: dict[str, dict] = {
    "crw": {"context": 20, "pad_first": True, "topk": 10, "keep_ties": False, "temperature": 0.05, "radius": 12.0,
            "window": "disc", "restrict_first": False, "downsample": "bilinear", "upsample": "frame",
            "norm_mask": False},
    "dino": {"context": 7, "pad_first": False, "topk": 5, "keep_ties": True, "temperature": 0.1, "radius": 12.0,
             "window": "square", "restrict_first": True, "downsample": "nearest", "upsample": "stride",
             "norm_mask": True},
}

# exp(1 / T) and sums of thousands of them stay finite in float32 for T at least this
_LEAST_EXP_TEMPERATURE = 1 / 64


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Config:
    """How labels propagate (defaults: the crw preset).

    context: previous frames beside frame 0 (CRW videoLen, DINO n_last_frames); pad_first: while fewer precede,
    copies of frame 0 with its labels fill the context (CRW's padded video); topk: affinities kept per target
    position; keep_ties: keep every affinity at least the k-th largest, weighted exp(a / T) / sum as DINO computes it
    (else exactly k, softmaxed as CRW does); window: which context positions a target position may use, 'disc'
    (grid distance < radius, CRW) or 'square' (|dy| and |dx| <= radius, DINO); restrict_first: the window applies to
    frame 0 too (DINO) or frame 0 is searched whole (CRW); downsample: frame 0's annotation to the feature grid,
    'bilinear' on its one-hot map (CRW, OpenCV's geometry) or 'nearest' (DINO, Pillow); upsample: 'frame' resizes
    the label map bilinearly to the annotation size (CRW), 'stride' by the grid stride, then the argmax by nearest
    neighbour to the annotation size (DINO); norm_mask: DINO's min-max scaling of each label channel over the frame
    before the argmax; boundary_threshold: F's tolerance as a fraction of the image diagonal."""

    preset: str = "crw"
    context: int = 20
    pad_first: bool = True
    topk: int = 10
    keep_ties: bool = False
    temperature: float = 0.05
    radius: float = 12.0
    window: str = "disc"
    restrict_first: bool = False
    downsample: str = "bilinear"
    upsample: str = "frame"
    norm_mask: bool = False
    boundary_threshold: float = 0.008

    @staticmethod
    def normalise(raw: dict) -> dict:
        """Expand a named preset into its settings (a card that names one and changes one of them is refused), write
        numbers as floats, and name the preset the settings amount to ('custom' for none): equal settings hash
        equally, and a record's preset always means its reference's settings."""
        raw = expand_preset(raw, raw.pop("preset", None), PRESETS)
        raw = as_floats(raw, ("temperature", "radius", "boundary_threshold"))
        raw["preset"] = preset_of({**_DEFAULTS, **raw}, PRESETS)
        return raw

    def __post_init__(self) -> None:
        for name, low in (("context", 0), ("topk", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("pad_first", "keep_ties", "restrict_first", "norm_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, choices in (("window", WINDOWS), ("downsample", DOWNSAMPLES), ("upsample", UPSAMPLES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not (_positive(self.temperature) and _positive(self.radius) and _positive(self.boundary_threshold)
                and self.boundary_threshold < 1):
            raise ValueError("temperature and radius must be positive, boundary_threshold in (0, 1)")
        if self.keep_ties and self.temperature < _LEAST_EXP_TEMPERATURE:
            raise ValueError(f"with keep_ties the weights are exp(a / temperature), as DINO computes them, so temperature "
                             f"must be at least {_LEAST_EXP_TEMPERATURE} (float32 range), got {self.temperature!r}")
        actual = preset_of({f.name: getattr(self, f.name) for f in fields(self)}, PRESETS)
        if self.preset != actual:
            raise ValueError(f"preset {self.preset!r} does not match the settings, which are preset {actual!r}")


_DEFAULTS = {f.name: f.default for f in fields(Config)}
