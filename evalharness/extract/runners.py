"""Many processes extracting one file: shard numbers from torchrun or Slurm, and shards as Ray tasks.

Every engine runs the same `extract` on disjoint chunk sets (`--shard i/N`) into one
parts folder on a shared disk; the last shard to finish joins the file. No
DistributedSampler: it pads the last batch with repeated samples.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from ..datasets import resolve_manifest
from ..errors import HarnessError
from ..progress import bar
from ..protocol import Protocol
from ..store import PART_RE, EmbeddingFile, read_parts
from .chunks import chunk_plan, chunk_size_for
from .pipeline import ExtractConfig, ExtractSummary, extract, parts_dir_for


def shard_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(i, N) for `--shard auto`: torchrun's RANK / WORLD_SIZE, a Slurm array task, or `srun` tasks."""
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"])
        if "SLURM_ARRAY_TASK_ID" in env:
            first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
            if "SLURM_ARRAY_TASK_COUNT" not in env:
                raise HarnessError("automatic sharding: SLURM_ARRAY_TASK_COUNT is not set (Slurm >= 18 sets it for arrays)")
            return int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"])
        if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    except ValueError as exc:
        raise HarnessError(f"automatic sharding: a launcher variable is not an integer ({exc})") from None
    raise HarnessError("automatic sharding: found no RANK/WORLD_SIZE (torchrun), SLURM_ARRAY_TASK_ID (Slurm array) "
                       "or SLURM_PROCID/SLURM_NTASKS (srun) in the environment")


def _extract_shard(model: str, weights: str | None, protocol: Protocol, data_root: str, out: str,
                   cfg: ExtractConfig) -> tuple[int, int, list[tuple[str, str]]]:
    """One Ray task: build the model on the worker and extract one shard into the shared parts folder."""
    from ..backbones import build_backbone

    summary = extract(build_backbone(model, weights), protocol, data_root, out, cfg)
    return summary.embedded, summary.resumed_chunks, summary.failures


def run_ray(model: str, weights: str | None, protocol: Protocol, data_root: str | Path, out: str | Path,
            cfg: ExtractConfig, shards: int | None = None, address: str | None = None) -> ExtractSummary:
    """Extract with `shards` Ray tasks (one GPU each when the device is cuda; default one per GPU or CPU of the
    cluster) on a cluster sharing `out`'s disk."""
    import ray

    if shards is not None and shards < 1:
        raise HarnessError(f"a Ray run needs at least one shard, got {shards}")
    out, started = Path(out), time.perf_counter()
    parts = parts_dir_for(out)
    chunk_size = chunk_size_for(read_parts(parts), cfg.chunk_size)
    chunks_total = len(chunk_plan(len(resolve_manifest(protocol, data_root).items), chunk_size))
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    gpus = 1 if cfg.device.startswith("cuda") else 0
    if shards is None:
        shards = max(1, int(ray.cluster_resources().get("GPU" if gpus else "CPU", 1)))
    shards = max(1, min(shards, chunks_total))  # a shard without chunks would only build the model
    device = "cuda" if gpus else cfg.device
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=2)(_extract_shard)
    pending = [task.remote(model, weights, protocol, str(Path(data_root).resolve()), str(out.resolve()),
                           replace(cfg, shard=(i, shards), device=device, chunk_size=chunk_size, quiet=True))
               for i in range(shards)]
    results = []
    with bar(chunks_total, f"extract {model} {protocol.name} on Ray ({shards} shards)", "chunk", cfg.quiet) as progress:
        while pending:
            ready, pending = ray.wait(pending, timeout=2.0)
            results += ray.get(ready)
            if parts.is_dir():
                progress.n = sum(1 for p in parts.iterdir() if PART_RE.match(p.name))
                progress.refresh()
    summary = ExtractSummary(out, embedded=sum(r[0] for r in results), resumed_chunks=sum(r[1] for r in results),
                             seconds=time.perf_counter() - started, finalized=out.exists())
    if summary.finalized:
        with EmbeddingFile(out) as f:
            summary.failures = f.failures
    else:
        summary.failures = [f for r in results for f in r[2]]
    return summary
