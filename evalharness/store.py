"""Embedding files (HDF5, schema v1): crash-safe part writer, finalize and merge, validated reader.

Parts are complete files written under a temporary name and renamed into place,
one per fixed chunk of the sorted id list, so a kill loses at most the chunk in
flight and a resumed (or sharded) run writes the same bytes for the same chunks.
The reader checks structure and bounds before it reads any data, because files
come from other people too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from .checksum import sha256_files
from .environment import utc_now
from .errors import StoreError

FORMAT = "evalharness.embeddings"
SCHEMA_VERSION = 1
PART_RE = re.compile(r"^part-(\d{6})\.h5$")
STR = h5py.string_dtype("utf-8")
ALLOWED_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
ROOT_OBJECTS = {"ids", "clip", "frame_indices", "dense", "text", "failures"}
TEXT_OBJECTS = {"ids", "video_ids", "embeddings"}
FAILURE_OBJECTS = {"ids", "errors"}
MAX_ATTRIBUTE_BYTES = 4 << 20


@dataclass(frozen=True)
class Limits:
    """Shapes a sane embedding file stays within; checked before any data is read."""

    items: int = 5_000_000
    views: int = 1024
    dim: int = 65_536
    frames: int = 100_000
    clip_elements: int = 20_000_000_000
    dense_elements: int = 2_000_000_000


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

    def write(self, attrs: h5py.AttributeManager) -> None:
        attrs["format"] = FORMAT
        attrs["schema_version"] = SCHEMA_VERSION
        for key, value in asdict(self).items():
            attrs[key] = value

    @classmethod
    def read(cls, attrs: h5py.AttributeManager, where: str) -> Header:
        values = {}
        for key, kind in cls.__annotations__.items():
            if key not in attrs:
                raise StoreError(f"{where}: missing root attribute '{key}'")
            value = attrs[key]
            if kind == "int":
                if not isinstance(value, (int, np.integer)):
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
        out["autocast"] = self.autocast
        return out

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


@dataclass
class Chunk:
    """What one part holds: the successful clips of one chunk of ids, and the failed ones with reasons."""

    ids: list[str]
    clip: np.ndarray
    frame_indices: np.ndarray
    dense: dict[str, DenseMaps] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_h5(path: Path, fill) -> None:
    """Write an HDF5 file under a temporary name, flush it to disk, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with h5py.File(tmp, "w", track_order=False) as f:
            fill(f)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def _write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    group.create_dataset(name, data=np.array(values, dtype=object), dtype=STR)


def _write_failures(f: h5py.File, failures: list[tuple[str, str]]) -> None:
    group = f.create_group("failures")
    _write_strings(group, "ids", [i for i, _ in failures])
    _write_strings(group, "errors", [e for _, e in failures])


def part_path(parts_dir: Path, chunk: int) -> Path:
    return parts_dir / f"part-{chunk:06d}.h5"


def write_part(parts_dir: Path, header: Header, chunk_index: int, chunks_total: int, chunk: Chunk) -> Path:
    """Write one chunk as a complete, self-describing part file, atomically."""
    def fill(f: h5py.File) -> None:
        header.write(f.attrs)
        f.attrs["complete"] = False
        f.attrs["chunk"] = chunk_index
        f.attrs["chunks_total"] = chunks_total
        _write_strings(f, "ids", chunk.ids)
        f.create_dataset("clip", data=chunk.clip)
        f.create_dataset("frame_indices", data=chunk.frame_indices.astype(np.int32))
        dense = f.create_group("dense")
        for vid, item in chunk.dense.items():
            ds = dense.create_dataset(vid, data=item.maps.astype(np.float16))
            ds.attrs["stride"] = item.stride
            ds.attrs["frame_size"] = np.array(item.frame_size, dtype=np.int64)
        _write_failures(f, chunk.failures)

    path = part_path(parts_dir, chunk_index)
    _atomic_h5(path, fill)
    return path


TEXT_PART = "text.h5"


