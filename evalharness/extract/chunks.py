"""The chunk plan: which clips form which part, and which chunks a shard takes.

Chunks are fixed per output file (their size is recorded in every part), so a resumed
run, N shards, or N Ray tasks all cut the sorted id list the same way; the
forward-pass batch size is free to change between runs.
"""

from __future__ import annotations

from ..errors import ChunkingError
from ..store import Part, parts_chunk_size

DEFAULT_CHUNK_SIZE = 16


def chunk_size_for(parts: dict[int, Part], requested: int | None) -> int:
    """The chunk size of an unfinished run's parts, else the one asked for, else the default."""
    existing = parts_chunk_size(parts)
    if existing is None:
        return requested or DEFAULT_CHUNK_SIZE
    if requested is not None and requested != existing:
        folder = next(iter(parts.values())).path.parent
        raise ChunkingError(f"{folder}: the unfinished run there was cut into chunks of {existing} clips, not "
                            f"{requested}; resume with chunks of {existing} or delete {folder}")
    return existing


def chunk_plan(n_items: int, chunk_size: int) -> list[range]:
    """Rows of the sorted manifest in each chunk: consecutive runs of `chunk_size` (the last may be shorter)."""
    return [range(start, min(start + chunk_size, n_items)) for start in range(0, n_items, chunk_size)]


def shard_chunks(n_chunks: int, shard: tuple[int, int]) -> list[int]:
    """The chunks shard i of N takes: c with c % N == i."""
    index, count = shard
    return [c for c in range(n_chunks) if c % count == index]

