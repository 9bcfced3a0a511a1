"""Manifest x protocol x backbone -> part files -> one embedding file.

Work is cut into fixed chunks of the sorted id list (chunk size = batch size), so
a resumed run, or N shards (`--shard i/N` takes chunks c with c % N == i), feeds
the model exactly the same batches as one uninterrupted run and writes the same
bytes. Decoding runs in DataLoader workers; a clip that cannot be decoded is
recorded with its reason and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from . import __version__
from .backbones import Backbone, build_backbone
from .datasets import Item, Manifest, resolve_manifest
from .environment import environment
from .errors import DecodeError, HarnessError
from .locking import locked
from .progress import bar
from .protocol import Protocol
from .sampling import frame_indices
from .store import (TEXT_PART, Chunk, DenseMaps, EmbeddingFile, Header, finalize, finished_chunks, part_failures,
                    part_path, write_part, write_text_part)
from .video import make_views, normalization, read_sampled


@dataclass(frozen=True)
class ExtractConfig:
    batch_size: int = 16
    workers: int = 2
    device: str = "cpu"
    shard: tuple[int, int] = (0, 1)
    dtype: str = "float32"
    autocast: str = "none"
    retry_failures: bool = False
    keep_parts: bool = False
    quiet: bool = False


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
        except DecodeError as exc:
            return Sample(item.id, error=str(exc))
        except Exception as exc:  # a broken file must not end a long run: record it and go on
            return Sample(item.id, error=f"{item.path}: {type(exc).__name__}: {exc}")


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _collate(samples: list[Sample]) -> list[Sample]:
    return samples


def clip_loader(items: list[Item], protocol: Protocol, backbone: Backbone, batches: list[list[int]],
                workers: int) -> DataLoader:
    """Decoded, transformed clips of the given index batches, decoded in `workers` processes."""
    mean, std = normalization(protocol.transform, backbone.input.mean, backbone.input.std)
    dataset = ClipDataset(items, protocol, mean, std, threads=1 if workers > 0 else 0)
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                      worker_init_fn=_worker_init)


def check_compatible(backbone: Backbone, protocol: Protocol) -> None:
    """A card that feeds a model frames or sizes it cannot take is an error before any work starts."""
    want = backbone.input
    if want.frames is not None and protocol.frames.count != want.frames:
        raise HarnessError(f"model {backbone.name} takes {want.frames} frames per clip but protocol {protocol.name} feeds "
                           f"{protocol.frames.count if protocol.frames.count else 'all'}")
    if want.size is not None and protocol.transform.crop != want.size:
        raise HarnessError(f"model {backbone.name} takes {want.size}x{want.size} crops but protocol {protocol.name} "
                           f"crops {protocol.transform.crop}")
    if protocol.task == "text-retrieval" and not backbone.has_text:
        raise HarnessError(f"model {backbone.name} has no text tower, which protocol {protocol.name} needs")
    if protocol.task == "label-propagation" and backbone.dense_stride is None:
        raise HarnessError(f"model {backbone.name} has no dense feature maps, which protocol {protocol.name} needs")


AUTOCAST = ("none", "bfloat16", "float16")


def autocast(cfg: ExtractConfig) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward passes when asked for (meant for GPUs; recorded in the file)."""
    if cfg.autocast == "none":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(cfg.device).type, dtype=getattr(torch, cfg.autocast))


def dry_run(backbone: Backbone, protocol: Protocol, cfg: ExtractConfig) -> None:
    """One blank clip through the model before any decoding, so a card the model cannot take fails at once."""
    count, crop = protocol.frames.count, protocol.transform.crop
    if count is None or crop is None:
        return
    clip = torch.zeros(1, count, 3, crop, crop, device=torch.device(cfg.device))
    try:
        with torch.inference_mode(), autocast(cfg):
            backbone.embed(clip)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise HarnessError(f"model {backbone.name} cannot take clips of {count} frames at {crop}x{crop} "
                           f"(protocol {protocol.name}): {type(exc).__name__}: {reason}") from None


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
        environment=json.dumps(environment(cfg.device, cfg.dtype, batch_size=cfg.batch_size, autocast=cfg.autocast), sort_keys=True),
    )


