"""The embedding file's layout (schema v1): names, header, limits, and the only functions that write or read each group.

Every writer (parts, finalize, merge, the canonical copy of a submission) and the
reader go through these, so a group is spelled out in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..environment import utc_now
from ..errors import StoreError
from ..protocol import Protocol, Task, extraction_differences

FORMAT = "evalharness.embeddings"
SCHEMA_VERSION = 1
PART_RE = re.compile(r"^part-(\d{6})\.h5$")
TEXT_PART = "text.h5"
STR = h5py.string_dtype("utf-8")
ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
ROOT_OBJECTS = {"ids", "clip", "frame_indices", "dense", "text", "failures", "tokens", "sequences"}
TEXT_OBJECTS = {"ids", "video_ids", "embeddings"}
FAILURE_OBJECTS = {"ids", "errors"}
SEQUENCE_OBJECTS = ("features", "windows", "times")  # the datasets of /sequences/<id>
CLIP_DTYPES = (np.float16, np.float32)
MAX_ATTRIBUTE_BYTES = 4 << 20
SCORING_ROWS = 8192  # rows of /clip a scoring run reads at once (probes.common.video_vectors)
BLOCK_BYTES = 64 << 20  # what a check or a copy reads of a dataset at once, at most (one row if a row is larger)
SEQUENCE_CHUNK_BYTES = 1 << 20  # a sequence's features are chunked along T in about this many bytes...
SEQUENCE_CHUNK_ROWS = 64  # ...and at least this many rows (a sequence of Limits.snippets rows in few chunks)


@dataclass(frozen=True)
class Keep:
    """What a canonical copy keeps of a file: the rows of `ids` (all rows when None) and the optional groups."""

    ids: frozenset[str] | None = None
    dense: bool = True
    text: bool = True
    tokens: bool = True
    sequences: bool = True

    @classmethod
    def for_card(cls, protocol: Protocol, ids: list[str]) -> Keep:
        """The manifest's rows and only the groups the card's task reads (so a file cannot bring along bulk the
        leaderboard would store but never score)."""
        return cls(frozenset(ids), dense=protocol.task == Task.LABEL_PROPAGATION,
                   text=protocol.task == Task.TEXT_RETRIEVAL, tokens=protocol.tokens is not None,
                   sequences=protocol.task.temporal)


@dataclass(frozen=True)
class Header:
    """The self-description every embedding file and part carries as root attributes."""

    model: str
    model_revision: str
    weights_sha256: str
    model_config: str
    protocol: str
    protocol_version: int
    extraction_hash: str
    protocol_json: str
    manifest_hash: str
    harness_version: str
    environment: str
    created_utc: str = field(default_factory=utc_now)
    name: str = ""  # the display name tables show (`extract --name`); not part of the run's identity

    @property
    def display(self) -> str:
        """The name tables and records show: the display name when one was given, else the model."""
        return self.name or self.model

    def write(self, attrs: h5py.AttributeManager) -> None:
        attrs["format"] = FORMAT
        attrs["schema_version"] = SCHEMA_VERSION
        for key, value in asdict(self).items():
            attrs[key] = value

    @classmethod
    def read(cls, attrs: h5py.AttributeManager, where: str) -> Header:
        values = {}
        for key, kind in cls.__annotations__.items():
            if key == "name" and key not in attrs:  # files written before display names
                continue
            if key not in attrs:
                raise StoreError(f"{where}: missing root attribute '{key}'")
            value = attrs[key]
            if kind == "int":
                if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
                    raise StoreError(f"{where}: attribute '{key}' must be an integer")
                value = int(value)
            elif not isinstance(value, str):
                raise StoreError(f"{where}: attribute '{key}' must be a string")
            values[key] = value
        return cls(**values)

    def identity(self) -> dict:
        """Everything that must agree between parts of one file (not when or where they ran)."""
        out = asdict(self)
        out.pop("created_utc")
        out.pop("environment")
        out.pop("name")
        out.pop("protocol_json")  # the card as a whole: its extraction part is `extraction_hash`, the rest is not the file's
        out["autocast"] = self.autocast
        return out

    def differences(self, other: Header) -> list[str]:
        """The identity keys in which another header differs from this one."""
        ours, theirs = self.identity(), other.identity()
        return sorted(k for k in ours if ours[k] != theirs.get(k))

    def explain(self, other: Header) -> str:
        """How `other` (a file or part found on disk) differs from this run, key by key: the card's settings from
        the stored `protocol_json`, then the model, weights, manifest and autocast, as `key: theirs -> ours`."""
        diff = self.differences(other)
        lines = []
        if {"protocol", "protocol_version", "extraction_hash"} & set(diff):
            lines += extraction_differences(other.protocol_json, self.protocol_json) or ["card: extraction_hash"]
        theirs, ours = other.identity(), self.identity()
        lines += [f"{key}: {str(theirs.get(key))[:60]!r} -> {str(ours[key])[:60]!r}" for key in diff
                  if key not in ("protocol", "protocol_version", "extraction_hash", "model_config")]
        if "model_config" in diff and "model" not in diff:
            lines.append("model_config (same model name, other settings)")
        return "; ".join(lines)

    @property
    def autocast(self) -> str:
        """The mixed-precision mode the vectors were computed with (from `environment`, also when it lists parts)."""
        try:
            env = json.loads(self.environment)
        except json.JSONDecodeError:
            return "unknown"
        parts = env.get("parts", [env]) if isinstance(env, dict) else []
        modes = {str(p.get("autocast", "none")) for p in parts if isinstance(p, dict)}
        return modes.pop() if len(modes) == 1 else "unknown"


@dataclass(frozen=True)
class DenseMaps:
    """Per-frame feature maps of one video, with the grid stride and the frame size they cover."""

    maps: np.ndarray
    stride: int
    frame_size: tuple[int, int]


@dataclass(frozen=True)
class TextEmbeddings:
    """Caption embeddings: caption ids (`video#k`), the video each belongs to, and (M, D) vectors."""

    ids: list[str]
    video_ids: list[str]
    embeddings: np.ndarray


@dataclass(frozen=True)
class FeatureSequence:
    """One video's features along its sliding snippets: features (T, D), the [first, last] frames of each snippet's
    window (T, 2) int32 and its centre time in seconds (T,) float64. Arrays, or anything sliced by rows like one (an
    HDF5 dataset, a spill file), so that writers copy a long video's sequence in blocks."""

    features: np.ndarray
    windows: np.ndarray
    times: np.ndarray


