"""Validation of embedding files we did not write: structure and bounds before any data is read, then values.

A crafted HDF5 file can make a reader return the bytes of any local file (external
storage, external links, virtual datasets), allocate without bound (lying shapes,
datasets never written that read as fill values, gzip bombs, tiny chunks, strings
that all point at one long heap object), or crash or hang HDF5 itself. So nothing is
followed or read until the layout and every size are known to be sane, and commands
run these checks on a file they did not write in a sandboxed child (`store.sandbox`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError
from ..protocol import NORMS
from ..untrusted import one_line, shown
from .layout import (
    ALLOWED_FILTERS,
    BLOCK_BYTES,
    CLIP_DTYPES,
    FAILURE_OBJECTS,
    FORMAT,
    MAX_ATTRIBUTE_BYTES,
    ROOT_OBJECTS,
    SCHEMA_VERSION,
    SCORING_ROWS,
    SEQUENCE_OBJECTS,
    TEXT_OBJECTS,
    TOKEN_DTYPES,
    FeatureSequence,
    Header,
    TokenInfo,
    read_text,
)
from .limits import Limits

CHUNK_ROWS = 4096
SHOWN_PROBLEMS = 10  # the most problems of one kind a check lists (a crafted file may hold millions)
SLACK_BYTES = 1 << 20  # what a file may hold beyond `Limits.expansion` times its size (headers, short strings)


def _block_rows(ds: h5py.Dataset) -> int:
    """How many rows of a dataset to read at once: at most CHUNK_ROWS and BLOCK_BYTES, at least one."""
    row = ds.dtype.itemsize * math.prod(ds.shape[1:])
    return max(1, min(CHUNK_ROWS, BLOCK_BYTES // max(row, 1)))


def row_blocks(*datasets: h5py.Dataset) -> Iterator[slice]:
    """The rows of datasets of one length in consecutive blocks that each of them may read at once."""
    step, n = min(_block_rows(ds) for ds in datasets), datasets[0].shape[0]
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


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


def _stored_bytes(ds: h5py.Dataset) -> int:
    """A dataset's size uncompressed, as HDF5 stores its elements (16 bytes per variable-length string)."""
    return math.prod(ds.shape) * ds.id.get_type().get_size()


def _storage_problems(ds: h5py.Dataset, limits: Limits) -> list[str]:
    """Storage that makes a small file read as a large one, or costs HDF5 far more memory than its data: space never
    written (it reads as fill values), chunks too many or too large."""
    size = _stored_bytes(ds)
    if size == 0:
        return []
    layout = ds.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CONTIGUOUS and ds.id.get_storage_size() < size:
        return [f"{ds.name} declares {size} bytes but was never written (it would read as fill values)"]
    if layout != h5py.h5d.CHUNKED:
        return []
    chunk = math.prod(ds.chunks) * ds.id.get_type().get_size()
    total = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True))
    if chunk > limits.chunk_bytes:
        return [f"{ds.name} is stored in chunks of {chunk} bytes, more than {limits.chunk_bytes}"]
    if ds.name != "/tokens" and total > limits.chunks:
        return [f"{ds.name} is stored in {total} chunks, more than {limits.chunks} (rewrite it with larger chunks "
                "or none)"]
    written = ds.id.get_num_chunks()
    if written != total:
        return [f"{ds.name} has {written} of its {total} chunks written (unwritten chunks would read as fill values)"]
    return []


def _occupied_bytes(path: str | Path) -> int:
    """The bytes a file really occupies: its length, or its allocated blocks when fewer (a sparse file)."""
    st = os.stat(path)
    return min(st.st_size, st.st_blocks * 512) if st.st_blocks else st.st_size


def _expansion_budget(path: str | Path, limits: Limits) -> int:
    """The most bytes a file's data may decode to: `Limits.expansion` times what it occupies, plus headroom."""
    return limits.expansion * _occupied_bytes(path) + SLACK_BYTES


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


def _allowed(path: str, obj: object) -> bool:
    top, parent, leaf = path.split("/")[1], path.rsplit("/", 1)[0], path.split("/")[-1]
    return top in ROOT_OBJECTS and (parent == "" or (parent == "/dense" and isinstance(obj, h5py.Dataset))
                                    or (parent == "/text" and leaf in TEXT_OBJECTS)
                                    or (parent == "/failures" and leaf in FAILURE_OBJECTS)
                                    or (parent == "/sequences" and isinstance(obj, h5py.Group))
                                    or (parent.startswith("/sequences/") and parent.count("/") == 2
                                        and leaf in SEQUENCE_OBJECTS and isinstance(obj, h5py.Dataset)))