def parts_dir_for(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _embed_chunk(backbone: Backbone, samples: list[Sample], protocol: Protocol, cfg: ExtractConfig) -> Chunk:
    good = [s for s in samples if s.error is None]
    failures = [(s.id, s.error) for s in samples if s.error is not None]
    dtype = np.float16 if cfg.dtype == "float16" else np.float32
    n_views = protocol.views.total
    if not good:
        return Chunk([], np.zeros((0, n_views, 0), dtype), np.zeros((0, protocol.views.temporal, 0), np.int32), failures=failures)
    device = torch.device(cfg.device)
    k = max(s.indices.shape[1] for s in good)
    index = np.full((len(good), protocol.views.temporal, k), -1, dtype=np.int32)
    vectors, dense = [], {}
    with torch.inference_mode(), autocast(cfg):
        for row, s in enumerate(good):
            index[row, :, :s.indices.shape[1]] = s.indices
        same_length = len({s.views.shape[1] for s in good}) == 1
        groups = [torch.cat([s.views for s in good])] if same_length else [s.views for s in good]
        for clips in groups:
            for start in range(0, clips.shape[0], cfg.batch_size):
                vectors.append(backbone.embed(clips[start:start + cfg.batch_size].to(device)).float().cpu())
        if protocol.task == "label-propagation":
            for s in good:
                maps = backbone.dense(s.views[0].to(device)).float().cpu().numpy()
                dense[s.id] = DenseMaps(maps, backbone.dense_stride, tuple(s.views.shape[-2:]))
    clip = torch.cat(vectors).view(len(good), n_views, -1).numpy().astype(dtype)
    return Chunk([s.id for s in good], clip, index, dense, failures)


def _embed_captions(backbone: Backbone, manifest: Manifest, parts_dir: Path, header: Header, cfg: ExtractConfig) -> None:
    """Embed every caption of the manifest; caption k of video v gets the id `v#k`."""
    rows = [(f"{vid}#{k}", vid, text) for vid in sorted(manifest.captions) for k, text in enumerate(manifest.captions[vid])]
    if not rows:
        raise HarnessError("the protocol is text-retrieval but the manifest has no captions")
    vectors = []
    with torch.inference_mode(), autocast(cfg):
        for start in range(0, len(rows), cfg.batch_size):
            vectors.append(backbone.embed_text([r[2] for r in rows[start:start + cfg.batch_size]]).float().cpu())
    dtype = np.float16 if cfg.dtype == "float16" else np.float32
    write_text_part(parts_dir, header, [r[0] for r in rows], [r[1] for r in rows], torch.cat(vectors).numpy().astype(dtype))


def finalize_when_complete(parts_dir: Path, header: Header, chunks_total: int, out: Path, keep_parts: bool) -> bool:
    """Join the parts into `out` once every chunk is done; of shards sharing a disk, the last to finish does it."""
    with locked(parts_dir):
        if out.exists():
            return True
        if len(finished_chunks(parts_dir, header, chunks_total)) < chunks_total:
            return False
        finalize([parts_dir], out)
        if not keep_parts:
            shutil.rmtree(parts_dir)
        return True


def extract(model: str | Backbone, protocol: Protocol, data_root: str | Path, out: str | Path,
            cfg: ExtractConfig = ExtractConfig()) -> ExtractSummary:
    """Embed every clip of the card's manifest (or of one shard) into `out`, resuming finished chunks."""
    started = time.perf_counter()
    out = Path(out)
    shard, shards = cfg.shard
    if not 0 <= shard < shards:
        raise HarnessError(f"--shard {shard}/{shards}: need 0 <= i < N")
    if cfg.batch_size < 1:
        raise HarnessError("--batch-size must be at least 1")
    if cfg.autocast not in AUTOCAST:
        raise HarnessError(f"--autocast {cfg.autocast}: choose one of {', '.join(AUTOCAST)}")
    manifest = resolve_manifest(protocol, data_root)
    backbone = build_backbone(model) if isinstance(model, str) else model
    check_compatible(backbone, protocol)
    backbone = backbone.to(torch.device(cfg.device))
    dry_run(backbone, protocol, cfg)
    header = make_header(backbone, protocol, manifest, cfg)
    if out.exists():
        with EmbeddingFile(out) as existing:
            if existing.header.identity() != header.identity():
                raise HarnessError(f"{out} already holds embeddings of another run ({existing.header.model}, "
                                   f"{existing.header.protocol}); delete it or choose another --out")
            return ExtractSummary(out, failures=existing.failures, finalized=True,
                                  seconds=time.perf_counter() - started)
    items = list(manifest.items)
    chunks = [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    parts_dir = parts_dir_for(out)
    parts_dir.mkdir(parents=True, exist_ok=True)
    done = finished_chunks(parts_dir, header, len(chunks))
    if cfg.retry_failures:
        for chunk_index, path in list(done.items()):
            if part_failures(path):
                path.unlink()
                del done[chunk_index]
    if protocol.task == "text-retrieval" and shard == 0 and not (parts_dir / TEXT_PART).is_file():
        _embed_captions(backbone, manifest, parts_dir, header, cfg)
    mine = [c for c in range(len(chunks)) if c % shards == shard]
    todo = [c for c in mine if c not in done]
    summary = ExtractSummary(out, resumed_chunks=len(mine) - len(todo))
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    loader = clip_loader(items, protocol, backbone, [list(range(offsets[c], offsets[c + 1])) for c in todo], cfg.workers)
    total = sum(len(chunks[c]) for c in mine)
    with bar(total, f"extract {backbone.name} {protocol.name}", "clip", cfg.quiet, initial=total - sum(len(chunks[c]) for c in todo)) as progress:
        for chunk_index, samples in zip(todo, loader):
            chunk = _embed_chunk(backbone, samples, protocol, cfg)
            write_part(parts_dir, header, chunk_index, len(chunks), chunk)
            summary.embedded += len(chunk.ids)
            progress.update(len(samples))
    if finalize_when_complete(parts_dir, header, len(chunks), out, cfg.keep_parts):
        summary.finalized = True
        with EmbeddingFile(out) as f:
            summary.failures = f.failures
    else:
        summary.failures = [f for c in mine for f in part_failures(part_path(parts_dir, c))]
    summary.seconds = time.perf_counter() - started
    return summary
