"""Many processes under torchrun: which rank this process is, which GPU it owns, and joining the process group."""

from __future__ import annotations

import os
from collections.abc import Mapping


def device_for_rank(device: str, env: Mapping[str, str] = os.environ) -> str:
    """`cuda` under torchrun means this rank's own GPU, cuda:LOCAL_RANK."""
    return f"cuda:{env['LOCAL_RANK']}" if device == "cuda" and "LOCAL_RANK" in env else device


def rank_and_world(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(rank, world size) of this process: torchrun's RANK / WORLD_SIZE, or (0, 1) when run alone."""
    try:
        return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return 0, 1


def join(device: str) -> tuple[int, int]:
    """Join torchrun's process group (NCCL on GPUs, Gloo on CPUs) when this process is one of several; returns
    (rank, world size)."""
    rank, world = rank_and_world()
    if world > 1:
        import torch
        import torch.distributed as dist

        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))  # this rank's GPU, before NCCL opens a context on GPU 0
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return rank, world
