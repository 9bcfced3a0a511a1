"""The card model: a protocol card's structure, its defaults and its hashes (the bottom layer of the harness).

A card fixes which clips, frames, views and pixels a backbone sees (hashed into
`extraction_hash`) and how the probes score the result (hashed into `probe_hash`).
This module knows the card's shape only; `cards` checks a card's dataset and probes
blocks against the adapters and probes that will run it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from .checksum import sha256_json
from .errors import ProtocolError


class Task(StrEnum):
    """What a card asks of a model; decides which probes apply and what a manifest must carry."""

    CLASSIFICATION = "classification"
    RETRIEVAL = "retrieval"
    TEXT_RETRIEVAL = "text-retrieval"
    LABEL_PROPAGATION = "label-propagation"
    LOCALIZATION = "localization"  # temporal action localization: labelled segments in seconds per video
    SEGMENTATION = "segmentation"  # temporal action segmentation: a label per frame of each video

    @property
    def needs_labels(self) -> bool:
        """Whether every clip of the manifest needs a class label."""
        return self in (Task.CLASSIFICATION, Task.RETRIEVAL)

    @property
    def temporal(self) -> bool:
        """Whether the task reads one feature per snippet along each whole video (a card with sliding frames)."""
        return self in (Task.LOCALIZATION, Task.SEGMENTATION)


SAMPLINGS = ("uniform", "dense", "all", "sliding")
INTERPOLATIONS = ("bilinear", "bicubic")
ROLES = ("train", "val", "test")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TOP_KEYS = {"name", "version", "task", "description", "source", "dataset", "frames", "views", "transform", "features",
             "probes"}
NORMS = ("after", "before")
CLIP_SOURCES = ("pooled", "token_mean")


@dataclass(frozen=True)
class Frames:
    """Which presented frames a card feeds: `count` per clip by `sampling`, with `stride` for dense clips; sliding
    snippets add a window (`window_frames`, or `window_seconds` against the stream's average frame rate) and the
    share of it consecutive snippets share (`overlap`). The sliding keys enter `as_dict` (so the hash) only when set."""

    sampling: str
    count: int | None = None
    stride: int | None = None
    window_frames: int | None = None
    window_seconds: float | None = None
    overlap: float | None = None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"sampling": self.sampling}
        for key in ("count", "stride", "window_frames", "window_seconds", "overlap"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @property
    def window_seconds_exact(self) -> Fraction:
        """The card's window in seconds as the exact decimal it wrote (0.1 is 1/10, not the nearest float)."""
        return Fraction(str(self.window_seconds))

    @property
    def overlap_exact(self) -> Fraction:
        """The card's overlap as the exact decimal it wrote."""
        return Fraction(str(self.overlap or 0.0))


@dataclass(frozen=True)
class Views:
    temporal: int = 1
    spatial: int = 1

    @property
    def total(self) -> int:
        return self.temporal * self.spatial


@dataclass(frozen=True)
class Transform:
    resize_short: int
    crop: int | None
    interpolation: str = "bilinear"
    normalize: str | dict = "model"
    long_multiple: int | None = None

    def as_dict(self) -> dict:
        out = {"resize_short": self.resize_short, "crop": self.crop,
               "interpolation": self.interpolation, "normalize": self.normalize}
        if self.long_multiple is not None:
            out["long_multiple"] = self.long_multiple
        return out


@dataclass(frozen=True)
class Tokens:
    """Which token features a card asks the backbone to store: a layer (k >= 1: the output of block k; -1: of the
    last block, -2: the one before), before or after the model's final norm, a fixed average pooling of the (t, h, w)
    token grid, and what the file's clip embedding is: the model's own pooled output, or the mean of these tokens
    (so the linear and kNN probes score the mean of exactly what the attentive probe reads)."""

    layer: int = -1
    norm: str = "after"
    pool: tuple[int, int, int] = (1, 1, 1)
    clip: str = "pooled"

    def as_dict(self) -> dict:
        return {"layer": self.layer, "norm": self.norm, "pool": list(self.pool), "clip": self.clip}


@dataclass(frozen=True)
class Protocol:
    """A validated, resolved protocol card (build one with `cards.load_protocol` or `cards.parse_protocol`)."""

    name: str
    version: int
    task: Task
    dataset: dict
    frames: Frames
    views: Views
    transform: Transform
    tokens: Tokens | None = None
    probes: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def extraction_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task.value,
            "dataset": self.dataset,
            "frames": self.frames.as_dict(),
            "views": {"temporal": self.views.temporal, "spatial": self.views.spatial},
            "transform": self.transform.as_dict(),
            **({"features": {"tokens": self.tokens.as_dict()}} if self.tokens is not None else {}),
        }

    def to_dict(self) -> dict:
        """The whole resolved card (what `evalharness protocols NAME` prints and files record)."""
        out = self.extraction_dict()
        out["probes"] = self.probes
        if self.description:
            out["description"] = self.description
        if self.source:
            out["source"] = self.source
        return out

    @property
    def extraction_hash(self) -> str:
        return sha256_json(self.extraction_dict())

    @property
    def probe_hash(self) -> str:
        return sha256_json(self.probes)

    @property
    def splits(self) -> dict[str, str]:
        """Role (train / val / test) to the split name the dataset uses."""
        return {role: self.dataset[role] for role in ROLES if role in self.dataset}


