"""Writing embedding files, crash-safe: parts of fixed chunks, the joined file (finalize, merge), canonical copies.

Every file is written under a temporary name, flushed and renamed into place, so a
kill loses at most the part in flight, and a resumed or sharded run writes the same
bytes for the same chunks. All of them fill their groups through `layout.fill`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from ..environment import utc_now
from ..errors import OtherRunError, StoreError
from ..progress import bar
from ..protocol import Task
from .checks import clip_block_problem
from .layout import (
    PART_RE,
    TEXT_PART,
    Chunk,
    Header,
    Keep,
    LazyMap,
    Shape,
    TextEmbeddings,
    TokenInfo,
    fill,
    part_path,
    read_chunk,
    read_failures,
    read_text,
    read_token_info,
    write_text,
)
from .limits import Limits
from .reader import EmbeddingFile


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_h5(path: Path, write: Callable[[h5py.File], None]) -> Path:
    """Write an HDF5 file under a temporary name, flush it to disk, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            write(f)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _chunk_shape(chunk: Chunk, views: int, temporal_views: int, dtype: str, tokens: TokenInfo | None,
                 sequences: bool) -> Shape:
    k = chunk.frame_indices.shape[2] if len(chunk.ids) else 0
    dim = chunk.clip.shape[2] if len(chunk.ids) else 0
    return Shape(len(chunk.ids), views, dim, dtype, temporal_views, k, tokens, sequences)


def write_part(parts_dir: Path, header: Header, chunk_index: int, chunks_total: int, chunk_size: int, chunk: Chunk,
               views: int, temporal_views: int, dtype: str, tokens: TokenInfo | None = None,
               sequences: bool = False) -> Path:
    """Write one chunk as a complete, self-describing part file, atomically (`tokens` describes its token features,
    if the card asks for them; `sequences` says it holds a feature sequence per video, for a card of sliding
    frames)."""
    shape = _chunk_shape(chunk, views, temporal_views, dtype, tokens, sequences)
    attrs = {"complete": False, "chunk": chunk_index, "chunks_total": chunks_total, "chunk_size": chunk_size}
    return atomic_h5(part_path(parts_dir, chunk_index), lambda f: fill(f, header, shape, iter([chunk]), attrs=attrs))


def write_text_part(parts_dir: Path, header: Header, text: TextEmbeddings) -> Path:
    """Caption embeddings of a text-retrieval run, as their own atomic part (written once, by shard 0)."""
    def write(f: h5py.File) -> None:
        header.write(f.attrs)
        f.attrs["complete"] = False
        write_text(f, text)

    return atomic_h5(parts_dir / TEXT_PART, write)


@dataclass(frozen=True)
class Part:
    """What a part file says about itself, read without its arrays."""

    path: Path
    header: Header
    chunk: int
    chunks_total: int
    chunk_size: int | None
    shape: Shape


def read_part(path: Path) -> Part:
    """A part's header and sizes; an unreadable part is an error naming it."""
    try:
        with h5py.File(path, "r") as f:
            header = Header.read(f.attrs, str(path))
            clip, index = f["clip"], f["frame_indices"]
            size = f.attrs.get("chunk_size")
            shape = Shape(clip.shape[0], clip.shape[1], clip.shape[2], str(clip.dtype), index.shape[1], index.shape[2],
                          read_token_info(f), "sequences" in f)
            return Part(path, header, int(f.attrs["chunk"]), int(f.attrs["chunks_total"]),
                        None if size is None else int(size), shape)
    except (OSError, KeyError, TypeError, ValueError, StoreError) as exc:
        raise StoreError(f"{path}: unreadable part file ({exc}); delete it to recompute that chunk") from None


def read_parts(parts_dir: Path) -> dict[int, Part]:
    """Every part file in a folder, by chunk number."""
    if not parts_dir.is_dir():
        return {}
    found = {}
    for path in sorted(parts_dir.iterdir()):
        match = PART_RE.match(path.name)
        if match:
            part = read_part(path)
            if part.chunk != int(match.group(1)):
                raise StoreError(f"{path}: holds chunk {part.chunk}, not the one its name says")
            found[part.chunk] = part
    return found


def parts_chunk_size(parts: dict[int, Part]) -> int | None:
    """The chunk size the parts of an unfinished run were cut with (None when there are none)."""
    sizes = {p.chunk_size for p in parts.values()}
    if None in sizes:
        path = next(p.path for p in parts.values() if p.chunk_size is None)
        raise StoreError(f"{path}: part written by an older harness without a recorded chunk size; delete "
                         f"{path.parent} to start again")
    if len(sizes) > 1:
        raise StoreError(f"{next(iter(parts.values())).path.parent}: parts of several chunk sizes "
                         f"({', '.join(map(str, sorted(sizes)))}); delete the folder to start again")
    return sizes.pop() if sizes else None


def check_parts(parts: dict[int, Part], header: Header, tokens: TokenInfo | None = None) -> None:
    """Every part must belong to this run: same identity (model, card, manifest, autocast) and token features."""
    for part in parts.values():
        diff = "; ".join(filter(None, [header.explain(part.header) if header.differences(part.header) else "",
                                       "token features" if part.shape.tokens != tokens else ""]))
        if diff:
            raise OtherRunError(f"{part.path}: part of another run (part -> this run: {diff}); delete "
                                f"{part.path.parent} to start again")


