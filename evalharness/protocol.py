"""Protocol cards: load and validate a YAML card, resolve defaults, and hash it.

A card fixes which clips, frames, views and pixels a backbone sees (hashed into
`extraction_hash`) and how the probes score the result (hashed into `probe_hash`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ProtocolError

TASKS = ("classification", "retrieval", "text-retrieval", "label-propagation")
SAMPLINGS = ("uniform", "dense", "all")
INTERPOLATIONS = ("bilinear", "bicubic")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_TOP_KEYS = {"name", "version", "task", "description", "source", "dataset", "frames", "views", "transform", "probes"}
_HASHED_KEYS = ("name", "version", "task", "dataset", "frames", "views", "transform")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only: the byte form every hash in the harness is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Frames:
    sampling: str
    count: int | None = None
    stride: int | None = None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"sampling": self.sampling}
        if self.count is not None:
            out["count"] = self.count
        if self.stride is not None:
            out["stride"] = self.stride
        return out


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

    def as_dict(self) -> dict:
        return {"resize_short": self.resize_short, "crop": self.crop,
                "interpolation": self.interpolation, "normalize": self.normalize}


@dataclass(frozen=True)
class Protocol:
    """A validated, resolved protocol card."""

    name: str
    version: int
    task: str
    dataset: dict
    frames: Frames
    views: Views
    transform: Transform
    probes: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""

    def extraction_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "dataset": self.dataset,
            "frames": self.frames.as_dict(),
            "views": {"temporal": self.views.temporal, "spatial": self.views.spatial},
            "transform": self.transform.as_dict(),
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
        return {role: self.dataset[role] for role in ("train", "val", "test") if role in self.dataset}


def _where(card: str, key: str) -> str:
    return f"protocol {card}: key '{key}'"


def _check_keys(card: str, section: str, got: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(got, dict):
        raise ProtocolError(f"{_where(card, section)} must be a mapping, got {type(got).__name__}")
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ProtocolError(f"{_where(card, section + '.' + unknown[0])} is unknown (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(got))
    if missing:
        raise ProtocolError(f"{_where(card, section + '.' + missing[0])} is required")


def _int(card: str, key: str, value: Any, lo: int = 1, hi: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ProtocolError(f"{_where(card, key)} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _choice(card: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ProtocolError(f"{_where(card, key)} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _frames(card: str, raw: dict) -> Frames:
    _check_keys(card, "frames", raw, {"count", "sampling", "stride"}, {"sampling"})
    sampling = _choice(card, "frames.sampling", raw["sampling"], SAMPLINGS)
    if sampling == "all":
        for key in ("count", "stride"):
            if key in raw:
                raise ProtocolError(f"{_where(card, 'frames.' + key)} is meaningless with sampling 'all'")
        return Frames(sampling)
    count = _int(card, "frames.count", raw.get("count"), 1, 4096)
    if sampling == "uniform":
        if "stride" in raw:
            raise ProtocolError(f"{_where(card, 'frames.stride')} is meaningless with sampling 'uniform'")
        return Frames(sampling, count)
    return Frames(sampling, count, _int(card, "frames.stride", raw.get("stride"), 1, 1024))


def _views(card: str, raw: dict, frames: Frames) -> Views:
    _check_keys(card, "views", raw, {"temporal", "spatial"})
    views = Views(_int(card, "views.temporal", raw.get("temporal", 1), 1, 100),
                  _int(card, "views.spatial", raw.get("spatial", 1), 1, 3))
    if views.spatial == 2:
        raise ProtocolError(f"{_where(card, 'views.spatial')} must be 1 (centre crop) or 3 (three crops), got 2")
    if frames.sampling == "all" and views.temporal != 1:
        raise ProtocolError(f"{_where(card, 'views.temporal')} must be 1 with sampling 'all'")
    return views


def _normalize(card: str, value: Any) -> str | dict:
    if value == "model":
        return value
    if isinstance(value, dict):
        _check_keys(card, "transform.normalize", value, {"mean", "std"}, {"mean", "std"})
        for key in ("mean", "std"):
            seq = value[key]
            if (not isinstance(seq, list) or len(seq) != 3
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in seq)):
                raise ProtocolError(f"{_where(card, 'transform.normalize.' + key)} must be a list of 3 numbers")
        if any(s <= 0 for s in value["std"]):
            raise ProtocolError(f"{_where(card, 'transform.normalize.std')} must be positive")
        return {"mean": [float(x) for x in value["mean"]], "std": [float(x) for x in value["std"]]}
    raise ProtocolError(f"{_where(card, 'transform.normalize')} must be 'model' or {{mean: [..], std: [..]}}, got {value!r}")


def _transform(card: str, raw: dict, views: Views) -> Transform:
    _check_keys(card, "transform", raw, {"resize_short", "crop", "interpolation", "normalize"}, {"resize_short"})
    short = _int(card, "transform.resize_short", raw["resize_short"], 8, 4096)
    crop = raw.get("crop", short)
    if crop is not None:
        crop = _int(card, "transform.crop", crop, 8, 4096)
        if crop > short:
            raise ProtocolError(f"{_where(card, 'transform.crop')} ({crop}) cannot exceed resize_short ({short})")
    elif views.spatial != 1:
        raise ProtocolError(f"{_where(card, 'views.spatial')} must be 1 when transform.crop is null (full frames)")
    interpolation = _choice(card, "transform.interpolation", raw.get("interpolation", "bilinear"), INTERPOLATIONS)
    return Transform(short, crop, interpolation, _normalize(card, raw.get("normalize", "model")))


def _dataset(card: str, raw: dict) -> dict:
    from .datasets import adapter_keys

    if not isinstance(raw, dict) or "adapter" not in raw:
        raise ProtocolError(f"{_where(card, 'dataset.adapter')} is required")
    try:
        allowed = adapter_keys(raw["adapter"])
    except KeyError as exc:
        raise ProtocolError(f"{_where(card, 'dataset.adapter')}: {exc.args[0]}") from None
    _check_keys(card, "dataset", raw, allowed | {"adapter", "train", "val", "test"}, {"test"})
    for role in ("train", "val", "test"):
        if role in raw and not isinstance(raw[role], str):
            raise ProtocolError(f"{_where(card, 'dataset.' + role)} must be a split name, got {raw[role]!r}")
    return dict(raw)


def _probes(card: str, raw: dict, task: str) -> dict:
    from .probes import resolve_probe_config

    if not isinstance(raw, dict):
        raise ProtocolError(f"{_where(card, 'probes')} must be a mapping of probe name to settings")
    out = {}
    for name, cfg in raw.items():
        try:
            out[name] = resolve_probe_config(name, cfg or {}, task)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{_where(card, 'probes.' + str(name))}: {exc.args[0] if exc.args else exc}") from None
    return out


def parse_protocol(raw: Any, source: str = "<memory>") -> Protocol:
    """Validate a card's mapping and resolve every default; errors name the key at fault."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"protocol {source}: a card must be a YAML mapping")
    card = str(raw.get("name", source))
    _check_keys(card, "card", raw, _TOP_KEYS, {"name", "version", "task", "dataset", "frames", "transform"})
    if not isinstance(raw["name"], str) or not _NAME_RE.match(raw["name"]):
        raise ProtocolError(f"{_where(card, 'name')} must be lower-case letters, digits, '.', '_' or '-'")
    task = _choice(card, "task", raw["task"], TASKS)
    frames = _frames(card, raw["frames"])
    views = _views(card, raw.get("views", {}), frames)
    if task == "label-propagation" and frames.sampling != "all":
        raise ProtocolError(f"{_where(card, 'frames.sampling')} must be 'all' for label-propagation")
    return Protocol(
        name=raw["name"],
        version=_int(card, "version", raw["version"], 1, 10_000),
        task=task,
        dataset=_dataset(card, raw["dataset"]),
        frames=frames,
        views=views,
        transform=_transform(card, raw["transform"], views),
        probes=_probes(card, raw.get("probes", {}), task),
        description=str(raw.get("description", "")).strip(),
        source=str(raw.get("source", "")).strip(),
    )


def shipped_cards() -> dict[str, Path]:
    """Names of the cards that ship with the harness, to their files."""
    folder = resources.files("evalharness") / "protocols"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def load_protocol(ref: str | Path) -> Protocol:
    """Load a card by shipped name or by path to a YAML file."""
    path = Path(ref)
    if not path.is_file():
        cards = shipped_cards()
        if str(ref) not in cards:
            raise ProtocolError(f"protocol {ref}: no such file or shipped card (shipped: {', '.join(sorted(cards))})")
        path = cards[str(ref)]
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProtocolError(f"protocol {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    protocol = parse_protocol(raw, str(path))
    if path.stem != protocol.name and path.parent == Path(str(resources.files("evalharness") / "protocols")):
        raise ProtocolError(f"protocol {path}: shipped card file name must equal its name '{protocol.name}'")
    return protocol


def protocol_from_json(text: str) -> Protocol:
    """Rebuild a protocol from the `protocol_json` an embedding file records."""
    return parse_protocol(json.loads(text), "<embedded protocol_json>")
