"""Attentive-probe training speed and memory on synthetic token files, side by side with the ways a user would
otherwise run it.

    python benchmarks/attentive.py --sizes small k400 k400-pooled [--clips 64] [--heads 1 4] [--device cuda]
                                   [--workers 2] [--out results.json]

Token files are written with the harness's own writer (one clip per HDF5 chunk, float16),
shaped like real ones: `small` 8 x 4 x 4 tokens of width 24 (the demo's grid), `k400` the
V-JEPA ViT-L/16 grid of 16 frames at 224 pixels (8 x 14 x 14 = 1568 tokens of width 1024),
`k400-pooled` that grid pooled by [1, 2, 2] (392 tokens). Every measurement runs in its own
process, so the peak memory reported is that run's. For each size and head count:

- `grid`: our probe's training loop (`train_grid`: every head on each batch read once, from
  the file through a DataLoader), clips/s over the whole grid and per head;
- `one at a time`: the same heads trained in turn, each reading the file again (what a
  per-head sweep script does), as a ratio to `grid`;
- `in memory`: the grid on tokens already in RAM (no reading), which bounds what reading costs;
- `read`: the DataLoader alone (HDF5 read + decode), clips/s and MB/s;
- peak RSS with the file at N and at 2N clips (streaming: it must not grow with the file).

The projection to the issue's target (SSv2 train, 168,913 clips, 20 heads, 20 epochs)
multiplies the measured per-clip costs out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "small": dict(grid=(8, 4, 4), dim=24),
    "k400": dict(grid=(8, 14, 14), dim=1024),
    "k400-pooled": dict(grid=(8, 7, 7), dim=1024),
}
SSV2_TRAIN = 168_913
CLASSES = 10


def write_tokens(path: Path, clips: int, grid: tuple[int, int, int], dim: int) -> Path:
    """A complete embedding file of `clips` clips whose tokens are generated one clip at a time (bounded memory)."""
    from evalharness.store import Chunk, Header, LazyMap, TokenInfo, finalize, write_part

    ids = [f"c{i:07d}" for i in range(clips)]
    length = grid[0] * grid[1] * grid[2]

    def tokens(vid: str) -> np.ndarray:
        rng = np.random.default_rng(int(vid[1:]))
        return rng.normal(size=(1, length, dim)).astype(np.float32)

    header = Header(model="bench", model_revision="", weights_sha256="", model_config="{}", protocol="bench",
                    protocol_version=1, extraction_hash="0" * 64, protocol_json="{}", manifest_hash="0" * 64,
                    harness_version="0", environment="{}")
    info = TokenInfo(grid, dim, -1, "after", (1, 1, 1), (16, 16), 2, "float16")
    parts = path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    chunk = Chunk(ids, np.zeros((clips, 1, 8), np.float32), np.zeros((clips, 1, 16), np.int32),
                  tokens=LazyMap(ids, tokens))
    write_part(parts, header, 0, 1, clips, chunk, 1, 1, "float32", info)
    return finalize([parts], path)


def _run(kind: str, path: str, clips: int, heads: int, device: str, workers: int, epochs: int, dim: int, queue) -> None:
    import torch

    from evalharness.probes.attentive import Config, Place, TokenClips, _loader, _split_loader, train_grid

    mp.set_start_method("fork", force=True)  # reader workers as the CLI starts them (this process itself was spawned)
    from evalharness.store import EmbeddingFile

    dev = torch.device(device)
    lrs = tuple(10.0 ** -np.linspace(2, 4, heads))
    config = Config(num_heads=16 if dim % 16 == 0 else 4, epochs=epochs, batch_size=16, lrs=lrs,
                    weight_decays=(0.01,), seeds=(0,))
    with EmbeddingFile(path, check_values=False) as f:
        rows = np.arange(clips)
        labels = rows % CLASSES
        fit, val = TokenClips(f, rows, labels), TokenClips(f, rows[:16], labels[:16])
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        if kind == "read":
            for _ in _split_loader(fit, 16, workers, dev, 0, 1):
                pass
        elif kind == "grid":
            train_grid(fit, val, dim, CLASSES, config, 0, config.grid(), Place(dev, workers))
        elif kind == "one-at-a-time":
            for pair in config.grid():
                train_grid(fit, val, dim, CLASSES, config, 0, [pair], Place(dev, workers))
        elif kind == "in-memory":
            cached = [batch for batch in _loader(fit, [list(range(i, min(i + 16, clips))) for i in range(0, clips, 16)],
                                                 workers, dev)]
            started = time.perf_counter()
            train_grid(_Held(cached), _Held(cached[:1]), dim, CLASSES, config, 0, config.grid(), Place(dev, 0))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    queue.put({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_gpu_mb": peak_gpu})


class _Held:
    """Token batches already in memory, served as a TokenClips dataset would serve them."""

    def __init__(self, batches):
        self.items = [(tokens[i], int(labels[i]), int(where[i])) for tokens, labels, where in batches
                      for i in range(len(where))]
        self.labels = np.array([label for _, label, _ in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def measure(kind: str, path: Path, clips: int, heads: int, device: str, workers: int, epochs: int, dim: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(kind, str(path), clips, heads, device, workers, epochs, dim, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "k400-pooled", "k400"], choices=list(SIZES))
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="where the token files go (default: a temp folder)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    folder = args.folder or Path(tempfile.mkdtemp(prefix="attentive-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"# attentive probe benchmark: {platform.processor() or platform.machine()}, {mp.cpu_count()} CPUs, "
          f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    rows = []
    print("| size | tokens x dim | heads | grid clips/s | per head clips/s | one at a time (x slower) | in memory (x faster) "
          "| read clips/s (MB/s) | peak RSS MB (N / 2N clips) | peak GPU MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        spec = SIZES[size]
        length = spec["grid"][0] * spec["grid"][1] * spec["grid"][2]
        paths = {}
        for n in (args.clips, 2 * args.clips):
            paths[n] = write_tokens(folder / f"{size}-{n}.h5", n, spec["grid"], spec["dim"])
        clip_mb = length * spec["dim"] * 2 / 2**20
        def run(kind: str, n: int, heads: int, epochs: int, paths=paths, dim=spec["dim"]) -> dict:
            return measure(kind, paths[n], n, heads, args.device, args.workers, epochs, dim)

        read = run("read", args.clips, 1, 1)
        for heads in args.heads:
            work = args.clips * args.epochs
            grid, double = run("grid", args.clips, heads, args.epochs), run("grid", 2 * args.clips, heads, args.epochs)
            alone = run("one-at-a-time", args.clips, heads, args.epochs)
            memory = run("in-memory", args.clips, heads, args.epochs)
            row = {"size": size, "tokens": length, "dim": spec["dim"], "heads": heads, "clips": args.clips,
                   "epochs": args.epochs, "grid_clips_per_s": work / grid["seconds"],
                   "per_head_clips_per_s": work * heads / grid["seconds"],
                   "one_at_a_time_ratio": alone["seconds"] / grid["seconds"],
                   "in_memory_ratio": grid["seconds"] / memory["seconds"],
                   "read_clips_per_s": args.clips / read["seconds"],
                   "read_mb_per_s": args.clips * clip_mb / read["seconds"],
                   "peak_rss_mb": grid["peak_rss_mb"], "peak_rss_mb_2n": double["peak_rss_mb"],
                   "peak_gpu_mb": grid["peak_gpu_mb"], "device": args.device}
            # SSv2 train at this token size: 20 epochs of 168,913 clips, each clip through every head once
            per_clip_head = grid["seconds"] / (work * heads)
            row["ssv2_20_heads_20_epochs_hours"] = SSV2_TRAIN * 20 * 20 * per_clip_head / 3600
            row["ssv2_read_only_hours"] = SSV2_TRAIN * 20 / row["read_clips_per_s"] / 3600
            rows.append(row)
            gpu = f"{row['peak_gpu_mb']:.0f}" if row["peak_gpu_mb"] is not None else "-"
            print(f"| {size} | {length} x {spec['dim']} | {heads} | {row['grid_clips_per_s']:.1f} | "
                  f"{row['per_head_clips_per_s']:.1f} | {row['one_at_a_time_ratio']:.2f} | {row['in_memory_ratio']:.2f} | "
                  f"{row['read_clips_per_s']:.0f} ({row['read_mb_per_s']:.0f}) | {row['peak_rss_mb']:.0f} / "
                  f"{row['peak_rss_mb_2n']:.0f} | {gpu} |", flush=True)
    for row in rows:
        print(f"projection {row['size']} x{row['heads']} heads: SSv2 20 heads x 20 epochs = "
              f"{row['ssv2_20_heads_20_epochs_hours']:.1f} h of compute at this rate; reading alone "
              f"{row['ssv2_read_only_hours']:.1f} h")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
