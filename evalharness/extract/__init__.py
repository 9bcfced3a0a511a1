"""Extraction: a frozen backbone over a card's clips, chunk by chunk into crash-safe parts, joined into one file."""

from .chunks import DEFAULT_CHUNK_SIZE, chunk_plan, shard_chunks
from .pipeline import ExtractConfig, ExtractSummary, autocast, clip_loader, extract, parts_dir_for
from .runners import run_ray, shard_from_env

__all__ = ["DEFAULT_CHUNK_SIZE", "ExtractConfig", "ExtractSummary", "autocast", "chunk_plan", "clip_loader",
           "extract", "parts_dir_for", "run_ray", "shard_chunks", "shard_from_env"]
