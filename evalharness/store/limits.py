"""What a sane embedding file stays within, and how a list of problems reads as one line: plain values, so the
processes that only start a confined child (`validate`, `info`) need neither numpy nor h5py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Shapes and sizes a sane embedding file stays within; checked before any data is read.

    Sizes count every dataset uncompressed (`data_bytes`, and at most `expansion` times the bytes the file occupies),
    so a small file cannot stand for a large one; `chunks` and `chunk_bytes` bound what HDF5 allocates per read (it
    keeps a few KB per chunk a read touches); `memory` bounds what scoring reads of the file at once (its video
    vectors, a block of rows, one video's dense maps and feature sequence, the captions, as float32)."""

    items: int = 5_000_000
    views: int = 1024
    dim: int = 65_536
    frames: int = 100_000
    clip_elements: int = 20_000_000_000
    dense_elements: int = 2_000_000_000
    dense_video_elements: int = 1 << 30  # one video's maps: 2 GiB at 16 bits
    frame_side: int = 16_384
    dense_stride: int = 1024
    token_clip_elements: int = 1 << 28  # one clip's tokens, all views: 512 MiB at 16 bits
    token_dim: int = 16_384
    token_elements: int = 10_000_000_000_000
    snippets: int = 1_000_000  # one video's sequence: snippets (rows of /sequences/<id>/features)
    sequence_video_elements: int = 1 << 30  # one video's sequence features: 4 GiB as float32
    sequence_elements: int = 20_000_000_000  # every video's sequence features together
    string_chars: int = 4096  # one id, caption id or failure reason
    data_bytes: int = 1 << 46
    expansion: int = 8
    chunks: int = 16_384  # per dataset, except /tokens (one clip per chunk, read one at a time)
    chunk_bytes: int = 1 << 29
    memory: int = 8 << 30


def summary(problems: list[str]) -> str:
    """The first of several problems, and how many more there are."""
    return problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else "")
