"""Validation of embedding files we did not write: structure and bounds before any data is read, then values.

A crafted HDF5 file can make a reader return the bytes of any local file (external
storage, external links, virtual datasets) or allocate without bound (lying shapes),
so nothing is followed or read until the layout is known to be ours.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError
from ..protocol import NORMS
from .layout import (
    ALLOWED_FILTERS,
    CLIP_DTYPES,
    FAILURE_OBJECTS,
    FORMAT,
    MAX_ATTRIBUTE_BYTES,
    ROOT_OBJECTS,
    SCHEMA_VERSION,
    TEXT_OBJECTS,
    TOKEN_DTYPES,
    Header,
    Limits,
    TokenInfo,
    read_failures,
    read_strings,
    read_text,
)

CHUNK_ROWS = 4096


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


def _allowed(path: str, obj: object) -> bool:
    top, parent, leaf = path.split("/")[1], path.rsplit("/", 1)[0], path.split("/")[-1]
    return top in ROOT_OBJECTS and (parent == "" or (parent == "/dense" and isinstance(obj, h5py.Dataset))
                                    or (parent == "/text" and leaf in TEXT_OBJECTS)
                                    or (parent == "/failures" and leaf in FAILURE_OBJECTS))


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
        if not _allowed(path, obj):
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
    return _shape_problems(objects, limits)


def _shape_problems(objects: dict[str, h5py.Dataset], limits: Limits) -> list[str]:
    problems = []
    ids, clip, index = objects["/ids"], objects["/clip"], objects["/frame_indices"]
    if ids.ndim != 1 or ids.dtype.kind != "O" or h5py.check_string_dtype(ids.dtype) is None:
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
    if "/tokens" in objects:
        problems += _token_problems(objects["/tokens"], n, views, limits)
    if "/text/embeddings" in objects or "/text/ids" in objects or "/text/video_ids" in objects:
        t_ids, t_vids, t_emb = (objects.get(f"/text/{k}") for k in ("ids", "video_ids", "embeddings"))
        if t_ids is None or t_vids is None or t_emb is None:
            problems.append("/text must hold ids, video_ids and embeddings together")
        elif (t_emb.ndim != 2 or t_emb.dtype not in CLIP_DTYPES or t_ids.shape != (t_emb.shape[0],)
              or t_vids.shape != t_ids.shape or t_emb.shape[0] > limits.items or t_emb.shape[1] > limits.dim):
            problems.append(f"/text shapes disagree or are beyond bounds: embeddings {t_emb.shape}")
    return problems


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
    if not n:
        return problems
    if ds.chunks != (1, views, length, dim):
        problems.append(f"/tokens is stored {'in chunks ' + str(ds.chunks) if ds.chunks else 'contiguously'}; it must "
                        f"hold one clip per chunk {(1, views, length, dim)}")
    elif ds.id.get_num_chunks() != n:
        problems.append(f"/tokens has {ds.id.get_num_chunks()} of its {n} clips written (unwritten clips would read as "
                        "zeros)")
    return problems


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


def value_problems(f: h5py.File, check_clip: bool = True, check_tokens: bool = False) -> list[str]:
    """Unique sorted ids, finite values, sane frame indices, consistent failures, dense maps and captions; read in
    chunks. `check_clip=False` leaves /clip to a caller that checks its blocks as it copies them. Token features,
    the largest group by far, are checked clip by clip when a reader reads them, and here only if `check_tokens`."""
    problems = []
    ids = read_strings(f["ids"])
    if any(a >= b for a, b in itertools.pairwise(ids)):
        dup = next((a for a, b in itertools.pairwise(ids) if a == b), None)
        problems.append(f"/ids has a duplicate id '{dup}'" if dup is not None else "/ids are not sorted")
    clip = f["clip"]
    for start in range(0, clip.shape[0] if check_clip else 0, CHUNK_ROWS):
        problem = clip_block_problem(clip[start:start + CHUNK_ROWS], ids, start)
        if problem:
            problems.append(problem)
            break
    if check_tokens and "tokens" in f:
        for row, vid in enumerate(ids):
            problem = token_row_problem(f["tokens"][row], vid)
            if problem:
                problems.append(problem)
                break
    index = f["frame_indices"]
    for start in range(0, index.shape[0], CHUNK_ROWS):
        if (index[start:start + CHUNK_ROWS] < -1).any():
            problems.append("/frame_indices has negative indices")
            break
    failed = [vid for vid, _ in read_failures(f)]
    overlap = sorted(set(failed) & set(ids))
    if overlap:
        problems.append(f"id '{overlap[0]}' is both embedded and listed as failed")
    if len(set(failed)) != len(failed):
        problems.append("/failures/ids has duplicates")
    stray = sorted(set(f["dense"]) - set(ids))
    if stray:
        problems.append(f"/dense/{stray[0]} is not an embedded id")
    if "text" in f:
        text = read_text(f)
        if not np.isfinite(text.embeddings).all():
            problems.append("/text/embeddings has non-finite values")
        unknown = sorted(set(text.video_ids) - set(ids) - set(failed))
        if unknown:
            problems.append(f"/text/video_ids names unknown video '{unknown[0]}'")
    return problems


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only, with a one-line error for a missing, empty, foreign or truncated file."""
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


READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)


def unreadable(exc: Exception) -> str:
    """The one-line problem for an error h5py raised while reading a file."""
    return f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def file_problems(path: str | Path, limits: Limits = Limits(), check_values: bool = True) -> list[str]:
    """Every problem with an embedding file, one line each, prefixed with the path (token features included)."""
    path = Path(path)
    try:
        f = open_h5(path)
    except StoreError as exc:
        return [str(exc)]
    try:
        problems = structure_problems(f, limits)
        if not problems and check_values:
            problems = value_problems(f, check_tokens=True)
    except READ_ERRORS as exc:
        problems = [unreadable(exc)]
    finally:
        f.close()
    return [f"{path}: {p}" for p in problems]