def write_text_part(parts_dir: Path, header: Header, ids: list[str], video_ids: list[str], embeddings: np.ndarray) -> Path:
    """Caption embeddings of a text-retrieval run, as their own atomic part (written once, by shard 0)."""
    def fill(f: h5py.File) -> None:
        header.write(f.attrs)
        f.attrs["complete"] = False
        group = f.create_group("text")
        _write_strings(group, "ids", ids)
        _write_strings(group, "video_ids", video_ids)
        group.create_dataset("embeddings", data=embeddings)

    path = parts_dir / TEXT_PART
    _atomic_h5(path, fill)
    return path


def finished_chunks(parts_dir: Path, header: Header, chunks_total: int) -> dict[int, Path]:
    """Chunks whose part file exists and belongs to this run; a part from another model, card or
    chunking (--batch-size) is an error."""
    done = {}
    if not parts_dir.is_dir():
        return done
    for path in sorted(parts_dir.iterdir()):
        match = PART_RE.match(path.name)
        if not match:
            continue
        try:
            with h5py.File(path, "r") as f:
                other = Header.read(f.attrs, str(path))
                their_total = int(f.attrs.get("chunks_total", -1))
        except (OSError, StoreError) as exc:
            raise StoreError(f"{path}: unreadable part file ({exc}); delete it to recompute that chunk") from None
        if other.identity() != header.identity():
            diff = sorted(k for k, v in other.identity().items() if header.identity()[k] != v)
            raise StoreError(f"{path}: part of another run (differs in {', '.join(diff)}); use another --out or delete {parts_dir}")
        if their_total != chunks_total:
            raise StoreError(f"{path}: written with another --batch-size ({their_total} chunks, this run has "
                             f"{chunks_total}); resume with the same --batch-size or delete {parts_dir}")
        done[int(match.group(1))] = path
    return done


def part_failures(path: Path) -> list[tuple[str, str]]:
    """The (id, reason) pairs a part file records as failed."""
    with h5py.File(path, "r") as f:
        return list(zip(_strings(f["failures/ids"]), _strings(f["failures/errors"])))


def _part_meta(path: Path) -> tuple[Header, int, int, tuple, str, tuple]:
    with h5py.File(path, "r") as f:
        header = Header.read(f.attrs, str(path))
        return (header, int(f.attrs["chunk"]), int(f.attrs["chunks_total"]), f["clip"].shape[1:],
                str(f["clip"].dtype), f["frame_indices"].shape[1:])


