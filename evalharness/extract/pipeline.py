"""Manifest x protocol x backbone -> part files -> one embedding file.

Clips are decoded one at a time in DataLoader workers (memory bounded by the clips in
flight, not by the chunk); the main process runs the forward passes, `batch_size`
clip views at a time, and writes a part when a chunk's clips are all in. A card of sliding
frames streams each whole video instead (`video.read_snippets`, in the main process, one
window of frames held at a time) and embeds its snippets `batch_size` views at a time, a
video's snippets spilled to the parts folder as their features come. A chunk's
forward batches never cross its boundary, so a resumed or sharded run with the same
batch size feeds the model exactly the batches of one uninterrupted run. A clip that
cannot be decoded is recorded with its reason and the run goes on. A run holds its
shard's lock in the parts folder from start to end (`shard_lock`), so the same shard
(or one of another count) started meanwhile is refused with the name of the first.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..backbones import Backbone, build_backbone
from ..datasets import Item, Manifest, resolve_manifest
from ..environment import environment
from ..errors import DecodeError, HarnessError, OtherRunError, TooLargeError
from ..locking import locked, run_lock, running
from ..progress import bar
from ..protocol import Protocol, Task, Tokens
from ..sampling import frame_indices
from ..store import (
    TEXT_PART,
    Chunk,
    DenseMaps,
    EmbeddingFile,
    FeatureSequence,
    Header,
    LazyMap,
    TextEmbeddings,
    TokenInfo,
    check_parts,
    finalize,
    part_failures,
    part_path,
    read_parts,
    write_part,
    write_text_part,
)
from ..untrusted import check_name, shown
from ..version import __version__
from ..video import Snippet, make_views, normalization, read_sampled, read_snippets
from .chunks import chunk_plan, chunk_size_for, shard_chunks

AUTOCAST = ("none", "bfloat16", "float16")


@dataclass(frozen=True)
class ExtractConfig:
    """How to run an extraction. `batch_size` (clip views per forward pass) may change between resumed runs;
    `chunk_size` (clips per part file) is fixed per output file: None takes the unfinished run's, or the default.
    Token features are stored as `token_dtype`; a card whose token features would take more than `max_size` bytes
    is refused before anything is decoded. With a card of sliding frames, videos are decoded in the main process
    with `workers` decoder threads (0: FFmpeg's choice)."""

    batch_size: int = 16
    chunk_size: int | None = None
    workers: int = 2
    device: str = "cpu"
    shard: tuple[int, int] = (0, 1)
    dtype: str = "float32"
    autocast: str = "none"
    token_dtype: str = "float16"
    max_size: int = 50 << 30
    retry_failures: bool = False
    keep_parts: bool = False
    quiet: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        index, count = self.shard
        if not 0 <= index < count:
            raise HarnessError(f"shard {index}/{count}: need 0 <= i < N")
        if self.batch_size < 1:
            raise HarnessError(f"batch size must be at least 1, got {self.batch_size}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise HarnessError(f"chunk size must be at least 1, got {self.chunk_size}")
        if self.autocast not in AUTOCAST:
            raise HarnessError(f"autocast {self.autocast}: choose one of {', '.join(AUTOCAST)}")
        if self.dtype not in ("float32", "float16"):
            raise HarnessError(f"stored dtype {self.dtype}: choose float32 or float16")
        if self.token_dtype not in ("float16", "bfloat16"):
            raise HarnessError(f"token dtype {self.token_dtype}: choose float16 or bfloat16")
        check_name(self.name, "display name", "extract", empty=True)

    @property
    def numpy_dtype(self) -> type:
        """The type the vectors are stored in."""
        return np.float16 if self.dtype == "float16" else np.float32


@dataclass
class ExtractSummary:
    out: Path
    embedded: int = 0
    resumed_chunks: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    finalized: bool = False

    @property
    def clips_per_second(self) -> float:
        return (self.embedded + len(self.failures)) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Sample:
    id: str
    views: torch.Tensor | None = None
    indices: np.ndarray | None = None
    error: str | None = None


class ClipDataset(Dataset):
    """Decodes and transforms one clip per item in a worker; failures come back as data, never as exceptions."""

    def __init__(self, items: list[Item], protocol: Protocol, mean: torch.Tensor, std: torch.Tensor, threads: int):
        self.items, self.protocol, self.mean, self.std, self.threads = items, protocol, mean, std, threads

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = self.items[index]
        p = self.protocol
        try:
            _, indices, frames = read_sampled(item.path, lambda n: frame_indices(p.frames, p.views.temporal, n), self.threads)
            views = make_views(indices, frames, p.transform, p.views.spatial, self.mean, self.std)
            return Sample(item.id, views, indices)
        except Exception as exc:  # a broken file must not end a long run: record it and go on
            return Sample(item.id, error=failure_reason(item, exc))


def failure_reason(item: Item, exc: Exception) -> str:
    """What a video that could not be decoded is recorded with: a DecodeError's own line (it names the file), else the
    file, the exception's type and message."""
    return str(exc) if isinstance(exc, DecodeError) else f"{item.path}: {type(exc).__name__}: {exc}"


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _as_is(sample: Sample) -> Sample:
    return sample


def clip_loader(items: list[Item], protocol: Protocol, backbone: Backbone, order: list[int], workers: int) -> DataLoader:
    """Decoded, transformed clips of the items at `order`, one at a time, in that order, decoded in `workers`
    processes (at most two clips ahead per worker)."""
    mean, std = normalization(protocol.transform, backbone.input.mean, backbone.input.std)
    dataset = ClipDataset(items, protocol, mean, std, threads=1 if workers > 0 else 0)
    return DataLoader(dataset, batch_size=None, sampler=order, num_workers=workers, collate_fn=_as_is,
                      worker_init_fn=_worker_init)


def sliding(protocol: Protocol) -> bool:
    """Whether a card feeds each whole video as sliding snippets (a feature sequence per video) rather than clips."""
    return protocol.frames.sampling == "sliding"


def check_compatible(backbone: Backbone, protocol: Protocol) -> None:
    """A card that feeds a model frames or sizes it cannot take is an error before any work starts."""
    want = backbone.input
    if want.frames is not None and protocol.frames.count != want.frames:
        raise HarnessError(f"model {backbone.name} takes {want.frames} frames per clip but protocol {protocol.name} feeds "
                           f"{protocol.frames.count if protocol.frames.count else 'all'}")
    if want.size is not None and protocol.transform.crop != want.size:
        raise HarnessError(f"model {backbone.name} takes {want.size}x{want.size} crops but protocol {protocol.name} "
                           f"crops {protocol.transform.crop}")
    if protocol.task == Task.TEXT_RETRIEVAL and not backbone.has_text:
        raise HarnessError(f"model {backbone.name} has no text tower, which protocol {protocol.name} needs")
    if protocol.task == Task.LABEL_PROPAGATION and backbone.dense_stride is None:
        raise HarnessError(f"model {backbone.name} has no dense feature maps, which protocol {protocol.name} needs")
    if sliding(protocol) and (protocol.tokens is not None or protocol.task == Task.LABEL_PROPAGATION):
        raise HarnessError(f"protocol {protocol.name}: sliding frames give one feature per snippet; token features and "
                           "dense maps per snippet are not extracted")
    if protocol.tokens is not None and not backbone.has_tokens:
        raise HarnessError(f"model {backbone.name} gives no token features, which protocol {protocol.name} asks for "
                           "(features.tokens)")


def check_ids(manifest: Manifest, protocol: Protocol) -> None:
    """Ids that name a group of the file (a video's dense maps or feature sequence) must each be one HDF5 link name
    (no '/', not '.'), refused before any decoding rather than when the first part is written."""
    if not (sliding(protocol) or protocol.task == Task.LABEL_PROPAGATION):
        return
    bad = next((vid for vid in manifest.ids if "/" in vid or vid == "."), None)
    if bad is not None:
        raise HarnessError(f"manifest id {shown(bad)} cannot name its video's group in the embedding file (protocol "
                           f"{protocol.name} stores one per video): ids may not contain '/' or be '.'")


def autocast(cfg: ExtractConfig) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward passes when asked for (meant for GPUs; recorded in the file)."""
    if cfg.autocast == "none":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(cfg.device).type, dtype=getattr(torch, cfg.autocast))


def dry_run(backbone: Backbone, protocol: Protocol, cfg: ExtractConfig) -> TokenInfo | None:
    """One blank clip through the model before any decoding, so a card the model cannot take fails at once; returns
    what its token features will be, when the card asks for them."""
    count, crop = protocol.frames.count, protocol.transform.crop
    if count is None or crop is None:
        return None
    clip = torch.zeros(1, count, 3, crop, crop, device=torch.device(cfg.device))
    spec = protocol.tokens
    try:
        with torch.inference_mode(), autocast(cfg):
            if spec is None:
                backbone.embed(clip)
                return None
            _, tokens = backbone.encode(clip, spec.layer, spec.norm)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        what = f"give token features (layer {spec.layer}, {spec.norm} the final norm) of" if spec else "take"
        raise HarnessError(f"model {backbone.name} cannot {what} clips of {count} frames at {crop}x{crop} "
                           f"(protocol {protocol.name}): {type(exc).__name__}: {reason}") from None
    grid = tuple(tokens.shape[1:4])
    if any(g % p for g, p in zip(grid, spec.pool, strict=True)):
        raise HarnessError(f"protocol {protocol.name}: features.tokens.pool {list(spec.pool)} does not divide the token "
                           f"grid {list(grid)} of model {backbone.name}")
    return TokenInfo(tuple(g // p for g, p in zip(grid, spec.pool, strict=True)), int(tokens.shape[-1]), spec.layer,
                     spec.norm, spec.pool, backbone.token_patch, backbone.token_tubelet, cfg.token_dtype)


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def projected_bytes(info: TokenInfo | None, clips: int, views: int) -> int:
    """Bytes the token features of `clips` clips take in the file (16 bits a value)."""
    return 0 if info is None else clips * views * info.length * info.dim * 2


def make_header(backbone: Backbone, protocol: Protocol, manifest: Manifest, cfg: ExtractConfig) -> Header:
    return Header(
        model=backbone.name,
        model_revision=backbone.revision,
        weights_sha256=backbone.weights_sha256,
        model_config=json.dumps(backbone.config(), sort_keys=True),
        protocol=protocol.name,
        protocol_version=protocol.version,
        extraction_hash=protocol.extraction_hash,
        protocol_json=json.dumps(protocol.to_dict(), sort_keys=True),
        manifest_hash=manifest.hash,
        harness_version=__version__,
        environment=json.dumps(environment(cfg.device, cfg.dtype, batch_size=cfg.batch_size, autocast=cfg.autocast),
                               sort_keys=True),
        name=cfg.name,
    )


def parts_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def pool_tokens(tokens: torch.Tensor, pool: tuple[int, int, int]) -> torch.Tensor:
    """(B, t, h, w, D) -> (B, L, D): the card's fixed average pooling of the token grid, then flattened t-major."""
    if pool != (1, 1, 1):
        tokens = F.avg_pool3d(tokens.permute(0, 4, 1, 2, 3), pool, pool).permute(0, 2, 3, 4, 1)
    return tokens.flatten(1, 3)


class _Batcher:
    """Clip views queued for the model and cut into forward passes of `size` views (a change of view shape, the
    frame count with sampling 'all', flushes the queue first); each clip's outputs are handed to `done` as soon as
    all its views have been through the model, so a chunk's token features never sit in memory together."""

    def __init__(self, backbone: Backbone, size: int, device: torch.device, tokens: Tokens | None,
                 done: Callable[[int, torch.Tensor, torch.Tensor | None], None]):
        self.backbone, self.size, self.device, self.tokens, self.done = backbone, size, device, tokens, done
        self.queue: list[torch.Tensor] = []
        self.waiting: list[tuple[int, int]] = []  # (clip number, views) in queue order
        self.vectors: list[torch.Tensor] = []
        self.token_rows: list[torch.Tensor] = []

    def _forward(self, views: torch.Tensor) -> None:
        for start in range(0, views.shape[0], self.size):
            batch = views[start:start + self.size].to(self.device)
            if self.tokens is None:
                self.vectors.append(self.backbone.embed(batch).float().cpu())
            else:
                if self.tokens.clip == "token_mean":
                    tokens = self.backbone.tokens(batch, self.tokens.layer, self.tokens.norm)
                    vectors = tokens.float().flatten(1, 3).mean(1)
                else:
                    vectors, tokens = self.backbone.encode(batch, self.tokens.layer, self.tokens.norm)
                self.vectors.append(vectors.float().cpu())
                self.token_rows.append(pool_tokens(tokens.float(), self.tokens.pool).cpu())
        self._hand_over()

    def _hand_over(self) -> None:
        have = sum(v.shape[0] for v in self.vectors)
        while self.waiting and have >= self.waiting[0][1]:
            number, count = self.waiting.pop(0)
            vectors = torch.cat(self.vectors)
            self.vectors = [vectors[count:]]
            tokens = None
            if self.tokens is not None:
                rows = torch.cat(self.token_rows)
                tokens, self.token_rows = rows[:count], [rows[count:]]
            self.done(number, vectors[:count], tokens)
            have -= count

    def add(self, number: int, views: torch.Tensor) -> None:
        if self.queue and self.queue[0].shape[1:] != views.shape[1:]:
            self.flush()
        self.queue.append(views)
        self.waiting.append((number, views.shape[0]))
        queued = sum(v.shape[0] for v in self.queue)
        if queued >= self.size:
            whole = torch.cat(self.queue)
            cut = queued - queued % self.size
            self._forward(whole[:cut])
            self.queue = [whole[cut:]] if cut < queued else []

    def flush(self) -> None:
        """Embed what is queued and hand over every clip."""
        if self.queue:
            self._forward(torch.cat(self.queue))
            self.queue = []


SPILL_PREFIX = ".spill-"


def _embed_chunk(backbone: Backbone, samples: Iterator[Sample], count: int, protocol: Protocol, cfg: ExtractConfig,
                 spill: Path, progress) -> Chunk:
    """Embed the next `count` samples (one chunk) as they arrive; returns the chunk's part content. Dense maps and
    token features are parked in `spill` as they are made, so memory holds one clip's, not a chunk's."""
    device = torch.device(cfg.device)
    good, failures, geometry, vectors = [], [], {}, {}
    spill.mkdir(exist_ok=True)

    def done(number: int, clip_vectors: torch.Tensor, tokens: torch.Tensor | None) -> None:
        vectors[number] = clip_vectors
        if tokens is not None:
            np.save(spill / f"tokens-{number}.npy", tokens.numpy())

    batcher = _Batcher(backbone, cfg.batch_size, device, protocol.tokens, done)
    with torch.inference_mode(), autocast(cfg):
        for _ in range(count):
            s = next(samples)
            if s.error is not None:
                failures.append((s.id, s.error))
            else:
                number = len(good)
                good.append((s.id, s.indices))
                batcher.add(number, s.views)
                if protocol.task == Task.LABEL_PROPAGATION:
                    maps = backbone.dense(s.views[0].to(device)).float().cpu().numpy().astype(np.float16)
                    np.save(spill / f"dense-{number}.npy", maps)
                    geometry[s.id] = (backbone.dense_stride, tuple(s.views.shape[-2:]))
            progress.update(1)
        batcher.flush()
    if not good:
        return _failed_chunk(protocol, cfg, failures)
    ids = [vid for vid, _ in good]
    k = max(indices.shape[1] for _, indices in good)
    index = np.full((len(good), protocol.views.temporal, k), -1, dtype=np.int32)
    for row, (_, indices) in enumerate(good):
        index[row, :, :indices.shape[1]] = indices
    clip = torch.stack([vectors[i] for i in range(len(good))]).numpy().astype(cfg.numpy_dtype)
    dense = LazyMap(list(geometry), lambda vid: DenseMaps(np.load(spill / f"dense-{ids.index(vid)}.npy", mmap_mode="r"),
                                                          *geometry[vid]))
    tokens = (LazyMap(ids, lambda vid: np.load(spill / f"tokens-{ids.index(vid)}.npy", mmap_mode="r"))
              if protocol.tokens is not None else {})
    return Chunk(ids, clip, index, dense, failures, tokens)


def _failed_chunk(protocol: Protocol, cfg: ExtractConfig, failures: list[tuple[str, str]]) -> Chunk:
    """The part content of a chunk none of whose videos could be embedded."""
    return Chunk([], np.zeros((0, protocol.views.total, 0), cfg.numpy_dtype),
                 np.zeros((0, protocol.views.temporal, 0), np.int32), failures=failures)


class _SpilledRows:
    """The rows of a raw spill file, read a slice at a time like an array's (so the part writer copies a long video's
    sequence in blocks)."""

    def __init__(self, path: Path, dtype: type, row: tuple[int, ...]):
        self.path, self.dtype, self.row = path, np.dtype(dtype), row
        self.row_bytes = self.dtype.itemsize * int(np.prod(row, dtype=np.int64))
        self.shape = (path.stat().st_size // self.row_bytes, *row)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        with open(self.path, "rb") as handle:
            handle.seek(start * self.row_bytes)
            values = np.fromfile(handle, self.dtype, (stop - start) * self.row_bytes // self.dtype.itemsize)
        return values.reshape(-1, *self.row)


class _Spill:
    """One video's feature sequence as its snippets come out of the model, appended to raw files in `folder` (the
    feature in the stored type, the window, the centre time), with the running float64 sum of its view vectors for
    its /clip row; `error` says why the video failed, if it did."""

    NAMES = tuple(f.name for f in fields(FeatureSequence))

    def __init__(self, vid: str, folder: Path, dtype: type):
        self.id, self.folder, self.dtype = vid, folder, dtype
        self.error: str | None = None
        self.total: np.ndarray | None = None
        self.count, self.dim, self.frames = 0, 0, (0, 0)
        folder.mkdir()

    def append(self, vectors: torch.Tensor, window: tuple[int, int], centre: float) -> None:
        """Add the next snippet: its view vectors (V, D), whose mean over views is its feature."""
        views = vectors.numpy().astype(np.float64)
        self.total = views if self.total is None else self.total + views
        self.count, self.dim = self.count + 1, views.shape[1]
        self.frames = (window[0] if self.count == 1 else self.frames[0], window[1])
        rows = (vectors.mean(0).numpy().astype(self.dtype), np.array(window, np.int32), np.array([centre], np.float64))
        for name, row in zip(self.NAMES, rows, strict=True):
            with open(self.folder / name, "ab") as handle:
                handle.write(row.tobytes())

    def clip(self) -> np.ndarray:
        """The /clip row (V, D): each view's vector averaged over the snippets, as float32."""
        return (self.total / self.count).astype(np.float32)

    def sequence(self) -> FeatureSequence:
        """The spilled sequence, read a block of rows at a time."""
        rows = ((self.dtype, (self.dim,)), (np.int32, (2,)), (np.float64, ()))
        return FeatureSequence(*(_SpilledRows(self.folder / name, dtype, row)
                                 for name, (dtype, row) in zip(self.NAMES, rows, strict=True)))


def _decoded(item: Item, protocol: Protocol, mean: torch.Tensor, std: torch.Tensor, threads: int,
             video: _Spill) -> Iterator[tuple[Snippet, torch.Tensor]]:
    """A video's snippets with their views (S, count, 3, h, w), as they decode; a failure ends them, recorded in
    `video.error` (a broken file must not end a long run)."""
    p = protocol
    try:
        for snippet in read_snippets(item.path, p.frames, threads):
            yield snippet, make_views(snippet.indices[None], snippet.frames, p.transform, p.views.spatial, mean, std)
    except Exception as exc:
        video.error = failure_reason(item, exc)


def _embed_sequence_chunk(backbone: Backbone, items: Iterator[Item], count: int, protocol: Protocol,
                          cfg: ExtractConfig, spill: Path, progress) -> Chunk:
    """Embed the next `count` videos (one chunk) of a sliding card snippet by snippet as they decode: forward passes
    of `batch_size` views (a video's snippets may span passes, a pass several videos), each snippet's feature spilled
    to its video's files in `spill`, so memory holds a pass and one window of frames, never a video's sequence."""
    mean, std = normalization(protocol.transform, backbone.input.mean, backbone.input.std)
    spill.mkdir(exist_ok=True)
    videos: list[_Spill] = []
    failures: list[tuple[str, str]] = []
    pending: dict[int, tuple[_Spill, tuple[int, int], float]] = {}

    def done(number: int, vectors: torch.Tensor, _: None) -> None:
        video, window, centre = pending.pop(number)
        if video.error is None:
            video.append(vectors, window, centre)

    batcher = _Batcher(backbone, cfg.batch_size, torch.device(cfg.device), None, done)
    numbers = itertools.count()
    with torch.inference_mode(), autocast(cfg):
        for position in range(count):
            item = next(items)
            video = _Spill(item.id, spill / f"sequence-{position}", cfg.numpy_dtype)
            for snippet, views in _decoded(item, protocol, mean, std, cfg.workers, video):
                number = next(numbers)
                pending[number] = (video, snippet.window, snippet.centre)
                batcher.add(number, views)
            if video.error is None:
                videos.append(video)
            else:
                failures.append((item.id, video.error))
            progress.update(1)
        batcher.flush()
    if not videos:
        return _failed_chunk(protocol, cfg, failures)
    ids = [video.id for video in videos]
    clip = np.stack([video.clip() for video in videos]).astype(cfg.numpy_dtype)
    index = np.array([[video.frames] for video in videos], dtype=np.int32)
    by_id = dict(zip(ids, videos, strict=True))
    return Chunk(ids, clip, index, failures=failures, sequences=LazyMap(ids, lambda vid: by_id[vid].sequence()))


def _embed_captions(backbone: Backbone, manifest: Manifest, parts_dir: Path, header: Header, cfg: ExtractConfig) -> None:
    """Embed every caption of the manifest; caption k of video v gets the id `v#k`."""
    rows = [(f"{vid}#{k}", vid, text) for vid in sorted(manifest.captions) for k, text in enumerate(manifest.captions[vid])]
    if not rows:
        raise HarnessError("the protocol is text-retrieval but the manifest has no captions")
    vectors = []
    with torch.inference_mode(), autocast(cfg):
        for start in range(0, len(rows), cfg.batch_size):
            vectors.append(backbone.embed_text([r[2] for r in rows[start:start + cfg.batch_size]]).float().cpu())
    write_text_part(parts_dir, header, TextEmbeddings([r[0] for r in rows], [r[1] for r in rows],
                                                      torch.cat(vectors).numpy().astype(cfg.numpy_dtype)))


def finalize_when_complete(parts_dir: Path, chunks_total: int, out: Path) -> bool:
    """Join the parts into `out` once every chunk is done; of shards sharing a disk, the last to finish does it."""
    with locked(parts_dir):
        if out.exists():
            return True
        if len(read_parts(parts_dir)) < chunks_total:
            return False
        finalize([parts_dir], out)
        return True


def remove_parts(parts_dir: Path) -> None:
    """Delete the parts folder of a finished file, unless a run still holds a lock in it (then the last one to let go
    does it), so that no running shard loses the folder it works in."""
    with contextlib.suppress(FileNotFoundError), locked(parts_dir):  # gone already: another shard removed it
        if not running(parts_dir):
            shutil.rmtree(parts_dir)


def shard_lock(parts_dir: Path, shard: tuple[int, int]) -> contextlib.AbstractContextManager[str]:
    """The run lock of shard i/N on a parts folder: refused while a living run holds the same shard, or a shard of
    another count (whose chunks overlap); shards of one count run side by side. Yields a killed holder's record."""
    index, count = shard
    return run_lock(parts_dir, f"shard-{index}-of-{count}", "extract" if count == 1 else f"extract shard {index}/{count}",
                    beside=lambda other: other.endswith(f"-of-{count}"))


def _existing(out: Path, header: Header) -> list[tuple[str, str]]:
    """The failures of a finished file of this very run; a file of another run is an error naming what differs."""
    with EmbeddingFile(out) as existing:
        if header.differences(existing.header):
            raise OtherRunError(f"{out} already holds embeddings of another run (file -> this run: "
                                f"{header.explain(existing.header)})")
        return existing.failures


def _check_size(info: TokenInfo | None, protocol: Protocol, clips: int, cfg: ExtractConfig,
                announce: Callable[[str], None] | None) -> None:
    """Say what the token features will take on disk, and refuse past the configured maximum."""
    size = projected_bytes(info, clips, protocol.views.total)
    if info is None:
        return
    line = (f"token features: {clips} clips x {protocol.views.total} views x {info.length} tokens "
            f"({'x'.join(map(str, info.grid))}) x {info.dim} x 2 bytes = {_gib(size)}")
    if announce is not None:
        announce(line)
    if size > cfg.max_size:
        raise TooLargeError(f"{line}, more than the maximum of {_gib(cfg.max_size)}; raise the maximum or pool "
                           "the token grid (features.tokens.pool)")


def extract(model: str | Backbone, protocol: Protocol, data_root: str | Path, out: str | Path,
            cfg: ExtractConfig = ExtractConfig(), announce: Callable[[str], None] | None = None,
            manifest: Manifest | None = None) -> ExtractSummary:
    """Embed every clip of the card's manifest (or of one shard) into `out`, resuming finished chunks. `announce`
    hears, before any decoding, what the token features will take on disk. `manifest` replaces the one the card
    resolves to under `data_root` (a smoke run's `datasets.limited` subset)."""
    started = time.perf_counter()
    out = Path(out)
    manifest = resolve_manifest(protocol, data_root) if manifest is None else manifest
    backbone = build_backbone(model) if isinstance(model, str) else model
    check_compatible(backbone, protocol)
    check_ids(manifest, protocol)
    backbone = backbone.to(torch.device(cfg.device))
    token_info = dry_run(backbone, protocol, cfg)
    _check_size(token_info, protocol, len(manifest.items), cfg, announce)
    header = make_header(backbone, protocol, manifest, cfg)
    if out.exists():
        return ExtractSummary(out, failures=_existing(out, header), finalized=True, seconds=time.perf_counter() - started)
    parts_dir = parts_dir_for(out)
    with shard_lock(parts_dir, cfg.shard) as killed:
        if killed and announce is not None:
            announce(f"{parts_dir}: taking over the lock of a run that was killed ({killed}); resuming its chunks")
        summary = _extract_locked(backbone, protocol, manifest, header, token_info, out, parts_dir, cfg)
    if summary.finalized and not cfg.keep_parts:
        remove_parts(parts_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def _extract_locked(backbone: Backbone, protocol: Protocol, manifest: Manifest, header: Header,
                    token_info: TokenInfo | None, out: Path, parts_dir: Path, cfg: ExtractConfig) -> ExtractSummary:
    """What `extract` does holding its shard's lock: the shard's missing chunks into parts, then the file once every
    chunk is done."""
    if out.exists():  # finished by another run while this one started
        return ExtractSummary(out, failures=_existing(out, header), finalized=True)
    items = list(manifest.items)
    parts = read_parts(parts_dir)
    check_parts(parts, header, token_info)
    chunk_size = chunk_size_for(parts, cfg.chunk_size)
    plan = chunk_plan(len(items), chunk_size)
    mine = shard_chunks(len(plan), cfg.shard)
    if cfg.retry_failures:
        with locked(parts_dir):
            for chunk_index in mine:
                if chunk_index in parts and part_failures(parts[chunk_index].path):
                    parts.pop(chunk_index).path.unlink()
    if protocol.task == Task.TEXT_RETRIEVAL and cfg.shard[0] == 0 and not (parts_dir / TEXT_PART).is_file():
        _embed_captions(backbone, manifest, parts_dir, header, cfg)
    todo = [c for c in mine if c not in parts]
    summary = ExtractSummary(out, resumed_chunks=len(mine) - len(todo))
    order = [row for c in todo for row in plan[c]]
    source = (items[row] for row in order) if sliding(protocol) else iter(clip_loader(items, protocol, backbone, order,
                                                                                      cfg.workers))
    embed = _embed_sequence_chunk if sliding(protocol) else _embed_chunk
    total = sum(len(plan[c]) for c in mine)
    with bar(total, f"extract {backbone.name} {protocol.name}", "clip", cfg.quiet,
             initial=total - sum(len(plan[c]) for c in todo)) as progress:
        for chunk_index in todo:
            spill = parts_dir / f"{SPILL_PREFIX}{chunk_index:06d}"
            shutil.rmtree(spill, ignore_errors=True)  # left by a run killed in this chunk
            chunk = embed(backbone, source, len(plan[chunk_index]), protocol, cfg, spill, progress)
            write_part(parts_dir, header, chunk_index, len(plan), chunk_size, chunk, protocol.views.total,
                       protocol.views.temporal, cfg.dtype, token_info, sliding(protocol))
            shutil.rmtree(spill, ignore_errors=True)
            summary.embedded += len(chunk.ids)
    if finalize_when_complete(parts_dir, len(plan), out):
        summary.finalized = True
        with EmbeddingFile(out) as f:
            summary.failures = f.failures
    else:
        summary.failures = [f for c in mine for f in part_failures(part_path(parts_dir, c))]
    return summary
