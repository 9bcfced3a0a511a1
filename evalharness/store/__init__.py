"""Embedding files (HDF5, schema v1), in rooms: the layout, the checks, the reader and the writer."""

from .checks import file_problems
from .layout import (
    PART_RE,
    SCORING_ROWS,
    TEXT_PART,
    Chunk,
    DenseMaps,
    Header,
    Keep,
    LazyMap,
    Limits,
    TextEmbeddings,
    TokenInfo,
    part_path,
)
from .reader import EmbeddingFile
from .writer import (
    Part,
    check_parts,
    finalize,
    part_failures,
    parts_chunk_size,
    read_parts,
    write_canonical,
    write_part,
    write_text_part,
)

__all__ = ["PART_RE", "SCORING_ROWS", "TEXT_PART", "Chunk", "DenseMaps", "EmbeddingFile", "Header", "Keep", "LazyMap",
           "Limits", "Part",
           "TextEmbeddings", "TokenInfo", "check_parts", "file_problems", "finalize", "part_failures", "part_path",
           "parts_chunk_size", "read_parts", "write_canonical", "write_part", "write_text_part"]