def finalize(parts_dirs: list[Path], out: Path, require_all: bool = True) -> Path:
    """Join part files (from one or several shard folders) into one complete embedding file, ids sorted."""
    parts: dict[int, Path] = {}
    for folder in parts_dirs:
        for path in sorted(Path(folder).glob("part-*.h5")):
            if PART_RE.match(path.name):
                parts.setdefault(int(PART_RE.match(path.name).group(1)), path)
    if not parts:
        raise StoreError(f"no part files found in {', '.join(map(str, parts_dirs))}")
    texts = [Path(folder) / TEXT_PART for folder in parts_dirs if (Path(folder) / TEXT_PART).is_file()]
    metas = {c: _part_meta(p) for c, p in sorted(parts.items())}
    first_header, _, total, _, _, _ = next(iter(metas.values()))
    for chunk, (header, index, chunks_total, _, _, _) in metas.items():
        if header.identity() != first_header.identity() or chunks_total != total or index != chunk:
            raise StoreError(f"{parts[chunk]}: part does not belong with {parts[min(parts)]} (another model, card or chunking)")
    missing = sorted(set(range(total)) - set(parts))
    if missing and require_all:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise StoreError(f"{out}: {len(missing)} of {total} chunks not extracted yet (chunks {shown}); run the missing shards first")
    with_rows = [m for m in metas.values() if m[3][-1] > 0]
    view_shape, dtype, index_shape = (with_rows[0][3], with_rows[0][4], with_rows[0][5]) if with_rows else (metas[min(metas)][3], "float32", metas[min(metas)][5])
    k = max(m[5][-1] for m in metas.values())
    environments = sorted({m[0].environment for m in metas.values()})
    environment = environments[0] if len(environments) == 1 else json.dumps({"parts": [json.loads(e) for e in environments]})
    header = replace(first_header, environment=environment, created_utc=utc_now())

    def fill(f: h5py.File) -> None:
        header.write(f.attrs)
        f.attrs["complete"] = False
        ids: list[str] = []
        failures: list[tuple[str, str]] = []
        n = 0
        for chunk in sorted(parts):
            with h5py.File(parts[chunk], "r") as src:
                n += src["ids"].shape[0]
        clip = f.create_dataset("clip", shape=(n,) + tuple(view_shape), dtype=dtype)
        indices = f.create_dataset("frame_indices", shape=(n, index_shape[0], k), dtype=np.int32, fillvalue=-1)
        dense = f.create_group("dense")
        row = 0
        for chunk in sorted(parts):
            with h5py.File(parts[chunk], "r") as src:
                m = src["ids"].shape[0]
                chunk_ids = [s.decode() if isinstance(s, bytes) else s for s in src["ids"][()]]
                if ids and chunk_ids and chunk_ids[0] <= ids[-1]:
                    raise StoreError(f"{parts[chunk]}: ids overlap or are out of order with the previous chunk")
                ids += chunk_ids
                if m:
                    clip[row:row + m] = src["clip"][()]
                    indices[row:row + m, :, :src["frame_indices"].shape[2]] = src["frame_indices"][()]
                for vid in src["dense"]:
                    src.copy(src["dense"][vid], dense, name=vid)
                failures += list(zip(_strings(src["failures/ids"]), _strings(src["failures/errors"])))
                row += m
        _write_strings(f, "ids", ids)
        _write_failures(f, failures)
        if texts:
            with h5py.File(texts[0], "r") as src:
                if Header.read(src.attrs, str(texts[0])).identity() != header.identity():
                    raise StoreError(f"{texts[0]}: caption embeddings of another run")
                src.copy(src["text"], f, name="text")
        f.attrs["complete"] = True

    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_h5(out, fill)
    return out


def _strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def write_canonical(source: EmbeddingFile, out: Path, chunk_rows: int = 4096) -> Path:
    """Copy a validated file's arrays into a fresh file of our own layout, in chunks (submissions:
    nothing of the original's structure, filters or attributes survives)."""
    def fill(f: h5py.File) -> None:
        Header(**{k: (int(v) if k == "protocol_version" else str(v)) for k, v in vars(source.header).items()}).write(f.attrs)
        f.attrs["complete"] = False
        _write_strings(f, "ids", source.ids)
        n, views, dim = source.shape
        clip = f.create_dataset("clip", shape=(n, views, dim), dtype=np.float32)
        for start in range(0, n, chunk_rows):
            clip[start:start + chunk_rows] = source.clip(slice(start, start + chunk_rows))
        f.create_dataset("frame_indices", data=source.frame_indices())
        dense = f.create_group("dense")
        for vid in source.dense_ids():
            stride, frame_size = source.dense_geometry(vid)
            maps = dense.create_dataset(vid, data=source.dense(vid).astype(np.float16))
            maps.attrs["stride"] = stride
            maps.attrs["frame_size"] = np.array(frame_size, dtype=np.int64)
        _write_failures(f, [(vid, reason[:500]) for vid, reason in source.failures])
        if source.has_text:
            ids, videos, embeddings = source.text()
            group = f.create_group("text")
            _write_strings(group, "ids", ids)
            _write_strings(group, "video_ids", videos)
            group.create_dataset("embeddings", data=embeddings)
        f.attrs["complete"] = True

    _atomic_h5(out, fill)
    return out


# ---------------------------------------------------------------- validated reading


def _dataset_problems(ds: h5py.Dataset) -> list[str]:
    """Storage a reader must never follow: external raw data, virtual layouts, unknown filters."""
    out = []
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        out.append(f"dataset {ds.name} is a virtual dataset (not allowed)")
    if dcpl.get_external_count() > 0:
        out.append(f"dataset {ds.name} uses external storage (not allowed)")
    for i in range(dcpl.get_nfilters()):
        code = dcpl.get_filter(i)[0]
        if code not in ALLOWED_FILTERS:
            out.append(f"dataset {ds.name} uses filter {code} (only gzip, shuffle, fletcher32 allowed)")
    return out