def where(card: str, key: str) -> str:
    """How an error names a key of a card."""
    return f"protocol {card}: key '{key}'"


def check_keys(card: str, section: str, got: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    """A section must be a mapping with only `allowed` keys and every `required` one."""
    if not isinstance(got, dict):
        raise ProtocolError(f"{where(card, section)} must be a mapping, got {type(got).__name__}")
    unknown = sorted(set(got) - allowed, key=str)
    if unknown:
        raise ProtocolError(f"{where(card, section + '.' + str(unknown[0]))} is unknown (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(got))
    if missing:
        raise ProtocolError(f"{where(card, section + '.' + missing[0])} is required")


def _int(card: str, key: str, value: Any, lo: int = 1, hi: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(f"{where(card, key)} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _choice(card: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ProtocolError(f"{where(card, key)} must be one of {', '.join(choices)}, got {value!r}")
    return value


_WINDOW_KEYS = ("window_frames", "window_seconds", "overlap")


def _frames(card: str, raw: dict) -> Frames:
    check_keys(card, "frames", raw, {"count", "sampling", "stride", *_WINDOW_KEYS}, {"sampling"})
    sampling = _choice(card, "frames.sampling", raw["sampling"], SAMPLINGS)
    if sampling == "sliding":
        return _sliding(card, raw)
    for key in _WINDOW_KEYS:
        if key in raw:
            raise ProtocolError(f"{where(card, 'frames.' + key)} is meaningless with sampling '{sampling}'")
    if sampling == "all":
        for key in ("count", "stride"):
            if key in raw:
                raise ProtocolError(f"{where(card, 'frames.' + key)} is meaningless with sampling 'all'")
        return Frames(sampling)
    count = _int(card, "frames.count", raw.get("count"), 1, 4096)
    if sampling == "uniform":
        if "stride" in raw:
            raise ProtocolError(f"{where(card, 'frames.stride')} is meaningless with sampling 'uniform'")
        return Frames(sampling, count)
    return Frames(sampling, count, _int(card, "frames.stride", raw.get("stride"), 1, 1024))


def _sliding(card: str, raw: dict) -> Frames:
    """Sliding snippets: `count` frames per snippet (at `stride` steps, or spread evenly over the window when stride
    is absent), exactly one of `window_frames` / `window_seconds`, and `overlap` in [0, 1) (default 0)."""
    count = _int(card, "frames.count", raw.get("count"), 1, 4096)
    stride = _int(card, "frames.stride", raw["stride"], 1, 1024) if "stride" in raw else None
    given = [key for key in ("window_frames", "window_seconds") if key in raw]
    if len(given) != 1:
        raise ProtocolError(f"{where(card, 'frames.window_frames')} or 'frames.window_seconds' (exactly one) is "
                            f"required with sampling 'sliding', got {' and '.join(given) or 'neither'}")
    window_frames = window_seconds = None
    if "window_frames" in raw:
        window_frames = _int(card, "frames.window_frames", raw["window_frames"], 1, 1_000_000)
        if stride is not None and (count - 1) * stride + 1 > window_frames:
            raise ProtocolError(f"{where(card, 'frames.window_frames')} ({window_frames}) is shorter than the span of "
                                f"{count} frames at stride {stride} ({(count - 1) * stride + 1})")
    else:
        window_seconds = _decimal(card, "frames.window_seconds", raw["window_seconds"], "(0, 3600]")
    overlap = _decimal(card, "frames.overlap", raw.get("overlap", 0), "[0, 1)")
    return Frames("sliding", count, stride, window_frames, window_seconds, overlap)


_INTERVALS = {"(0, 3600]": lambda x: 0 < x <= 3600, "[0, 1)": lambda x: 0 <= x < 1}


def _decimal(card: str, key: str, value: Any, interval: str) -> float:
    """A decimal number in one of `_INTERVALS`, as a float (whose repr is the decimal the card wrote)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not number or not _INTERVALS[interval](value):
        raise ProtocolError(f"{where(card, key)} must be a number in {interval}, got {value!r}")
    return float(value)


def _views(card: str, raw: dict, frames: Frames) -> Views:
    check_keys(card, "views", raw, {"temporal", "spatial"})
    views = Views(_int(card, "views.temporal", raw.get("temporal", 1), 1, 100),
                  _int(card, "views.spatial", raw.get("spatial", 1), 1, 3))
    if views.spatial == 2:
        raise ProtocolError(f"{where(card, 'views.spatial')} must be 1 (centre crop) or 3 (three crops), got 2")
    if frames.sampling in ("all", "sliding") and views.temporal != 1:
        raise ProtocolError(f"{where(card, 'views.temporal')} must be 1 with sampling '{frames.sampling}'")
    return views


def _normalize(card: str, value: Any) -> str | dict:
    if value == "model":
        return value
    if isinstance(value, dict):
        check_keys(card, "transform.normalize", value, {"mean", "std"}, {"mean", "std"})
        for key in ("mean", "std"):
            seq = value[key]
            if (not isinstance(seq, list) or len(seq) != 3
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seq)):
                raise ProtocolError(f"{where(card, 'transform.normalize.' + key)} must be a list of 3 numbers")
        if any(s <= 0 for s in value["std"]):
            raise ProtocolError(f"{where(card, 'transform.normalize.std')} must be positive")
        return {"mean": [float(x) for x in value["mean"]], "std": [float(x) for x in value["std"]]}
    raise ProtocolError(f"{where(card, 'transform.normalize')} must be 'model' or {{mean: [..], std: [..]}}, got {value!r}")


def _transform(card: str, raw: dict, views: Views) -> Transform:
    check_keys(card, "transform", raw, {"resize_short", "crop", "interpolation", "normalize", "long_multiple"},
               {"resize_short"})
    short = _int(card, "transform.resize_short", raw["resize_short"], 8, 4096)
    crop = raw.get("crop", short)
    if crop is not None:
        crop = _int(card, "transform.crop", crop, 8, 4096)
        if crop > short:
            raise ProtocolError(f"{where(card, 'transform.crop')} ({crop}) cannot exceed resize_short ({short})")
    elif views.spatial != 1:
        raise ProtocolError(f"{where(card, 'views.spatial')} must be 1 when transform.crop is null (full frames)")
    interpolation = _choice(card, "transform.interpolation", raw.get("interpolation", "bilinear"), INTERPOLATIONS)
    long_multiple = raw.get("long_multiple")
    if long_multiple is not None:
        long_multiple = _int(card, "transform.long_multiple", long_multiple, 2, short)
        if crop is not None:
            raise ProtocolError(f"{where(card, 'transform.long_multiple')} is for full frames (transform.crop null)")
    return Transform(short, crop, interpolation, _normalize(card, raw.get("normalize", "model")), long_multiple)


def _tokens(card: str, raw: Any, task: Task, frames: Frames) -> Tokens | None:
    """The card's `features: {tokens: {layer, norm, pool, clip}}` block (absent: no token features, and no hash change)."""
    if raw is None:
        return None
    check_keys(card, "features", raw, {"tokens"}, {"tokens"})
    block = raw["tokens"] if raw["tokens"] is not None else {}
    check_keys(card, "features.tokens", block, {"layer", "norm", "pool", "clip"})
    layer = block.get("layer", -1)
    if isinstance(layer, bool) or not isinstance(layer, int) or layer == 0 or not -1000 <= layer <= 1000:
        raise ProtocolError(f"{where(card, 'features.tokens.layer')} must be a non-zero integer (k: the output of block k; "
                            f"-1: of the last block, -2: the one before), got {layer!r}")
    norm = _choice(card, "features.tokens.norm", block.get("norm", "after"), NORMS)
    pool = block.get("pool", [1, 1, 1])
    if not isinstance(pool, list) or len(pool) != 3:
        raise ProtocolError(f"{where(card, 'features.tokens.pool')} must be [t, h, w], got {pool!r}")
    pool = tuple(_int(card, "features.tokens.pool", p, 1, 64) for p in pool)
    if task != Task.CLASSIFICATION:
        raise ProtocolError(f"{where(card, 'features.tokens')} is for classification cards (attentive probes), not {task}")
    if frames.sampling == "all":
        raise ProtocolError(f"{where(card, 'features.tokens')} needs a fixed frame count, not sampling 'all'")
    return Tokens(layer, norm, pool, _choice(card, "features.tokens.clip", block.get("clip", "pooled"), CLIP_SOURCES))


def _dataset(card: str, raw: Any) -> dict:
    """The roles every dataset block shares; the adapter's own keys are checked by `cards`."""
    if not isinstance(raw, dict) or "adapter" not in raw:
        raise ProtocolError(f"{where(card, 'dataset.adapter')} is required")
    if "test" not in raw:
        raise ProtocolError(f"{where(card, 'dataset.test')} is required")
    for role in ROLES:
        if role in raw and not isinstance(raw[role], str):
            raise ProtocolError(f"{where(card, 'dataset.' + role)} must be a split name, got {raw[role]!r}")
    return dict(raw)


def _probes(card: str, raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise ProtocolError(f"{where(card, 'probes')} must be a mapping of probe name to settings")
    return {str(name): settings or {} for name, settings in raw.items()}


def parse_structure(raw: Any, source: str = "<memory>") -> Protocol:
    """Validate a card's shape and resolve the defaults of its frames, views and transform; errors name the key.

    The dataset and probes blocks are checked only for shape here; `cards.parse_protocol`
    checks them against the adapter and probes and fills the probes' defaults."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"protocol {source}: a card must be a YAML mapping")
    card = str(raw.get("name", source))
    check_keys(card, "card", raw, _TOP_KEYS, {"name", "version", "task", "dataset", "frames", "transform"})
    if not isinstance(raw["name"], str) or not _NAME_RE.match(raw["name"]):
        raise ProtocolError(f"{where(card, 'name')} must be lower-case letters, digits, '.', '_' or '-'")
    task = Task(_choice(card, "task", raw["task"], tuple(t.value for t in Task)))
    frames = _frames(card, raw["frames"])
    views = _views(card, raw.get("views", {}), frames)
    if task == Task.LABEL_PROPAGATION and frames.sampling != "all":
        raise ProtocolError(f"{where(card, 'frames.sampling')} must be 'all' for label-propagation")
    if task.temporal and frames.sampling != "sliding":
        raise ProtocolError(f"{where(card, 'frames.sampling')} must be 'sliding' for {task.value} (one feature per "
                            "snippet along each whole video)")
    transform = _transform(card, raw["transform"], views)
    tokens = _tokens(card, raw.get("features"), task, frames)
    if tokens is not None and transform.crop is None:
        raise ProtocolError(f"{where(card, 'features.tokens')} needs a fixed crop (transform.crop), so every clip has "
                            "the same token grid")
    return Protocol(
        name=raw["name"],
        version=_int(card, "version", raw["version"], 1, 10_000),
        task=task,
        dataset=_dataset(card, raw["dataset"]),
        frames=frames,
        views=views,
        transform=transform,
        tokens=tokens,
        probes=_probes(card, raw.get("probes", {})),
        description=str(raw.get("description", "")).strip(),
        source=str(raw.get("source", "")).strip(),
    )


def card_differences(ours: Any, theirs: Any, prefix: str = "", limit: int = 6) -> list[str]:
    """The dotted keys where two resolved cards (or any JSON-like values) differ, as `key: ours -> theirs`, at most
    `limit` of them (a last line counts the rest), so a refusal can say what differs and not just that it does."""
    found: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{key}.{k}" if key else str(k))
        elif a != b or type(a) is not type(b):
            found.append(f"{key or '(card)'}: {_brief(a)} -> {_brief(b)}")

    walk(ours, theirs, prefix)
    return found[:limit] + ([f"and {len(found) - limit} more"] if len(found) > limit else [])


_ABSENT = object()


def _brief(value: Any) -> str:
    """A value as a refusal shows it: `absent` for a missing key, otherwise its repr cut to 60 characters."""
    if value is _ABSENT:
        return "absent"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def extraction_differences(stored_json: str, protocol: Protocol | str) -> list[str]:
    """The extraction settings in which a file's stored card (`protocol_json`) differs from `protocol` (a card, or
    another stored card), as `card.key: file -> card`; one line when the stored card cannot be read."""
    ours = protocol.extraction_dict() if isinstance(protocol, Protocol) else _extraction_part(json.loads(protocol))
    try:
        stored = json.loads(stored_json)
    except (json.JSONDecodeError, RecursionError):
        return ["the file's stored card is not readable JSON"]
    if not isinstance(stored, dict):
        return ["the file's stored card is not a mapping"]
    return card_differences({k: stored.get(k, _ABSENT) for k in ours}, ours, "card")


def _extraction_part(card: dict) -> dict:
    """The keys of a resolved card's dict that `extraction_hash` covers."""
    return {k: v for k, v in card.items() if k not in ("probes", "description", "source")}
