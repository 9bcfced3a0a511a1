"""Embedding files (HDF5, schema v1), in rooms: the limits, the layout, the checks, the reader and the writer.

Names are imported from their module on first use, so a process that only starts a confined child
(`validate`, `info`) loads neither numpy nor h5py.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Limits": "limits",
    "file_problems": "checks",
    "EmbeddingFile": "reader",
    **dict.fromkeys(["PART_RE", "SCORING_ROWS", "TEXT_PART", "Chunk", "DenseMaps", "FeatureSequence", "Header", "Keep",
                     "LazyMap", "TextEmbeddings", "TokenInfo", "part_path"], "layout"),
    **dict.fromkeys(["Part", "check_parts", "finalize", "part_failures", "parts_chunk_size", "read_parts",
                     "write_canonical", "write_part", "write_text_part"], "writer"),
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