def _walk(group: h5py.Group, seen: set[int]) -> Iterator[tuple[str, object]]:
    """Every link below a group as (path, object or problem string), never following soft or external links."""
    for name in group:
        link = group.get(name, getlink=True)
        path = f"{group.name.rstrip('/')}/{name}"
        if isinstance(link, h5py.ExternalLink):
            yield path, f"{path} is an external link to {link.filename}:{link.path} (not allowed)"
            continue
        if isinstance(link, h5py.SoftLink):
            yield path, f"{path} is a soft link (not allowed)"
            continue
        obj = group[name]
        key = hash(obj.id)
        if key in seen:
            yield path, f"{path} is a second hard link to an object (not allowed)"
            continue
        seen.add(key)
        yield path, obj
        if isinstance(obj, h5py.Group):
            yield from _walk(obj, seen)


def _attribute_problems(obj, where: str) -> list[str]:
    out = []
    for name in obj.attrs:
        attr = obj.attrs.get_id(name)
        if attr.get_storage_size() > MAX_ATTRIBUTE_BYTES or len(attr.shape) > 1 or (attr.shape and attr.shape[0] > 16):
            out.append(f"{where}: attribute '{name}' has shape {attr.shape} / {attr.get_storage_size()} bytes (too large)")
    return out


def structure_problems(f: h5py.File, limits: Limits) -> list[str]:
    """Everything wrong with a file's layout, links, types and shapes, without reading array data."""
    problems = _attribute_problems(f, "root")
    if problems:
        return problems
    if f.attrs.get("format") != FORMAT:
        return [f"attribute 'format' is '{f.attrs.get('format')}', expected '{FORMAT}' (not an evalharness embedding file)"]
    if f.attrs.get("schema_version") != SCHEMA_VERSION:
        return [f"schema_version is {f.attrs.get('schema_version')}; this harness reads version {SCHEMA_VERSION}"]
    try:
        Header.read(f.attrs, "root")
    except StoreError as exc:
        problems.append(str(exc).split(": ", 1)[1])
    complete = f.attrs.get("complete")
    if not (isinstance(complete, (bool, np.bool_)) and complete):
        problems.append("file is not complete (extraction unfinished or crashed; run it again to resume)")
    objects = {}
    for path, obj in _walk(f, set()):
        if isinstance(obj, str):
            problems.append(obj)
            continue
        top = path.split("/")[1]
        parent = path.rsplit("/", 1)[0]
        allowed = (top in ROOT_OBJECTS and (parent == "" or parent == "/dense" and isinstance(obj, h5py.Dataset)
                                             or parent == "/text" and path.split("/")[-1] in TEXT_OBJECTS
                                             or parent == "/failures" and path.split("/")[-1] in FAILURE_OBJECTS))
        if not allowed:
            problems.append(f"unexpected object {path}")
            continue
        problems += _attribute_problems(obj, path)
        if isinstance(obj, h5py.Dataset):
            problems += _dataset_problems(obj)
            objects[path] = obj
        elif isinstance(obj, h5py.Datatype):
            problems.append(f"unexpected named datatype {path}")
    for required in ("/ids", "/clip", "/frame_indices", "/failures/ids", "/failures/errors"):
        if required not in objects:
            problems.append(f"missing dataset {required}")
    if problems:
        return problems
    ids, clip, index = objects["/ids"], objects["/clip"], objects["/frame_indices"]
    if ids.ndim != 1 or ids.dtype.kind != "O" or h5py.check_string_dtype(ids.dtype) is None:
        problems.append(f"/ids must be a 1-d string dataset, got shape {ids.shape} {ids.dtype}")
    if clip.ndim != 3 or clip.dtype not in (np.float16, np.float32):
        problems.append(f"/clip must be (N, V, D) float16/float32, got shape {clip.shape} {clip.dtype}")
    if index.ndim != 3 or index.dtype != np.int32:
        problems.append(f"/frame_indices must be (N, Vt, k) int32, got shape {index.shape} {index.dtype}")
    if problems:
        return problems
    n, views, dim = clip.shape
    if ids.shape[0] != n or index.shape[0] != n:
        problems.append(f"lengths disagree: ids {ids.shape[0]}, clip {n}, frame_indices {index.shape[0]}")
    if n > limits.items or views > limits.views or dim > limits.dim or n * views * dim > limits.clip_elements:
        problems.append(f"/clip shape {clip.shape} is beyond sane bounds")
    if index.shape[1] > limits.views or index.shape[2] > limits.frames:
        problems.append(f"/frame_indices shape {index.shape} is beyond sane bounds")
    if n and dim == 0:
        problems.append("/clip has zero-length embeddings")
    failure_ids, failure_errors = objects["/failures/ids"], objects["/failures/errors"]
    for ds in (failure_ids, failure_errors):
        if ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None or ds.shape[0] > limits.items:
            problems.append(f"{ds.name} must be a 1-d string dataset within bounds, got {ds.shape} {ds.dtype}")
    if failure_ids.shape != failure_errors.shape:
        problems.append("/failures/ids and /failures/errors differ in length")
    dense_total = 0
    for path, ds in objects.items():
        if path.startswith("/dense/"):
            if ds.ndim != 4 or ds.dtype != np.float16:
                problems.append(f"{path} must be (T, h, w, D) float16, got {ds.shape} {ds.dtype}")
            dense_total += int(np.prod(ds.shape, dtype=np.int64))
    if dense_total > limits.dense_elements:
        problems.append(f"/dense holds {dense_total} values, beyond sane bounds")
    if "/text/embeddings" in objects or "/text/ids" in objects or "/text/video_ids" in objects:
        t_ids, t_vids, t_emb = (objects.get(f"/text/{k}") for k in ("ids", "video_ids", "embeddings"))
        if t_ids is None or t_vids is None or t_emb is None:
            problems.append("/text must hold ids, video_ids and embeddings together")
        elif (t_emb.ndim != 2 or t_emb.dtype not in (np.float16, np.float32) or t_ids.shape != (t_emb.shape[0],)
              or t_vids.shape != t_ids.shape or t_emb.shape[0] > limits.items or t_emb.shape[1] > limits.dim):
            problems.append(f"/text shapes disagree or are beyond bounds: embeddings {t_emb.shape}")
    return problems