def finalize(parts_dirs: list[Path], out: Path, require_all: bool = True) -> Path:
    """Join part files (from one or several shard folders) into one complete embedding file, ids sorted."""
    parts: dict[int, Part] = {}
    for folder in parts_dirs:
        for chunk, part in read_parts(Path(folder)).items():
            parts.setdefault(chunk, part)
    if not parts:
        raise StoreError(f"no part files found in {', '.join(map(str, parts_dirs))}")
    first = parts[min(parts)]
    for part in parts.values():
        if (part.header.identity() != first.header.identity() or part.chunks_total != first.chunks_total
                or part.chunk_size != first.chunk_size or part.shape.tokens != first.shape.tokens
                or part.shape.sequences != first.shape.sequences):
            raise OtherRunError(f"{part.path}: part does not belong with {first.path} (another model, card or chunking)")
    missing = sorted(set(range(first.chunks_total)) - set(parts))
    if missing and require_all:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise StoreError(f"{out}: {len(missing)} of {first.chunks_total} chunks not extracted yet (chunks {shown}); "
                         "the shards that hold them must finish first")
    with_rows = [p.shape for p in parts.values() if p.shape.rows > 0]
    like = with_rows[0] if with_rows else replace(first.shape, dtype="float32")
    shape = replace(like, rows=sum(p.shape.rows for p in parts.values()),
                    frames=max(p.shape.frames for p in parts.values()))
    environments = sorted({p.header.environment for p in parts.values()})
    environment = environments[0] if len(environments) == 1 else json.dumps({"parts": [json.loads(e) for e in environments]})
    header = replace(first.header, environment=environment, created_utc=utc_now())
    text = _text_part(parts_dirs, header)

    def chunks() -> Iterator[Chunk]:
        for chunk in sorted(parts):
            with h5py.File(parts[chunk].path, "r") as src:
                yield read_chunk(src)

    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_h5(out, lambda f: fill(f, header, shape, chunks(), text))


def _text_part(parts_dirs: list[Path], header: Header) -> TextEmbeddings | None:
    """The caption embeddings of a text-retrieval run (written by shard 0), which its file cannot go without."""
    paths = [Path(folder) / TEXT_PART for folder in parts_dirs if (Path(folder) / TEXT_PART).is_file()]
    if not paths:
        try:
            task = json.loads(header.protocol_json).get("task")
        except (json.JSONDecodeError, AttributeError):
            task = None
        if task == Task.TEXT_RETRIEVAL:
            raise StoreError(f"no caption embeddings ({TEXT_PART}, written by shard 0) in "
                             f"{', '.join(map(str, parts_dirs))}; the folder of shard 0 must be among them")
        return None
    with h5py.File(paths[0], "r") as src:
        if Header.read(src.attrs, str(paths[0])).identity() != header.identity():
            raise OtherRunError(f"{paths[0]}: caption embeddings of another run")
        return read_text(src)


def part_failures(path: Path) -> list[tuple[str, str]]:
    """The (id, reason) pairs a part file records as failed."""
    with h5py.File(path, "r") as f:
        return read_failures(f)


def write_canonical(source: Path, out: Path, keep: Keep = Keep(), limits: Limits = Limits(),
                    quiet: bool = True) -> tuple[Header, int]:
    """Check a hostile file's values while copying what `keep` asks for into a fresh file of our own layout, in one
    pass: the rows of its ids, and the dense maps, captions, token features and feature sequences only where asked;
    progress in clips copied unless `quiet`.

    Only the arrays survive (no structure, filters or attributes of the original); a
    problem found on the way raises StoreError and leaves nothing at `out`. Returns the
    source's header and the number of clips copied."""
    with EmbeddingFile(source, limits, check_values=False) as src:
        problems = src.value_problems(check_clip=False)
        if problems:
            raise StoreError(f"{source}: {problems[0]}")
        rows = np.array([i for i, vid in enumerate(src.ids) if keep.ids is None or vid in keep.ids], dtype=np.int64)
        _, views, dim = src.shape
        index = src.frame_indices(slice(0, 0))
        tokens = src.token_info if keep.tokens else None
        shape = Shape(len(rows), views, dim, src.clip_dtype, index.shape[1], index.shape[2], tokens,
                      keep.sequences and src.has_sequences)
        kept = [(vid, reason[:500]) for vid, reason in src.failures if keep.ids is None or vid in keep.ids]
        text = src.text() if src.has_text and keep.text else None
        with bar(len(rows), "copying", "clip", quiet) as progress:
            chunks = _canonical_chunks(src, rows, keep, kept, shape, progress.update)
            atomic_h5(out, lambda f: fill(f, src.header, shape, chunks, text))
        return src.header, len(rows)


def _canonical_chunks(src: EmbeddingFile, rows: np.ndarray, keep: Keep, failures: list[tuple[str, str]],
                      shape: Shape, copied: Callable[[int], object]) -> Iterator[Chunk]:
    """The kept rows of a source in blocks, their clip vectors checked as they are read (dense maps, tokens and
    sequences are checked by the reader, one video or clip at a time), then the kept failures; `copied(n)` once a
    block of n rows is written."""
    for block in src.row_blocks():
        local = rows[(rows >= block.start) & (rows < block.stop)] - block.start
        if not len(local):
            continue
        ids = [src.ids[block.start + i] for i in local]
        clip = src.clip(block)[local]
        problem = clip_block_problem(clip, ids, 0)
        if problem:
            raise StoreError(f"{src.path}: {problem}")
        dense = src.dense_maps(ids) if keep.dense else {}
        tokens = LazyMap(ids, src.clip_tokens) if shape.tokens is not None else {}
        sequences = src.sequences(ids) if shape.sequences else {}
        yield Chunk(ids, clip.astype(src.clip_dtype), src.frame_indices(block)[local], dense, tokens=tokens,
                    sequences=sequences)
        copied(len(ids))
    yield Chunk([], np.zeros((0, shape.views, shape.dim), np.float32), np.zeros((0, shape.temporal_views, 0), np.int32),
                failures=failures)