TOKEN_DTYPES = {"float16": np.float16, "bfloat16": np.uint16}  # bfloat16 is kept as its 16 bits (HDF5 has no bf16)


@dataclass(frozen=True)
class TokenInfo:
    """What a file's token features are: the (t, h, w) grid after pooling, the width, where in the model they were
    taken (layer, before or after the final norm), the pooling, the patch (h, w) and tubelet sizes of the model's
    grid before pooling (0 where they do not apply), and the stored type."""

    grid: tuple[int, int, int]
    dim: int
    layer: int
    norm: str
    pool: tuple[int, int, int]
    patch: tuple[int, int]
    tubelet: int
    dtype: str

    @property
    def length(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def write(self, attrs: h5py.AttributeManager) -> None:
        for key in ("grid", "pool", "patch"):
            attrs[key] = np.array(getattr(self, key), dtype=np.int64)
        for key in ("layer", "tubelet", "dim"):
            attrs[key] = getattr(self, key)
        attrs["norm"], attrs["dtype"] = self.norm, self.dtype

    @classmethod
    def read(cls, attrs: h5py.AttributeManager) -> TokenInfo:
        """As stored; raises KeyError, TypeError or ValueError for missing or malformed attributes."""
        triple = lambda key, n: tuple(int(x) for x in np.asarray(attrs[key]).reshape(n))
        return cls(triple("grid", 3), int(attrs["dim"]), int(attrs["layer"]), str(attrs["norm"]), triple("pool", 3),
                   triple("patch", 2), int(attrs["tubelet"]), str(attrs["dtype"]))


def to_stored_tokens(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 tokens in the stored type: float16, or bfloat16 bits (rounded to nearest even) as uint16."""
    if dtype == "float16":
        return x.astype(np.float16)
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_stored_tokens(x: np.ndarray, dtype: str) -> np.ndarray:
    """Stored tokens back as float32."""
    if dtype == "float16":
        return x.astype(np.float32)
    return (x.astype(np.uint32) << 16).view(np.float32)


@dataclass
class Chunk:
    """Consecutive rows of a file: the clips embedded, their frame indices, dense maps, token features and feature
    sequences (mappings that may read lazily, one video at a time; tokens as float32 (V, L, D)), and the clips of
    the same ids that failed, with reasons."""

    ids: list[str]
    clip: np.ndarray
    frame_indices: np.ndarray
    dense: Mapping[str, DenseMaps] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    tokens: Mapping[str, np.ndarray] = field(default_factory=dict)
    sequences: Mapping[str, FeatureSequence] = field(default_factory=dict)


def part_path(parts_dir: Path, chunk: int) -> Path:
    return parts_dir / f"part-{chunk:06d}.h5"


# ------------------------------------------------------------------ groups: the one writer and reader of each


def write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    group.create_dataset(name, data=np.array(values, dtype=object), dtype=STR)


def read_strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def write_failures(f: h5py.File, failures: list[tuple[str, str]]) -> None:
    group = f.create_group("failures")
    write_strings(group, "ids", [i for i, _ in failures])
    write_strings(group, "errors", [e for _, e in failures])


def read_failures(f: h5py.File) -> list[tuple[str, str]]:
    return list(zip(read_strings(f["failures/ids"]), read_strings(f["failures/errors"]), strict=True))


def write_dense(group: h5py.Group, vid: str, item: DenseMaps) -> None:
    ds = group.create_dataset(vid, data=item.maps.astype(np.float16))
    ds.attrs["stride"] = item.stride
    ds.attrs["frame_size"] = np.array(item.frame_size, dtype=np.int64)


def read_dense_geometry(ds: h5py.Dataset) -> tuple[int, tuple[int, int]]:
    """(stride, frame_size) as stored, unchecked (the reader checks them)."""
    return int(ds.attrs["stride"]), tuple(int(x) for x in ds.attrs["frame_size"])


class LazyMap(Mapping):
    """A read-only mapping over known keys whose values are produced one at a time, when asked (dense maps: a
    video's may take hundreds of MB, so writers take a chunk's one video at a time)."""

    def __init__(self, keys: list[str], get: Callable[[str], object]):
        self._keys, self._get = keys, get

    def __getitem__(self, key: str):
        if key not in self._keys:
            raise KeyError(key)
        return self._get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def dense_view(group: h5py.Group, ids: list[str] | None = None) -> LazyMap:
    """The dense maps of a `dense/` group we wrote (optionally only `ids`), read one video at a time."""
    def read(vid: str) -> DenseMaps:
        ds = group[vid]
        stride, size = read_dense_geometry(ds)
        return DenseMaps(ds[()], stride, size)

    return LazyMap(sorted(group) if ids is None else [vid for vid in ids if vid in group], read)


def write_sequence(group: h5py.Group, vid: str, item: FeatureSequence, dtype: str) -> None:
    """One video's sequence as /sequences/<vid>/{features, windows, times}, features in `dtype` chunked along T,
    copied a chunk of rows at a time (a long video's sequence never sits in memory whole)."""
    length, dim = item.features.shape
    rows = min(length, max(SEQUENCE_CHUNK_ROWS, SEQUENCE_CHUNK_BYTES // max(1, dim * np.dtype(dtype).itemsize)))
    sub = group.create_group(vid)
    features = sub.create_dataset("features", shape=(length, dim), dtype=dtype, chunks=(rows, dim))
    windows = sub.create_dataset("windows", shape=(length, 2), dtype=np.int32)
    times = sub.create_dataset("times", shape=(length,), dtype=np.float64)
    for start in range(0, length, rows):
        block = slice(start, min(start + rows, length))
        features[block] = np.asarray(item.features[block], dtype=dtype)
        windows[block] = item.windows[block]
        times[block] = item.times[block]


def sequence_view(group: h5py.Group, ids: list[str] | None = None) -> LazyMap:
    """The sequences of a `sequences/` group we wrote (optionally only `ids`), as datasets read when sliced."""
    def read(vid: str) -> FeatureSequence:
        return FeatureSequence(*(group[vid][name] for name in SEQUENCE_OBJECTS))

    return LazyMap(sorted(group) if ids is None else [vid for vid in ids if vid in group], read)


def write_text(f: h5py.File, text: TextEmbeddings) -> None:
    group = f.create_group("text")
    write_strings(group, "ids", text.ids)
    write_strings(group, "video_ids", text.video_ids)
    group.create_dataset("embeddings", data=text.embeddings)


def read_text(f: h5py.File) -> TextEmbeddings:
    group = f["text"]
    return TextEmbeddings(read_strings(group["ids"]), read_strings(group["video_ids"]),
                          np.asarray(group["embeddings"][()], dtype=np.float32))


def token_view(ds: h5py.Dataset, ids: list[str], first_row: int, dtype: str) -> LazyMap:
    """Rows of a `tokens` dataset we wrote, as float32 (V, L, D) per id, read one clip at a time."""
    return LazyMap(ids, lambda vid: from_stored_tokens(ds[first_row + ids.index(vid)], dtype))


def read_token_info(f: h5py.File) -> TokenInfo | None:
    return TokenInfo.read(f["tokens"].attrs) if "tokens" in f else None


def read_chunk(f: h5py.File) -> Chunk:
    """A part file's rows as a chunk (its dense maps, tokens and sequences read lazily)."""
    ids = read_strings(f["ids"])
    info = read_token_info(f)
    tokens = token_view(f["tokens"], ids, 0, info.dtype) if info is not None else {}
    sequences = sequence_view(f["sequences"]) if "sequences" in f else {}
    return Chunk(ids, f["clip"][()], f["frame_indices"][()], dense_view(f["dense"]), read_failures(f), tokens,
                 sequences)


@dataclass(frozen=True)
class Shape:
    """The sizes a file's datasets are created with before its rows stream in."""

    rows: int
    views: int
    dim: int
    dtype: str
    temporal_views: int
    frames: int
    tokens: TokenInfo | None = None
    sequences: bool = False


def fill(f: h5py.File, header: Header, shape: Shape, chunks: Iterator[Chunk], text: TextEmbeddings | None = None,
         attrs: dict | None = None) -> None:
    """Write a whole embedding file (or part): header, then the chunks' rows in order (with their dense maps, tokens
    and, when `shape.sequences`, feature sequences), then ids, failures, text.

    `complete` is set last, true unless `attrs` says otherwise (parts carry false)."""
    header.write(f.attrs)
    f.attrs["complete"] = False
    clip = f.create_dataset("clip", shape=(shape.rows, shape.views, shape.dim), dtype=shape.dtype)
    index = f.create_dataset("frame_indices", shape=(shape.rows, shape.temporal_views, shape.frames), dtype=np.int32,
                             fillvalue=-1)
    dense = f.create_group("dense")
    sequences = f.create_group("sequences") if shape.sequences else None
    tokens = None
    if shape.tokens is not None:
        info = shape.tokens
        row_shape = (shape.views, info.length, info.dim)
        tokens = f.create_dataset("tokens", shape=(shape.rows, *row_shape), dtype=TOKEN_DTYPES[info.dtype],
                                  chunks=(1, *row_shape) if shape.rows else None)
        info.write(tokens.attrs)
    ids: list[str] = []
    failures: list[tuple[str, str]] = []
    row = 0
    for chunk in chunks:
        m = len(chunk.ids)
        if ids and chunk.ids and chunk.ids[0] <= ids[-1]:
            raise StoreError(f"rows of chunk starting at id '{chunk.ids[0]}' overlap or are out of order")
        if m:
            clip[row:row + m] = chunk.clip
            index[row:row + m, :, :chunk.frame_indices.shape[2]] = chunk.frame_indices
        for vid in chunk.dense:
            write_dense(dense, vid, chunk.dense[vid])
        for vid in chunk.sequences if sequences is not None else ():
            write_sequence(sequences, vid, chunk.sequences[vid], shape.dtype)
        if tokens is not None:
            for offset, vid in enumerate(chunk.ids):
                tokens[row + offset] = to_stored_tokens(chunk.tokens[vid], shape.tokens.dtype)
        ids += chunk.ids
        failures += chunk.failures
        row += m
    if row != shape.rows:
        raise StoreError(f"expected {shape.rows} rows but the chunks held {row}")
    write_strings(f, "ids", ids)
    write_failures(f, failures)
    if text is not None:
        write_text(f, text)
    extra = dict(attrs or {})
    complete = extra.pop("complete", True)
    for key, value in extra.items():
        f.attrs[key] = value
    f.attrs["complete"] = complete