def value_problems(f: h5py.File, chunk_rows: int = 4096) -> list[str]:
    """Unique sorted ids, finite values, sane frame indices; read in chunks."""
    problems = []
    ids = _strings(f["ids"])
    if any(a >= b for a, b in zip(ids, ids[1:])):
        dup = next((a for a, b in zip(ids, ids[1:]) if a == b), None)
        problems.append(f"/ids has a duplicate id '{dup}'" if dup is not None else "/ids are not sorted")
    clip = f["clip"]
    for start in range(0, clip.shape[0], chunk_rows):
        block = clip[start:start + chunk_rows]
        bad = ~np.isfinite(block).all(axis=(1, 2))
        if bad.any():
            problems.append(f"/clip has non-finite values for id '{ids[start + int(np.argmax(bad))]}'")
            break
    index = f["frame_indices"]
    for start in range(0, index.shape[0], chunk_rows):
        block = index[start:start + chunk_rows]
        if (block < -1).any():
            problems.append("/frame_indices has negative indices")
            break
    failed = _strings(f["failures/ids"])
    overlap = sorted(set(failed) & set(ids))
    if overlap:
        problems.append(f"id '{overlap[0]}' is both embedded and listed as failed")
    if len(set(failed)) != len(failed):
        problems.append("/failures/ids has duplicates")
    stray = sorted(set(f["dense"]) - set(ids))
    if stray:
        problems.append(f"/dense/{stray[0]} is not an embedded id")
    if "text" in f:
        emb = f["text/embeddings"]
        if not np.isfinite(emb[()]).all():
            problems.append("/text/embeddings has non-finite values")
        unknown = sorted(set(_strings(f["text/video_ids"])) - set(ids) - set(failed))
        if unknown:
            problems.append(f"/text/video_ids names unknown video '{unknown[0]}'")
    return problems


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise StoreError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: file is empty (0 bytes)")
    if not h5py.is_hdf5(str(path)):
        raise StoreError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot be opened as HDF5, truncated or corrupt ({str(exc).splitlines()[0]})") from None


