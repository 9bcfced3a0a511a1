"""Hashes: sha256 of files' bytes, streamed, and of canonical JSON (the form every hash in the harness is taken of)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def sha256_files(paths: Iterable[Path]) -> str:
    """sha256 of the files' bytes in the given order (one file, or a sharded checkpoint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ASCII only: the byte form cards, manifests and records are hashed in."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_json(obj: Any) -> str:
    """sha256 of `obj`'s canonical JSON."""
    return hashlib.sha256(canonical_json(obj).encode("ascii")).hexdigest()
