"""Protocol cards as users write them: load a card by name or path, and check its dataset and probes blocks
against the adapter and probes that will run it, so an impossible card fails when it is loaded, not halfway
through a run.

The card model (`protocol`) sits below the datasets and probes; this module sits above
both and joins them.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .datasets import CardValueError, adapter
from .errors import ProtocolError
from .probes import resolve_config
from .protocol import ROLES, Protocol, card_differences, check_keys, parse_structure, where


def _dataset(protocol: Protocol) -> None:
    raw = protocol.dataset
    try:
        layout = adapter(raw["adapter"])
    except KeyError as exc:
        raise ProtocolError(f"{where(protocol.name, 'dataset.adapter')}: {exc.args[0]}") from None
    check_keys(protocol.name, "dataset", raw, set(layout.keys) | {"adapter", *ROLES}, {"test"})
    try:
        layout.check_card(raw)
    except CardValueError as exc:
        raise ProtocolError(f"{where(protocol.name, 'dataset.' + exc.key)} {exc.problem}") from None


def _probes(protocol: Protocol) -> dict:
    out = {}
    for name, settings in protocol.probes.items():
        try:
            out[name] = resolve_config(name, settings, protocol.task)
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"{where(protocol.name, 'probes.' + name)}: {exc.args[0] if exc.args else exc}") from None
    return out


def parse_protocol(raw: Any, source: str = "<memory>") -> Protocol:
    """Validate a card's mapping against the card model, its adapter and its probes, resolving every default;
    errors name the key at fault."""
    protocol = parse_structure(raw, source)
    _dataset(protocol)
    return replace(protocol, probes=_probes(protocol))


def _shipped_folder() -> Path:
    return Path(str(resources.files("evalharness.protocols")))


def shipped_cards() -> dict[str, Path]:
    """Names of the cards that ship with the harness, to their files."""
    return {p.stem: p for p in sorted(_shipped_folder().glob("*.yaml"))}


def _read_card(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProtocolError(f"protocol {path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"protocol {path}: unreadable ({exc})") from None


def shipped_protocol(name: str) -> Protocol:
    """A shipped card (parsed once per process; each caller gets its own copy)."""
    return copy.deepcopy(_shipped_protocol(name))


@functools.cache
def _shipped_protocol(name: str) -> Protocol:
    cards = shipped_cards()
    if name not in cards:
        raise ProtocolError(f"protocol {name}: no such file or shipped card (shipped: {', '.join(sorted(cards))})")
    protocol = parse_protocol(_read_card(cards[name]), str(cards[name]))
    if protocol.name != name:
        raise ProtocolError(f"protocol {cards[name]}: shipped card file name must equal its name '{protocol.name}'")
    return protocol


CARD_COLUMNS = ("name", "version", "task", "dataset", "frames", "views", "crop", "probes", "extraction hash")


def card_row(protocol: Protocol) -> tuple[str, ...]:
    """A card's row under CARD_COLUMNS (`evalharness protocols`): its adapter, frames as count and sampling
    ('16 dense stride 4', 'all', '8 sliding window 0.5 s overlap 0.75'), views as temporal x spatial, the crop side
    ('none': whole frames), the probes it lists and the first 12 characters of its extraction hash."""
    frames = protocol.frames
    window = ([f"{frames.window_frames} frames"] if frames.window_frames is not None
              else [f"{frames.window_seconds:g} s"] if frames.window_seconds is not None else [])
    sampled = " ".join([*([str(frames.count)] if frames.count is not None else []), frames.sampling,
                        *([f"stride {frames.stride}"] if frames.stride is not None else []),
                        *([f"window {window[0]} overlap {frames.overlap or 0:g}"] if window else [])])
    crop = protocol.transform.crop
    return (protocol.name, str(protocol.version), str(protocol.task), str(protocol.dataset["adapter"]), sampled,
            f"{protocol.views.temporal}x{protocol.views.spatial}", "none" if crop is None else str(crop),
            ",".join(protocol.probes), protocol.extraction_hash[:12])


def load_protocol(ref: str | Path) -> Protocol:
    """Load a card by path to a YAML file, or by shipped name."""
    path = Path(ref)
    if path.is_file():
        return parse_protocol(_read_card(path), str(path))
    return shipped_protocol(str(ref))


def check_not_shadowing(protocol: Protocol) -> None:
    """Refuse a card that takes a shipped card's name and version with other settings (its records would carry
    the shipped card's name and different hashes), naming the keys that differ."""
    if protocol.name not in shipped_cards():
        return
    shipped = _shipped_protocol(protocol.name)
    if shipped.version != protocol.version or (shipped.extraction_hash, shipped.probe_hash) == (
            protocol.extraction_hash, protocol.probe_hash):
        return
    ours, theirs = shipped.to_dict(), protocol.to_dict()
    keys = card_differences({k: v for k, v in ours.items() if k not in ("description", "source")},
                            {k: v for k, v in theirs.items() if k not in ("description", "source")}, "card")
    raise ProtocolError(f"protocol {protocol.name} v{protocol.version} is a shipped card's name and version with other "
                        f"settings (shipped -> yours: {'; '.join(keys)}); give your card another name, or a new "
                        "version")