def file_problems(path: str | Path, limits: Limits = Limits(), check_values: bool = True) -> list[str]:
    """Every problem with an embedding file, one line each, prefixed with the path."""
    path = Path(path)
    try:
        f = _open_h5(path)
    except StoreError as exc:
        return [str(exc)]
    try:
        problems = structure_problems(f, limits)
        if not problems and check_values:
            problems = value_problems(f)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        problems = [f"unreadable ({str(exc).splitlines()[0]})"]
    finally:
        f.close()
    return [f"{path}: {p}" for p in problems]


class EmbeddingFile:
    """A validated, read-only embedding file; everything is checked on open, arrays are read in chunks."""

    def __init__(self, path: str | Path, limits: Limits = Limits()):
        self.path = Path(path)
        problems = file_problems(self.path, limits)
        if problems:
            raise StoreError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
        self._f = _open_h5(self.path)
        self.header = Header.read(self._f.attrs, str(self.path))
        self.ids = _strings(self._f["ids"])
        self._row = {vid: i for i, vid in enumerate(self.ids)}

    def __enter__(self) -> EmbeddingFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self._f["clip"].shape)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return list(zip(_strings(self._f["failures/ids"]), _strings(self._f["failures/errors"])))

    def clip(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Raw view embeddings (n, V, D) as float32."""
        data = self._f["clip"]
        return np.asarray(data[()] if rows is None else data[rows], dtype=np.float32)

    def frame_indices(self) -> np.ndarray:
        return self._f["frame_indices"][()]

    def rows(self, ids: list[str]) -> np.ndarray:
        """Row of each id; an id not in the file is an error naming it."""
        missing = [vid for vid in ids if vid not in self._row]
        if missing:
            raise StoreError(f"{self.path}: {len(missing)} ids missing, e.g. '{missing[0]}'")
        return np.array([self._row[vid] for vid in ids], dtype=np.int64)

    def video_vectors(self, chunk_rows: int = 8192) -> np.ndarray:
        """(N, D) float32: mean over views of the L2-normalised view embeddings, L2-normalised again."""
        n, _, dim = self.shape
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, chunk_rows):
            block = self.clip(slice(start, start + chunk_rows))
            block /= np.maximum(np.linalg.norm(block, axis=2, keepdims=True), 1e-12)
            mean = block.mean(axis=1)
            out[start:start + chunk_rows] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return out

    @property
    def has_text(self) -> bool:
        return "text" in self._f

    def text(self) -> tuple[list[str], list[str], np.ndarray]:
        """Caption ids, the video each belongs to (as the file claims), and their embeddings (float32)."""
        group = self._f["text"]
        return _strings(group["ids"]), _strings(group["video_ids"]), np.asarray(group["embeddings"][()], dtype=np.float32)

    def dense_ids(self) -> list[str]:
        """Videos with dense feature maps (label-propagation files)."""
        return sorted(self._f["dense"])

    def dense(self, vid: str) -> np.ndarray:
        """Per-frame feature maps (T, h, w, D) of one video, read on demand."""
        if vid not in self._f["dense"]:
            raise StoreError(f"{self.path}: no dense features for '{vid}'")
        return self._f["dense"][vid][()]

    def dense_geometry(self, vid: str) -> tuple[int, tuple[int, int]]:
        """(grid stride in pixels, (height, width) of the frames the maps cover) of one video's dense maps."""
        attrs = self._f["dense"][vid].attrs
        try:
            stride, size = int(attrs["stride"]), tuple(int(x) for x in attrs["frame_size"])
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{self.path}: /dense/{vid} lacks valid 'stride' and 'frame_size' attributes") from None
        if stride < 1 or len(size) != 2 or min(size) < 1:
            raise StoreError(f"{self.path}: /dense/{vid} has impossible stride {stride} or frame_size {size}")
        return stride, size

    def file_sha256(self) -> str:
        return sha256_files([self.path])
