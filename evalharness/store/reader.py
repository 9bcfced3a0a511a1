"""The validated reader: an embedding file is checked on open, then its arrays are read in chunks, on demand."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..checksum import sha256_files
from ..errors import StoreError
from .checks import (
    READ_ERRORS,
    bounded_strings,
    dense_problem,
    open_h5,
    row_blocks,
    sequence_problem,
    structure_problems,
    token_row_problem,
    unreadable,
    value_problems,
)
from .layout import (
    SEQUENCE_OBJECTS,
    DenseMaps,
    FeatureSequence,
    Header,
    LazyMap,
    TextEmbeddings,
    from_stored_tokens,
    read_dense_geometry,
    read_failures,
    read_text,
    read_token_info,
)
from .limits import Limits, summary


class EmbeddingFile:
    """A validated, read-only embedding file.

    Structure and bounds are always checked on open; values (ids sorted and unique, finite
    vectors, frame indices, failures, dense and text groups) too unless `check_values` is
    false: for files this process or its sandboxed child wrote or checked, or for a reader
    that checks the values itself as it reads them (the canonical copy of a submission).
    Token features, dense maps and feature sequences are checked as they are read, clip by clip, video by video."""

    def __init__(self, path: str | Path, limits: Limits = Limits(), check_values: bool = True):
        self.path, self.limits = Path(path), limits
        self._f = open_h5(self.path)
        try:
            problems = structure_problems(self._f, limits)
            if not problems and check_values:
                problems = value_problems(self._f, limits)
            if not problems:
                self.header = Header.read(self._f.attrs, "root")
                self.ids = bounded_strings(self._f["ids"], limits)
                self.token_info = read_token_info(self._f)
        except READ_ERRORS as exc:
            problems = [unreadable(exc)]
        except StoreError as exc:
            problems = [str(exc)]
        if problems:
            self._f.close()
            raise StoreError(f"{self.path}: {summary(problems)}")
        self.id_set = frozenset(self.ids)
        self._row = {vid: i for i, vid in enumerate(self.ids)}

    def __enter__(self) -> EmbeddingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def value_problems(self, check_clip: bool = True) -> list[str]:
        """The value checks of an unchecked open (see `checks.value_problems`)."""
        return value_problems(self._f, self.limits, check_clip)

    def clip_tokens(self, clip: str | int, stored: bool = False) -> np.ndarray:
        """One clip's token features (V, L, D), by id or row, checked finite as they are read: float32, or as stored
        (float16, or bfloat16 bits as uint16) without a widened copy."""
        if self.token_info is None:
            raise StoreError(f"{self.path}: holds no token features (extract with a card that asks for them)")
        row = clip if isinstance(clip, int) else int(self.rows([clip])[0])
        tokens = self._f["tokens"][row]
        problem = token_row_problem(tokens, self.ids[row])
        if problem:
            raise StoreError(f"{self.path}: {problem}")
        return tokens if stored else from_stored_tokens(tokens, self.token_info.dtype)

    def row_blocks(self) -> Iterator[slice]:
        """The rows in consecutive blocks of clip vectors and frame indices small enough to read at once."""
        return row_blocks(self._f["clip"], self._f["frame_indices"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self._f["clip"].shape)

    @property
    def clip_dtype(self) -> str:
        return str(self._f["clip"].dtype)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return read_failures(self._f)

    def clip(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Raw view embeddings (n, V, D) as float32."""
        data = self._f["clip"]
        return np.asarray(data[()] if rows is None else data[rows], dtype=np.float32)

    def frame_indices(self, rows: slice | None = None) -> np.ndarray:
        data = self._f["frame_indices"]
        return data[()] if rows is None else data[rows]

    def rows(self, ids: list[str]) -> np.ndarray:
        """Row of each id; an id not in the file is an error naming it."""
        missing = [vid for vid in ids if vid not in self._row]
        if missing:
            raise StoreError(f"{self.path}: {len(missing)} ids missing, e.g. '{missing[0]}'")
        return np.array([self._row[vid] for vid in ids], dtype=np.int64)

    @property
    def has_text(self) -> bool:
        return "text" in self._f

    def text(self) -> TextEmbeddings:
        """Caption ids, the video each belongs to (as the file claims), and their embeddings (float32)."""
        return read_text(self._f)

    def dense_maps(self, ids: list[str] | None = None) -> LazyMap:
        """The dense maps of `ids` (default all) with checked geometry, as a mapping read one video at a time."""
        group = self._f["dense"]
        keys = sorted(group) if ids is None else [vid for vid in ids if vid in group]
        return LazyMap(keys, lambda vid: DenseMaps(self.dense(vid), *self.dense_geometry(vid)))

    def dense(self, vid: str) -> np.ndarray:
        """Per-frame feature maps (T, h, w, D) of one video, read on demand and checked finite."""
        if vid not in self._f["dense"]:
            raise StoreError(f"{self.path}: no dense features for '{vid}'")
        maps = self._f["dense"][vid][()]
        problem = dense_problem(maps, vid)
        if problem:
            raise StoreError(f"{self.path}: {problem}")
        return maps

    def dense_geometry(self, vid: str) -> tuple[int, tuple[int, int]]:
        """(grid stride in pixels, (height, width) of the frames the maps cover) of one video's dense maps (checked on
        open: integers within bounds that agree with the grid)."""
        return read_dense_geometry(self._f["dense"][vid])

    @property
    def has_sequences(self) -> bool:
        """Whether the file holds a feature sequence per video (extracted with a card of sliding frames)."""
        return "sequences" in self._f

    def sequence(self, vid: str) -> FeatureSequence:
        """One video's sequence, read on demand and checked: features (T, D) float32, windows (T, 2) int32 (the
        [first, last] presented frames of each snippet's window) and times (T,) float64 (each snippet's centre in
        seconds from the video's first presented frame)."""
        group = self._sequence_group(vid)
        features, windows, times = (group[name][()] for name in SEQUENCE_OBJECTS)
        item = FeatureSequence(np.asarray(features, dtype=np.float32), windows, times)
        problem = sequence_problem(vid, item)
        if problem:
            raise StoreError(f"{self.path}: {problem}")
        return item

    def sequences(self, ids: list[str] | None = None) -> LazyMap:
        """The sequences of `ids` (default all), as a mapping read (and checked) one video at a time."""
        group = self._f["sequences"] if self.has_sequences else {}
        return LazyMap(sorted(group) if ids is None else [vid for vid in ids if vid in group], self.sequence)

    def sequence_length(self, vid: str) -> int:
        """The number of snippets of one video's sequence, from its shape (nothing read)."""
        return int(self._sequence_group(vid)["features"].shape[0])

    def _sequence_group(self, vid: str):
        """/sequences/<vid>, or a StoreError naming the id when the file holds none for it."""
        if not self.has_sequences or vid not in self._f["sequences"]:
            raise StoreError(f"{self.path}: no feature sequence for '{vid}'")
        return self._f["sequences"][vid]

    def file_sha256(self) -> str:
        return sha256_files([self.path])
