"""What the probes' settings dataclasses share, without torch: value tests, and the presets a probe that reproduces
reference code names its references' settings by (expanded into explicit, hashed fields and named back from them)."""

from __future__ import annotations

import math

CUSTOM = "custom"


def whole(value: object, low: int) -> bool:
    """An integer (not a bool) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def finite(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def as_floats(raw: dict, keys) -> dict:
    """Whole numbers given for the float settings `keys` written as floats, so that equal settings hash equally."""
    for key in keys:
        if isinstance(raw.get(key), int) and not isinstance(raw[key], bool):
            raw[key] = float(raw[key])
    return raw


def preset_of(settings: dict, presets: dict[str, dict]) -> str:
    """The preset whose settings these are, or 'custom'."""
    for name, preset in presets.items():
        if all(settings[key] == value for key, value in preset.items()):
            return name
    return CUSTOM


def expand_preset(raw: dict, name: str | None, presets: dict[str, dict]) -> dict:
    """A card's settings with the named preset's filled in; a card that names a preset and changes one of its
    settings is refused (it must say `custom`), so a record's preset always means exactly its reference's settings."""
    if name is None or name == CUSTOM:
        return raw
    if name not in presets:
        raise ValueError(f"preset must be one of {', '.join([*presets, CUSTOM])}, got {name!r}")
    for key, value in raw.items():
        if key in presets[name] and value != presets[name][key]:
            raise ValueError(f"preset {name} sets {key} to {presets[name][key]!r}, not {value!r}; "
                             f"name preset {CUSTOM} to change it")
    return {**presets[name], **raw}
