"""The validated reader: an embedding file is checked on open, then its arrays are read in chunks, on demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checksum import sha256_files
from ..errors import StoreError
from .checks import READ_ERRORS, open_h5, structure_problems, token_row_problem, unreadable, value_problems
from .layout import (
    DenseMaps,
    Header,
    LazyMap,
    Limits,
    TextEmbeddings,
    from_stored_tokens,
    read_dense_geometry,
    read_failures,
    read_strings,
    read_text,
    read_token_info,
)


class EmbeddingFile:
    """A validated, read-only embedding file.

    Structure and bounds are always checked on open; values (ids sorted and unique, finite
    vectors, frame indices, failures, dense and text groups) too unless `check_values` is
    false: for files this process or its sandboxed child wrote and checked, or for a reader
    that checks the values itself as it reads them (the canonical copy of a submission)."""

    def __init__(self, path: str | Path, limits: Limits = Limits(), check_values: bool = True):
        self.path = Path(path)
        self._f = open_h5(self.path)
        try:
            problems = structure_problems(self._f, limits)
            if not problems and check_values:
                problems = value_problems(self._f)
            if problems:
                raise StoreError(f"{self.path}: {problems[0]}"
                                 + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
            self.header = Header.read(self._f.attrs, str(self.path))
            self.ids = read_strings(self._f["ids"])
            self.token_info = read_token_info(self._f)
        except READ_ERRORS as exc:
            self._f.close()
            raise StoreError(f"{self.path}: {unreadable(exc)}") from None
        except StoreError:
            self._f.close()
            raise
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
        return value_problems(self._f, check_clip)

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
        """Per-frame feature maps (T, h, w, D) of one video, read on demand."""
        if vid not in self._f["dense"]:
            raise StoreError(f"{self.path}: no dense features for '{vid}'")
        return self._f["dense"][vid][()]

    def dense_geometry(self, vid: str) -> tuple[int, tuple[int, int]]:
        """(grid stride in pixels, (height, width) of the frames the maps cover) of one video's dense maps."""
        try:
            stride, size = read_dense_geometry(self._f["dense"][vid])
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{self.path}: /dense/{vid} lacks valid 'stride' and 'frame_size' attributes") from None
        if stride < 1 or len(size) != 2 or min(size) < 1:
            raise StoreError(f"{self.path}: /dense/{vid} has impossible stride {stride} or frame_size {size}")
        return stride, size

    def file_sha256(self) -> str:
        return sha256_files([self.path])
