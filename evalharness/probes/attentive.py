"""Attentive probe: V-JEPA's cross-attention pooler trained on frozen token features, a grid of heads in one pass.

Every head of the grid (learning rates x weight decays, as V-JEPA 2's `multihead_kwargs`)
starts from the same seeded weights and sees the same batches in the same order: one read
of the data trains them all. AdamW (no decay on biases and 1-d parameters), linear warm-up
then cosine decay per step, as `facebookresearch/jepa`'s WarmupCosineSchedule. Heads train
on train minus a stratified validation split; the head with the best validation top-1 after
the last epoch (ties: the first in grid order) is evaluated once on test. Each seed in
`seeds` runs all of this again (init and data order); the interval resamples test items
and seeds together.

Clips stream from the file through a DataLoader, one chunk (clip) per read, so memory is
bounded by the batches in flight, not by the file. Under torchrun each rank takes its slice
of every batch, gradients are summed across ranks, and evaluation splits the clips without
padding, so every test clip is counted exactly once.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..distributed import join
from ..errors import ProbeError, StoreError
from ..metrics import ranked_classes, seeded_accuracy_estimate
from ..progress import bar
from ..store import EmbeddingFile
from .attentive_config import Config
from .base import ProbeOutcome
from .common import ProbeInput, no_validation_reason, split_record, stratified_split
from .pooler import AttentiveClassifier


class TokenClips(Dataset):
    """Clips of an embedding file by row, read one chunk at a time as (tokens (V, L, D) in their 16-bit type, label,
    position); a worker process opens its own handle."""

    def __init__(self, file: EmbeddingFile, rows: np.ndarray, labels: np.ndarray):
        self.path, self.rows, self.labels = Path(file.path), rows, labels
        self.dtype = torch.bfloat16 if file.token_info.dtype == "bfloat16" else torch.float16
        self._file, self._pid = file, os.getpid()

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if self._pid != os.getpid() or self._file is None:
            self._file, self._pid = EmbeddingFile(self.path, check_values=False), os.getpid()
        tokens = torch.from_numpy(self._file.clip_tokens(int(self.rows[i]), stored=True))
        return tokens.view(torch.bfloat16) if self.dtype == torch.bfloat16 else tokens, int(self.labels[i]), i


class EpochBatches:
    """This rank's share of each batch of an epoch: a seeded permutation of the positions cut into global batches
    (nothing dropped or repeated; a last batch under half the batch size joins the one before, whatever the number of
    processes, so one process and several cut the same batches), each split across ranks by stride."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n < world or max(1, batch_size // 2) < world:
            raise ProbeError(f"{world} processes need at least {world} clips and a batch_size of at least {2 * world}")
        self.seed, self.rank, self.world = seed, rank, world
        self.starts = list(range(0, n, batch_size)) + [n]
        if len(self.starts) > 2 and self.starts[-1] - self.starts[-2] < max(1, batch_size // 2):
            del self.starts[-2]
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return len(self.starts) - 1

    def sizes(self) -> list[int]:
        """The global size of each batch (the same on every rank)."""
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        for start, stop in zip(self.starts, self.starts[1:], strict=False):
            yield order[start:stop][self.rank::self.world].tolist()


def _loader(data: TokenClips, batches, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(data, batch_sampler=batches, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None)


def _sequences(tokens: torch.Tensor, views: str, spatial: int) -> torch.Tensor:
    """(B, V, L, D), views temporal-major -> the pooler's input, clip by clip: (B, V * L, D) joint, (B * S, T * L, D)
    by segments, (B * V, L, D) averaged."""
    b, v, length, d = tokens.shape
    if views == "joint":
        return tokens.reshape(b, v * length, d)
    if views == "segments":
        return tokens.reshape(b, v // spatial, spatial, length, d).transpose(1, 2).reshape(b * spatial, -1, d)
    return tokens.reshape(b * v, length, d)


def _probabilities(head: torch.nn.Module, tokens: torch.Tensor, views: str, spatial: int) -> torch.Tensor:
    logits = head(_sequences(tokens, views, spatial)).float()
    return torch.softmax(logits, dim=1).reshape(len(tokens), -1, logits.shape[1]).mean(1)


def _on(tokens: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Tokens on the device: in their 16-bit type on a GPU (autocast takes them from there), float32 on a CPU."""
    return tokens.to(device, non_blocking=True) if device.type == "cuda" else tokens.to(device, torch.float32)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _optimizer(head: torch.nn.Module, lr: float, weight_decay: float, decay: str) -> torch.optim.AdamW:
    """AdamW with the decayed parameters in group 0 (all of them, or not the biases and 1-d ones) and the rest in 1."""
    named = list(head.named_parameters())
    exempt = [] if decay == "all" else [p for name, p in named if "bias" in name or p.ndim == 1]
    decayed = [p for _, p in named if all(p is not q for q in exempt)]
    return torch.optim.AdamW([{"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}],
                             lr=lr)


def learning_rate(step: int, total: int, warmup: int, lr: float, final_fraction: float) -> float:
    """The value at 0-based `step` of jepa's WarmupCosineSchedule (which steps before each iteration, so the first
    iteration already sits one step in): linear warm-up from 0 over `warmup` steps, then cosine decay to
    lr * final_fraction at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step + 1 - warmup) / max(1, total - warmup)
    final = lr * final_fraction
    return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _summed(x: torch.Tensor, device: torch.device, world: int) -> torch.Tensor:
    """x summed over all ranks (on the device, where NCCL needs it), back where it was."""
    if world == 1:
        return x
    import torch.distributed as dist

    total = x.to(device)
    dist.all_reduce(total)
    return total.to(x.device)


def _reduce_grads(head: torch.nn.Module, world: int) -> None:
    """Sum a head's gradients over ranks in one collective."""
    if world == 1:
        return
    import torch.distributed as dist

    params = list(head.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    for p, part in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad.copy_(part.view_as(p))


def predict(heads: list[torch.nn.Module], loader: DataLoader, n: int, classes: int, views: str, spatial: int,
            device: torch.device, world: int) -> np.ndarray:
    """Class probabilities (heads, n, K) of every clip of the loader's dataset, gathered across ranks; each clip must
    be seen exactly once."""
    out = torch.zeros(len(heads), n, classes, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.int64)
    for head in heads:
        head.eval()
    with torch.no_grad(), _autocast(device):
        for tokens, _, where in loader:
            tokens = _on(tokens, device)
            for h, head in enumerate(heads):
                out[h, where] = _probabilities(head, tokens, views, spatial).double().cpu()
            seen.index_add_(0, where, torch.ones_like(where))
    out, seen = _summed(out, device, world), _summed(seen, device, world)
    if not torch.equal(seen, torch.ones_like(seen)):
        raise ProbeError(f"evaluation saw {int((seen > 0).sum())} of {n} clips ({int((seen > 1).sum())} more than once)")
    if not torch.isfinite(out).all():
        raise ProbeError("the probe's predictions are not finite (training diverged)")
    return out.numpy()


def _split_loader(data: TokenClips, batch_size: int, workers: int, device: torch.device, rank: int,
                  world: int) -> DataLoader:
    """Every clip once, in order, this rank's by stride (batches of this rank's share of `batch_size`): no padding, no
    repeated clip."""
    mine, size = list(range(rank, len(data), world)), max(1, -(-batch_size // world))
    return _loader(data, [mine[i:i + size] for i in range(0, len(mine), size)], workers, device)


@dataclass
class Trained:
    """One seed's grid after training: the heads, each head's validation top-1 per epoch and mean training loss."""

    heads: list[torch.nn.Module]
    val_top1: list[list[float]]
    train_loss: list[list[float]]

    @property
    def chosen(self) -> int:
        """The head with the best validation top-1 after the last epoch; ties go to the first in grid order."""
        finals = [curve[-1] for curve in self.val_top1]
        return finals.index(max(finals))


@dataclass
class Place:
    """Where and how a probe runs (nothing here changes the recipe): the device, reader processes, this process's
    rank among `world`, the card's spatial views, the clips per forward pass (0: the whole share of a batch), and a
    progress bar."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    workers: int = 0
    rank: int = 0
    world: int = 1
    spatial: int = 1
    micro_batch: int = 0
    progress: Any = None


def _weight_decay(step: int, total: int, wd: float, final_fraction: float) -> float:
    """jepa's CosineWDSchedule: cosine from wd to wd * final_fraction over the run."""
    final = wd * final_fraction
    return final + (wd - final) * 0.5 * (1.0 + math.cos(math.pi * (step + 1) / max(1, total)))


def train_grid(fit: TokenClips, val: TokenClips, dim: int, classes: int, config: Config, seed: int,
               grid: list[tuple[float, float]], place: Place = Place()) -> Trained:
    """Train one head per (lr, weight decay) of `grid` from the same seeded weights on the same batches."""
    device, world = place.device, place.world
    heads = []
    for _ in grid:
        torch.manual_seed(seed)
        heads.append(AttentiveClassifier(dim, classes, config.num_heads, config.depth, config.mlp_ratio,
                                         config.cross_proj, config.queries).to(device))
    optimizers = [_optimizer(head, lr, wd, config.decay) for head, (lr, wd) in zip(heads, grid, strict=True)]
    batches = EpochBatches(len(fit), config.batch_size, seed, place.rank, world)
    loader = _loader(fit, batches, place.workers, device)
    val_loader = _split_loader(val, config.batch_size, place.workers, device, place.rank, world)
    total, warmup = config.epochs * len(batches), round(config.warmup_epochs * len(batches))
    val_top1, train_loss = [[] for _ in grid], [[] for _ in grid]
    step = 0
    for epoch in range(config.epochs):
        batches.epoch = epoch
        losses = torch.zeros(len(grid), dtype=torch.float64, device=device)
        for head in heads:
            head.train()
        for (tokens, labels, _), count in zip(loader, batches.sizes(), strict=True):
            tokens = _on(tokens, device)
            per_clip = {"joint": 1, "segments": place.spatial, "average": tokens.shape[1]}[config.views]
            labels = labels.to(device).repeat_interleave(per_clip)
            size = place.micro_batch or len(tokens)
            for h, (head, optimizer, (lr, wd)) in enumerate(zip(heads, optimizers, grid, strict=True)):
                optimizer.param_groups[0]["weight_decay"] = _weight_decay(step, total, wd, config.final_wd_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total, warmup, lr, config.final_lr_fraction)
                optimizer.zero_grad(set_to_none=True)
                for start in range(0, len(tokens), size):  # gradients add up to those of the whole batch
                    part = tokens[start:start + size]
                    with _autocast(device):
                        logits = head(_sequences(part, config.views, place.spatial)).float()
                    rows = labels[start * per_clip:(start + len(part)) * per_clip]
                    loss = F.cross_entropy(logits, rows, reduction="sum") / (count * per_clip)
                    loss.backward()
                    losses[h] += loss.detach().double() * count
                _reduce_grads(head, world)
                if config.clip_grad:
                    torch.nn.utils.clip_grad_norm_(head.parameters(), config.clip_grad)
                optimizer.step()
            step += 1
            if place.progress is not None:
                place.progress.update(1)
        losses = _summed(losses, device, world).cpu().numpy()
        if not np.isfinite(losses).all():
            raise ProbeError(f"training diverged: non-finite loss in epoch {epoch + 1} (lrs x weight_decays "
                             f"{[grid[h] for h in np.flatnonzero(~np.isfinite(losses))]})")
        probs = predict(heads, val_loader, len(val), classes, config.views, place.spatial, device, world)
        for h in range(len(grid)):
            val_top1[h].append(float((probs[h].argmax(1) == val.labels).mean()))
            train_loss[h].append(float(losses[h] / len(fit)))
    return Trained(heads, val_top1, train_loss)


def _scan(data: TokenClips, place: Place) -> None:
    """Read every clip once before training, so a bad one stops the run now (on every rank), not after hours."""
    problem = ""
    try:
        for _ in _split_loader(data, 64, place.workers, place.device, place.rank, place.world):
            pass
    except StoreError as exc:  # from a reader process, the message ends with the original one after a traceback
        problem = str(exc).strip().splitlines()[-1].split("StoreError: ", 1)[-1]
    failed = _summed(torch.tensor([len(problem) > 0], dtype=torch.int64), place.device, place.world)
    if problem:
        raise ProbeError(problem)
    if int(failed):
        raise ProbeError("another process found a clip whose tokens cannot be read (see its message)")


def run(data: ProbeInput, config: Config, device: str = "cpu", workers: int = 0, quiet: bool = False,
        micro_batch: int = 0) -> ProbeOutcome:
    """Train the grid per seed on train minus validation, choose a head on validation, score it once on test."""
    info = data.file.token_info
    if info is None:
        raise ProbeError(f"{data.path}: holds no token features; the attentive probe needs a file extracted under a "
                         "card whose features block asks for tokens")
    if info.dim % config.num_heads:
        raise ProbeError(f"{data.path}: token width {info.dim} is not divisible by the card's num_heads "
                         f"{config.num_heads}")
    spatial = data.protocol.views.spatial
    if config.views == "segments" and data.file.shape[1] != data.protocol.views.total:
        raise ProbeError(f"{data.path}: holds {data.file.shape[1]} views per clip, not the card's "
                         f"{data.protocol.views.temporal} x {spatial}, so its segments cannot be told apart")
    train_items, test_items = data.items("train"), data.items("test")
    train_y, test_y = data.manifest.label_indices(train_items), data.manifest.label_indices(test_items)
    groups = [item.group for item in train_items]
    fit_idx, val_idx = stratified_split(train_y, config.val_fraction, config.split_seed, groups)
    if len(val_idx) == 0:
        raise ProbeError(f"{data.path}: {no_validation_reason(train_y, config.val_fraction, groups)}")
    train_rows = data.file.rows([item.id for item in train_items])
    test_rows = data.file.rows([item.id for item in test_items])
    fit = TokenClips(data.file, train_rows[fit_idx], train_y[fit_idx])
    val = TokenClips(data.file, train_rows[val_idx], train_y[val_idx])
    test = TokenClips(data.file, test_rows, test_y)
    rank, world = join(device)
    place = Place(torch.device(device), workers, rank, world, spatial, micro_batch)
    classes, grid = len(data.manifest.classes), config.grid()
    steps = len(config.seeds) * config.epochs * len(EpochBatches(len(fit), config.batch_size, 0, rank, world))
    correct, predicted, per_seed = [], [], []
    with _deterministic(place.device), bar(steps, "attentive", "batch", quiet=quiet or rank != 0) as progress:
        _scan(TokenClips(data.file, np.concatenate([train_rows, test_rows]), np.zeros(len(train_rows) + len(test_rows))),
              place)
        place.progress = progress
        for seed in config.seeds:
            trained = train_grid(fit, val, info.dim, classes, config, seed, grid, place)
            best = trained.chosen
            probs = predict([trained.heads[best]], _split_loader(test, config.batch_size, workers, place.device, rank,
                                                                  world),
                            len(test), classes, config.views, spatial, place.device, world)[0]
            ranked = ranked_classes(probs, min(5, classes))
            correct.append(ranked[:, :5] == test_y[:, None])
            predicted.append(ranked[:, 0])
            lr, wd = grid[best]
            per_seed.append({"seed": seed, "chosen_head": best, "lr": lr, "weight_decay": wd,
                             "val_top1": trained.val_top1[best][-1], "test_top1": float(correct[-1][:, 0].mean()),
                             "val_top1_curve": trained.val_top1, "train_loss_curve": trained.train_loss})
    hits = np.stack(correct)
    top1 = hits[:, :, 0]
    metrics = {"top1": seeded_accuracy_estimate(top1), "top5": seeded_accuracy_estimate(hits.any(axis=2)),
               "mean_class": seeded_accuracy_estimate(top1, test_y, per_class=True)}
    seed_scores = [s["test_top1"] for s in per_seed]
    names = data.manifest.classes
    return ProbeOutcome("top1", metrics,
                        {"heads": [{"lr": lr, "weight_decay": wd} for lr, wd in grid], "seeds": per_seed,
                         "seed_top1_mean": float(np.mean(seed_scores)), "seed_top1_std": float(np.std(seed_scores)),
                         "fit_videos": len(fit), "val_videos": len(val), **split_record(groups, val_idx),
                         "test_clips": len(test),
                         "token_grid": list(info.grid), "token_dim": info.dim, "world_size": world},
                        {"ids": [item.id for item in test_items], "label": [names[c] for c in test_y],
                         "predicted": [[names[c] for c in row] for row in np.stack(predicted, axis=1)],
                         "value": top1.mean(axis=0).tolist()})


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """On a GPU, PyTorch's deterministic algorithms for the run (cuBLAS workspace included), as they were after."""
    if device.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])