def structure_problems(f: h5py.File, limits: Limits) -> list[str]:
    """Everything wrong with a file's layout, links, types, shapes and sizes, without reading array data."""
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
        if not _allowed(path, obj):
            problems.append(f"unexpected object {path}")
            continue
        problems += _attribute_problems(obj, path)
        if isinstance(obj, h5py.Dataset):
            problems += _dataset_problems(obj) or _storage_problems(obj, limits)
            objects[path] = obj
        elif isinstance(obj, h5py.Datatype):
            problems.append(f"unexpected named datatype {path}")
    for required in ("/ids", "/clip", "/frame_indices", "/failures/ids", "/failures/errors"):
        if required not in objects:
            problems.append(f"missing dataset {required}")
    if problems:
        return problems
    return _shape_problems(objects, limits) or _sequence_problems(f, objects, limits) or _size_problems(f, objects,
                                                                                                          limits)


def _shape_problems(objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    problems = _row_problems(objects, limits)
    if problems:
        return problems
    n, views, _ = objects["/clip"].shape
    for path, ds in objects.items():
        if path.startswith("/dense/"):
            problems += _dense_problems(path, ds, limits)
    dense_total = sum(ds.size for path, ds in objects.items() if path.startswith("/dense/"))
    if dense_total > limits.dense_elements:
        problems.append(f"/dense holds {dense_total} values, beyond sane bounds")
    if "/tokens" in objects:
        problems += _token_problems(objects["/tokens"], n, views, limits)
    if any(path.startswith("/text/") for path in objects):
        problems += _text_problems(objects, limits)
    return problems


def _row_problems(objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    """The per-clip datasets: ids, clip vectors, frame indices and failures agree in length, type and bounds."""
    problems = []
    ids, clip, index = objects["/ids"], objects["/clip"], objects["/frame_indices"]
    if ids.ndim != 1 or h5py.check_string_dtype(ids.dtype) is None:
        problems.append(f"/ids must be a 1-d string dataset, got shape {ids.shape} {ids.dtype}")
    if clip.ndim != 3 or clip.dtype not in CLIP_DTYPES:
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
    if n and min(views, dim, index.shape[1], index.shape[2]) == 0:
        problems.append(f"/clip {clip.shape} or /frame_indices {index.shape} has an empty dimension (every clip needs "
                        "views, a width and frames)")
    failure_ids, failure_errors = objects["/failures/ids"], objects["/failures/errors"]
    for ds in (failure_ids, failure_errors):
        if ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None or ds.shape[0] > limits.items:
            problems.append(f"{ds.name} must be a 1-d string dataset within bounds, got {ds.shape} {ds.dtype}")
    if failure_ids.shape != failure_errors.shape:
        problems.append("/failures/ids and /failures/errors differ in length")
    return problems


def _integers(ds: h5py.Dataset, key: str, count: int) -> tuple[int, ...] | None:
    """An attribute as `count` integers, or None when it is missing, of another type or of another size."""
    if key not in ds.attrs:
        return None
    value = np.asarray(ds.attrs[key])
    if value.dtype.kind not in "iu" or value.size != count:
        return None
    return tuple(int(x) for x in value.reshape(count))


def _dense_problems(path: str, ds: h5py.Dataset, limits: Limits) -> list[str]:
    """One video's maps: (T, h, w, D) float16 with every dimension at least 1, within bounds, and a geometry that
    agrees with itself: integer stride and frame size within bounds, and a grid that covers the frame to within
    two cells, `(h - 1) * stride < H < (h + 2) * stride` (the same for w and W). Grids rounded down (ViT patches,
    pooling: h = H // stride), rounded up (padded strided convolutions) and unpadded convolution stacks that lose a
    few pixels per stage (Inception: 8 cells of 32 on 299 pixels) all pass; a stride or frame size that the grid
    does not match, which would make label propagation upsample to sizes unrelated to the video, does not."""
    if ds.ndim != 4 or ds.dtype != np.float16:
        return [f"{path} must be (T, h, w, D) float16, got {ds.shape} {ds.dtype}"]
    if min(ds.shape) < 1:
        return [f"{path} has an empty dimension in {ds.shape}"]
    if ds.size > limits.dense_video_elements:
        return [f"{path} holds {ds.size} values, more than {limits.dense_video_elements} for one video"]
    stride, size = _integers(ds, "stride", 1), _integers(ds, "frame_size", 2)
    if stride is None or size is None:
        return [f"{path} lacks an integer 'stride' and an integer (height, width) 'frame_size'"]
    (stride,), (_, h, w, _) = stride, ds.shape
    if not 1 <= stride <= limits.dense_stride or not all(1 <= side <= limits.frame_side for side in size):
        return [f"{path} has stride {stride} or frame_size {list(size)} beyond bounds (stride 1-{limits.dense_stride}, "
                f"sides 1-{limits.frame_side})"]
    if not all((cells - 1) * stride < side < (cells + 2) * stride for cells, side in ((h, size[0]), (w, size[1]))):
        return [f"{path}: a grid of {h} x {w} cells of {stride} pixels does not cover frames of {size[0]} x {size[1]}"]
    return []


def _one_sequence_problem(vid: str, objects: dict[str, h5py.Dataset], clip: h5py.Dataset, limits: Limits) -> str | None:
    """One video's sequence: features (T, D) of /clip's type and width, windows (T, 2) int32, times (T,) float64,
    1 <= T <= `Limits.snippets`, T x D within `Limits.sequence_video_elements`."""
    where = f"/sequences/{shown(vid)}"
    features, windows, times = (objects.get(f"/sequences/{vid}/{name}") for name in SEQUENCE_OBJECTS)
    if features is None or windows is None or times is None:
        return f"{where} must hold features, windows and times together"
    if (features.ndim != 2 or features.dtype != clip.dtype or windows.ndim != 2 or windows.dtype != np.int32
            or times.ndim != 1 or times.dtype != np.float64):
        return (f"{where} must be features (T, D) {clip.dtype} as /clip, windows (T, 2) int32, times (T,) float64; got "
                f"{features.shape} {features.dtype}, {windows.shape} {windows.dtype}, {times.shape} {times.dtype}")
    length, dim = features.shape
    if windows.shape != (length, 2) or times.shape != (length,):
        return f"{where} holds {length} features but windows {windows.shape} and times {times.shape}"
    if not 1 <= length <= limits.snippets:
        return f"{where} holds {length} snippets (1 to {limits.snippets} allowed)"
    if dim != clip.shape[2]:
        return f"{where} features are {dim} wide but /clip is {clip.shape[2]}"
    if features.size > limits.sequence_video_elements:
        return f"{where} holds {features.size} values, more than {limits.sequence_video_elements} for one video"
    return None


def _sequence_problems(f: h5py.File, objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    """The feature sequences, if any: a group of one subgroup per id, each sane, all within
    `Limits.sequence_elements` (from shapes only; which ids they are is a value check)."""
    if "sequences" not in f:
        return []
    group = f["sequences"]
    if not isinstance(group, h5py.Group):
        return ["/sequences must be a group (one subgroup per id)"]
    if len(group) > limits.items:
        return [f"/sequences holds {len(group)} videos, beyond sane bounds"]
    found = (_one_sequence_problem(vid, objects, objects["/clip"], limits) for vid in group)
    problems = list(itertools.islice(filter(None, found), SHOWN_PROBLEMS))
    total = sum(ds.size for path, ds in objects.items() if path.startswith("/sequences/") and path.endswith("/features"))
    if not problems and total > limits.sequence_elements:
        problems.append(f"/sequences holds {total} feature values, beyond sane bounds")
    return problems


def _text_problems(objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    """Captions: ids, video ids and embeddings together, as many of each, as wide as the clip vectors."""
    t_ids, t_vids, t_emb = (objects.get(f"/text/{k}") for k in ("ids", "video_ids", "embeddings"))
    if t_ids is None or t_vids is None or t_emb is None:
        return ["/text must hold ids, video_ids and embeddings together"]
    if (t_emb.ndim != 2 or t_emb.dtype not in CLIP_DTYPES or t_ids.shape != (t_emb.shape[0],)
            or t_vids.shape != t_ids.shape or t_emb.shape[0] > limits.items or t_emb.shape[1] > limits.dim
            or h5py.check_string_dtype(t_ids.dtype) is None or h5py.check_string_dtype(t_vids.dtype) is None):
        return [f"/text shapes disagree or are beyond bounds: embeddings {t_emb.shape}"]
    if t_emb.shape[1] != objects["/clip"].shape[2]:
        return [f"/text/embeddings are {t_emb.shape[1]} wide but /clip is {objects['/clip'].shape[2]}"]
    return []


def _token_problems(ds: h5py.Dataset, n: int, views: int, limits: Limits) -> list[str]:
    """A token dataset's shape, type, chunking and attributes must agree before one clip of it is read."""
    if ds.ndim != 4 or ds.shape[0] != n or ds.shape[1] != views:
        return [f"/tokens must be (N, V, L, D) with N = {n} and V = {views} as /clip, got {ds.shape}"]
    numeric = [key for key in ("grid", "dim", "layer", "pool", "patch", "tubelet")
               if key in ds.attrs and np.asarray(ds.attrs[key]).dtype.kind not in "iu"]
    if numeric:
        return [f"/tokens attribute '{numeric[0]}' must be an integer (or integers)"]
    try:
        info = TokenInfo.read(ds.attrs)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"/tokens lacks valid attributes (grid, dim, layer, norm, pool, patch, tubelet, dtype): {exc}"]
    _, _, length, dim = ds.shape
    problems = []
    if dim > limits.token_dim:
        problems.append(f"/tokens width {dim} is beyond {limits.token_dim}")
    if info.dtype not in TOKEN_DTYPES or ds.dtype != TOKEN_DTYPES[info.dtype]:
        problems.append(f"/tokens is {ds.dtype} stored as '{info.dtype}'; expected float16, or bfloat16 kept as uint16")
    if info.length != length or info.dim != dim or min(*info.grid, dim) < 1:
        problems.append(f"/tokens grid {info.grid} x {info.dim} disagrees with its shape {ds.shape}")
    if info.norm not in NORMS or min(info.pool) < 1 or min(*info.patch, info.tubelet) < 0:
        problems.append(f"/tokens has impossible norm {info.norm!r}, pool {info.pool}, patch {info.patch} or "
                        f"tubelet {info.tubelet}")
    per_clip = views * length * dim
    if per_clip > limits.token_clip_elements or n * per_clip > limits.token_elements:
        problems.append(f"/tokens shape {ds.shape} is beyond sane bounds")
    if n and ds.chunks != (1, views, length, dim):
        problems.append(f"/tokens is stored {'in chunks ' + str(ds.chunks) if ds.chunks else 'contiguously'}; it must "
                        f"hold one clip per chunk {(1, views, length, dim)}")
    return problems


def _scoring_bytes(objects: dict[str, h5py.Dataset]) -> int:
    """What scoring holds of a file at once at most, as float32: every video vector, one block of clip rows as it
    reads them, the largest video's dense maps and feature sequence (with its windows and times) and every caption
    embedding."""
    n, views, dim = objects["/clip"].shape
    dense = max((ds.size for path, ds in objects.items() if path.startswith("/dense/")), default=0)
    sequence = max((ds.size + 4 * ds.shape[0] for path, ds in objects.items()
                    if path.startswith("/sequences/") and path.endswith("/features")), default=0)
    text = objects["/text/embeddings"].size if "/text/embeddings" in objects else 0
    return 4 * (n * dim + min(n, SCORING_ROWS) * views * dim + dense + sequence + text)


def _size_problems(f: h5py.File, objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    """Every dataset counted uncompressed: within `data_bytes`, within `expansion` times the file's own size, and
    what scoring would hold of it within `memory`."""
    data = sum(_stored_bytes(ds) for ds in objects.values())
    if data > limits.data_bytes:
        return [f"its datasets hold {data} bytes uncompressed, more than the {limits.data_bytes} accepted"]
    budget = _expansion_budget(f.filename, limits)
    if data > budget:
        return [f"its datasets hold {data} bytes uncompressed in a file that occupies {_occupied_bytes(f.filename)} "
                f"(more than {limits.expansion} times: compressed or sparse filler)"]
    held = _scoring_bytes(objects)
    if held > limits.memory:
        return [f"scoring it would hold {held} bytes at once (video vectors, a block of clips, a video's dense maps "
                f"and feature sequence, captions as float32), more than {limits.memory}"]
    return []


def bounded_strings(ds: h5py.Dataset, limits: Limits) -> list[str]:
    """A string dataset read in blocks; raises StoreError for a string that is not UTF-8 or longer than
    `Limits.string_chars`, or strings that together decode to more than the file's expansion budget (many elements
    can point at one long string)."""
    budget = _expansion_budget(ds.file.filename, limits)
    out, total = [], 0
    for rows in row_blocks(ds):
        for raw in ds[rows]:
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                raise StoreError(f"{ds.name} holds a string that is not UTF-8") from None
            if len(text) > limits.string_chars:
                raise StoreError(f"{ds.name} holds a string of {len(text)} characters (at most {limits.string_chars})")
            total += len(text)
            out.append(text)
        if total > budget:
            raise StoreError(f"{ds.name} decodes to more than {budget} bytes of strings, more than the file can hold")
    return out


def token_row_problem(row: np.ndarray, vid: str) -> str | None:
    """Why one clip's stored tokens (float16, or bfloat16 bits as uint16) cannot be trusted, or None: checked on the
    16-bit values themselves (a bfloat16 is infinite or NaN when its exponent bits are all ones)."""
    finite = np.isfinite(row).all() if row.dtype == np.float16 else not ((row & 0x7F80) == 0x7F80).any()
    return None if finite else f"/tokens has non-finite values for id '{vid}'"


def clip_block_problem(block: np.ndarray, ids: list[str], start: int) -> str | None:
    """Why a block of /clip rows starting at row `start` cannot be trusted (non-finite values), or None."""
    bad = ~np.isfinite(block).all(axis=(1, 2))
    if bad.any():
        return f"/clip has non-finite values for id '{ids[start + int(np.argmax(bad))]}'"
    return None


def _index_block_problem(block: np.ndarray) -> str | None:
    """Why a block of /frame_indices rows cannot be trusted (indices below -1, the padding), or None."""
    return "/frame_indices has negative indices" if (block < -1).any() else None


def dense_problem(maps: np.ndarray, vid: str) -> str | None:
    """Why (part of) one video's dense maps cannot be trusted (non-finite values), or None."""
    return None if np.isfinite(maps).all() else f"/dense/{vid} has non-finite values"


def sequence_problem(vid: str, part: FeatureSequence, before: tuple[np.ndarray, float] | None = None) -> str | None:
    """Why (a block of rows of) one video's sequence cannot be trusted, or None: non-finite features, a window
    [first, last] with first < 0 or first > last, windows or times going backwards, non-finite times. `before` is
    the (window, time) of the row before the block, so that blocks checked in turn check the whole sequence."""
    where = f"/sequences/{shown(vid)}"
    windows, times = np.asarray(part.windows), np.asarray(part.times)
    if before is not None:
        windows, times = np.concatenate([before[0][None], windows]), np.concatenate([[before[1]], times])
    if not np.isfinite(part.features).all():
        return f"{where} has non-finite features"
    if (windows[:, 0] < 0).any() or (windows[:, 0] > windows[:, 1]).any():
        return f"{where} has a window [first, last] with first < 0 or first > last"
    if (np.diff(windows, axis=0) < 0).any():
        return f"{where} has windows going backwards"
    if not np.isfinite(times).all():
        return f"{where} has non-finite times"
    if (np.diff(times) < 0).any():
        return f"{where} has times going backwards"
    return None


def _stored_sequence_problem(group: h5py.Group, vid: str) -> str | None:
    """`sequence_problem` of one stored sequence, read in blocks of rows."""
    arrays = [group[vid][name] for name in SEQUENCE_OBJECTS]
    before = None
    for rows in row_blocks(*arrays):
        block = FeatureSequence(*(ds[rows] for ds in arrays))
        problem = sequence_problem(vid, block, before)
        if problem:
            return problem
        before = (block.windows[-1], float(block.times[-1]))
    return None


def _sequence_id_problems(f: h5py.File, ids: list[str]) -> list[str]:
    """The ids of /sequences must be exactly the file's ids."""
    held = set(f["sequences"])
    stray, missing = sorted(held - set(ids)), sorted(set(ids) - held)
    if stray:
        return [f"/sequences/{shown(stray[0])} is not an embedded id"]
    return [f"id {shown(missing[0])} has no sequence in /sequences"] if missing else []


def _order_problems(ids: list[str], failures: list[tuple[str, str]]) -> list[str]:
    """Ids unique and sorted; failed ids unique and not also embedded."""
    problems = []
    if any(a >= b for a, b in itertools.pairwise(ids)):
        dup = next((a for a, b in itertools.pairwise(ids) if a == b), None)
        problems.append(f"/ids has a duplicate id '{dup}'" if dup is not None else "/ids are not sorted")
    failed = [vid for vid, _ in failures]
    overlap = sorted(set(failed) & set(ids))
    if overlap:
        problems.append(f"id '{overlap[0]}' is both embedded and listed as failed")
    if len(set(failed)) != len(failed):
        problems.append("/failures/ids has duplicates")
    return problems


def _checked_failures(f: h5py.File, limits: Limits) -> list[tuple[str, str]]:
    """The (id, reason) pairs of /failures, read with `bounded_strings`."""
    return list(zip(bounded_strings(f["failures/ids"], limits), bounded_strings(f["failures/errors"], limits),
                    strict=True))


def _caption_problems(f: h5py.File, limits: Limits, known: set[str]) -> list[str]:
    """Caption ids bounded, embeddings finite, every caption of a `known` video (embedded or failed)."""
    bounded_strings(f["text/ids"], limits)
    video_ids = bounded_strings(f["text/video_ids"], limits)
    if not np.isfinite(read_text(f).embeddings).all():
        return ["/text/embeddings has non-finite values"]
    unknown = sorted(set(video_ids) - known)
    return [f"/text/video_ids names unknown video '{unknown[0]}'"] if unknown else []


def _block_problems(f: h5py.File, ids: list[str], check_clip: bool) -> list[str]:
    """Clip vectors (if `check_clip`) and frame indices, block by block; the first problem of each."""
    problems = []
    for rows in row_blocks(f["clip"]) if check_clip else ():
        problem = clip_block_problem(f["clip"][rows], ids, rows.start)
        if problem:
            problems.append(problem)
            break
    for rows in row_blocks(f["frame_indices"]):
        problem = _index_block_problem(f["frame_indices"][rows])
        if problem:
            problems.append(problem)
            break
    return problems


def _lazy_problems(f: h5py.File, ids: list[str]) -> list[str]:
    """Token features clip by clip, dense maps frame by frame and sequences block by block (the groups a reader
    checks as it reads them)."""
    for row, vid in enumerate(ids if "tokens" in f else ()):
        problem = token_row_problem(f["tokens"][row], vid)
        if problem:
            return [problem]
    for vid in sorted(f["dense"]):
        ds = f["dense"][vid]
        for t in range(ds.shape[0]):
            problem = dense_problem(ds[t], vid)
            if problem:
                return [problem]
    for vid in ids if "sequences" in f else ():
        problem = _stored_sequence_problem(f["sequences"], vid)
        if problem:
            return [problem]
    return []


def value_problems(f: h5py.File, limits: Limits = Limits(), check_clip: bool = True,
                   check_lazy: bool = False) -> list[str]:
    """Unique sorted ids, finite values, sane frame indices, consistent failures, dense maps and captions, strings
    within bounds; read in blocks. `check_clip=False` leaves /clip to a caller that checks its blocks as it copies
    them. Token features, dense maps and feature sequences, the largest groups, are checked as a reader reads them
    (clip by clip, video by video), and here only if `check_lazy`."""
    try:
        ids = bounded_strings(f["ids"], limits)
        failures = _checked_failures(f, limits)
        problems = _order_problems(ids, failures) + _block_problems(f, ids, check_clip)
        stray = sorted(set(f["dense"]) - set(ids))
        if stray:
            problems.append(f"/dense/{stray[0]} is not an embedded id")
        if "sequences" in f:
            problems += _sequence_id_problems(f, ids)
        if "text" in f:
            problems += _caption_problems(f, limits, set(ids) | {vid for vid, _ in failures})
    except StoreError as exc:
        return [str(exc)]
    return problems + (_lazy_problems(f, ids) if check_lazy and not problems else [])


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, with a one-line error for a missing, empty, foreign or truncated file."""
    if not path.exists():
        raise StoreError(f"{path}: file not found")
    if not path.is_file():
        raise StoreError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise StoreError(f"{path}: file is empty (0 bytes)")
    if not h5py.is_hdf5(str(path)):
        raise StoreError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot be opened as HDF5, truncated or corrupt ({str(exc).splitlines()[0]})") from None


READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def unreadable(exc: Exception) -> str:
    """The one-line problem for an error h5py raised while reading a file."""
    return f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def file_problems(path: str | Path, limits: Limits = Limits(), check_values: bool = True,
                  check_lazy: bool = True) -> list[str]:
    """Every problem with an embedding file, one printable line each, prefixed with the path (token features and
    dense maps too unless not `check_lazy`). Run it on a file we did not write in the sandbox (`store.sandbox`):
    HDF5 itself may crash or hang on one."""
    path = Path(path)
    try:
        f = open_h5(path)
    except StoreError as exc:
        return [one_line(str(exc))]
    try:
        problems = structure_problems(f, limits)
        if not problems and check_values:
            problems = value_problems(f, limits, check_lazy=check_lazy)
    except READ_ERRORS as exc:
        problems = [unreadable(exc)]
    finally:
        f.close()
    return [one_line(f"{path}: {p}") for p in problems]
