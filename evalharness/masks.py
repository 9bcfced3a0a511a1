"""Object masks as PNG files: reading them as object-id maps, writing them in the DAVIS results layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VOID = 255


def davis_palette() -> list[int]:
    """The palette DAVIS uses (the PASCAL VOC colour map): id 1 red, 2 green, 3 yellow, ..."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def read_label_mask(path: str | Path) -> np.ndarray:
    """Object ids (H, W) uint8. Palette PNGs hold ids (255 = void, read as background as the official
    DAVIS-2017 evaluation does); grey or binary PNGs (DAVIS-2016) hold one object where non-zero."""
    image = Image.open(path)
    values = np.array(image)
    if image.mode == "P":
        values = values.copy()
        values[values == VOID] = 0
        return values.astype(np.uint8)
    if values.ndim == 3:
        values = values[..., 0]
    return (values > 0).astype(np.uint8)


def mask_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def write_palette_mask(path: Path, ids: np.ndarray) -> None:
    """One PNG with value = object id, in DAVIS's palette, as the official evaluation reads results."""
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    image.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
