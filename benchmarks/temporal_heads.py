"""Training and inference throughput, and peak memory, of the two temporal heads (issue 14) on random features.

    python benchmarks/temporal_heads.py [--device cpu|cuda] [--quick] [--dim 768 1024] [--heads tcn thumos14 activitynet]
                                        [--lengths 2304 10000] [--threads N] [--out results.json]

Heads, with the settings a card gets by default:
- `tcn`: the MS-TCN segmentation head (`segmentation_config.Config()`: 4 stages x 10 layers, 64 channels,
  one video a batch), 48 classes (Breakfast), trained on Breakfast-length videos (10,000 snippets);
- `thumos14`: the ActionFormer localization head's thumos14 preset (width 512, windows 19, batch 2,
  max_seq_len 2304), 20 classes, trained on 2304-snippet videos (each step sees the head's own random crop);
- `activitynet`: the activitynet preset (width 256, batch 16, every video resized to 192), 200 classes, trained
  on 2304-snippet videos resized to 192.

Each measurement runs in its own process (so its peak memory is its own), with the model and the inputs built
first, then a warm-up step (`--warmup`), then the timed repeats (`--repeats`; 1 with `--quick`, else 5):
- `train`: optimizer steps at the preset's batch size through the head's own training code (TCN: `_train_epoch`
  on one batch; ActionFormer: `_Training.update`, i.e. crop / resize, target assignment, loss, clipping, AdamW,
  weight EMA); snippets/s counts the positions the model sees (after the crop or resize), videos/s the videos;
- `train 1 video`: one training step on a single 10,000-snippet video (what a Breakfast-length video costs; the
  ActionFormer presets see it through their crop to 2304 or resize to 192, as in training);
- `infer L`: whole-sequence prediction of one video of L snippets (`predict_segmentation`,
  `predict_localization` with decoding and Soft-NMS); snippets/s counts input snippets; for localization the
  share of the time spent in Soft-NMS and the number of candidates it received are given too (an untrained head
  scores every position near its prior 0.01, above pre_nms_thresh, so Soft-NMS receives the full top-k of
  every level: its worst case).

Memory: on CPU the increase of the peak resident set (VmHWM, reset after setup) over the RSS after setup, and, for
training, the bytes autograd saved for the backward pass (unique storages, counted by saved-tensor hooks during the
first step; tracemalloc does not see torch's CPU allocations, and torch keeps no CPU allocator statistics);
on CUDA `torch.cuda.max_memory_allocated` over what was allocated after setup. A summary line compares each
head's inference peak at the longest and shortest length with the ratio of the lengths (linear growth: equal).
Times are medians over the repeats; the machine line says what they were measured on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = {"tcn": 48, "thumos14": 20, "activitynet": 200}
TRAIN_LENGTH = {"tcn": 10_000, "thumos14": 2304, "activitynet": 2304}
BREAKFAST = 10_000


def _kib(key: str) -> int:
    return int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith(key + ":")))


def _video(rng: np.random.Generator, length: int, dim: int, classes: int):
    """Random features (T, D) float32, frame labels (T,) in runs of 50-500 frames, and actions: about one per 150
    snippets, 10-200 long, as (segments (S, 2), labels (S,))."""
    x = rng.standard_normal((length, dim), dtype=np.float32)
    cuts = np.cumsum(rng.integers(50, 500, length // 50 + 1))
    frame_labels = rng.integers(0, classes, len(cuts) + 1)[np.searchsorted(cuts, np.arange(length), side="right")]
    count = max(1, length // 150)
    starts = rng.uniform(0, length - 12, count)
    ends = np.minimum(starts + rng.uniform(10, 200, count), length)
    return x, frame_labels.astype(np.int64), np.stack([starts, ends], 1), rng.integers(0, classes, count)


class _Saved:
    """Bytes of the unique storages autograd saves for backward while active."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t):
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def mb(self) -> float:
        return sum(self.storages.values()) / 2**20


def _run(head: str, kind: str, length: int, dim: int, device: str, warmup: int, repeats: int, threads: int | None,
         queue) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from evalharness.probes import actionformer_head as af
    from evalharness.probes import tcn_head as tcn
    from evalharness.probes.localization_config import Config as LocConfig
    from evalharness.probes.segmentation_config import Config as SegConfig

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    classes = CLASSES[head]
    single = kind == "train1"  # one training step on one video, whatever the preset's batch size
    kind = "train" if single else kind
    nms = {"seconds": 0.0, "candidates": 0}
    if head == "tcn":
        config = SegConfig()
        model = tcn.MultiStageTCN(dim, classes, config.stages, config.layers, config.channels, config.dropout).to(dev)
        batch = config.batch_size if kind == "train" and not single else 1
    else:
        config = LocConfig(**LocConfig.normalise({"preset": head}))
        model = af.ActionFormer(dim, classes, config).to(dev)
        batch = config.batch_size if kind == "train" and not single else 1
        original = af.soft_nms

        def timed_nms(segments, *rest):
            started = time.perf_counter()
            out = original(segments, *rest)
            nms["seconds"] += time.perf_counter() - started
            nms["candidates"] += len(segments)
            return out

        af.soft_nms = timed_nms
    videos = [_video(rng, length, dim, classes) for _ in range(batch)]
    if kind == "infer":
        x = videos[0][0]

        def step() -> int:
            if head == "tcn":
                tcn.predict_segmentation(model, [x], device)
            else:
                af.predict_localization(model, [x], config, device)
            return length  # input snippets
    elif head == "tcn":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        train = [(x, y) for x, y, _, _ in videos]

        def step() -> int:
            tcn._train_epoch(model, optimizer, train, np.arange(len(train)), config, dev)
            return sum(len(x) for x, _ in train)
    else:
        import copy

        training = af._Training(model, copy.deepcopy(model).eval(), af._optimizer(model, config), config, classes, dev,
                                10, 100, config.init_loss_norm)
        train = [(x, s, lab) for x, _, s, lab in videos]

        def step() -> int:
            model.train()
            views = [af._training_view(v, config, rng, 0.0) for v in train]
            training.update(views)
            return sum(len(v[0]) for v in views)  # what the model saw (after crop / resize)

    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
    base_rss = _kib("VmRSS")
    saved = _Saved()
    times, seen = [], 0
    for i in range(warmup + repeats):
        if i == warmup:
            nms.update(seconds=0.0, candidates=0)
        started = time.perf_counter()
        if i == 0:  # the saved-for-backward count, on the first step (the hooks only note each storage's size)
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                seen = step()
        else:
            seen = step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    queue.put({"seconds": statistics.median(times), "all_seconds": times, "snippets": seen, "videos": batch,
               "peak_rss_mb": (_kib("VmHWM") - base_rss) / 1024,
               "peak_gpu_mb": (torch.cuda.max_memory_allocated() - base_gpu) / 2**20 if cuda else None,
               "saved_mb": saved.mb if kind == "train" else None,
               "nms_share": nms["seconds"] / sum(times) if head != "tcn" and kind == "infer" else None,
               "nms_candidates": nms["candidates"] // repeats if head != "tcn" and kind == "infer" else None})


def measure(head: str, kind: str, length: int, dim: int, device: str, warmup: int, repeats: int,
            threads: int | None = None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(head, kind, length, dim, device, warmup, repeats, threads, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def machine(device: str, threads: int | None) -> str:
    import torch
    from machine import describe

    if threads:
        torch.set_num_threads(threads)
    return describe(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1 timed repeat after the warm-up (a small machine)")
    parser.add_argument("--dim", type=int, nargs="+", default=[768, 1024], help="input feature widths")
    parser.add_argument("--heads", nargs="+", default=list(CLASSES), choices=list(CLASSES))
    parser.add_argument("--lengths", type=int, nargs="+", default=[2304, BREAKFAST], help="inference lengths")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 1 with --quick, else 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (0: the first step is timed too)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default torch's own; 1 on a machine whose cores other work is using: "
                             "OpenMP threads that wait on each other slow down many-fold when a core is taken)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)
    load = os.getloadavg()
    print(f"# temporal heads benchmark: {machine(args.device, args.threads)}")
    print(f"# load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {repeats} timed repeat(s) after "
          f"{args.warmup} warm-up step(s), median", flush=True)
    print("| head | D | run | videos x snippets seen | s / step | videos/s | snippets/s | peak RSS +MB | peak GPU MB "
          "| saved for backward MB | Soft-NMS share (candidates) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for dim in args.dim:
        for head in args.heads:
            runs = [("train", "train", TRAIN_LENGTH[head])]
            if head != "tcn":
                runs.append(("train 1 video", "train1", BREAKFAST))
            runs += [(f"infer {n}", "infer", n) for n in args.lengths]
            for name, kind, length in runs:
                r = measure(head, kind, length, dim, args.device, args.warmup, repeats, args.threads)
                row = {"head": head, "dim": dim, "run": name, "length": length, **r}
                rows.append(row)
                gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
                saved = f"{r['saved_mb']:.0f}" if r["saved_mb"] is not None else "-"
                share = f"{100 * r['nms_share']:.0f}% ({r['nms_candidates']})" if r["nms_share"] is not None else "-"
                per_video = r["snippets"] // r["videos"]
                print(f"| {head} | {dim} | {name} | {r['videos']} x {per_video} | {r['seconds']:.3f} | "
                      f"{r['videos'] / r['seconds']:.2f} | {r['snippets'] / r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
                      f"{gpu} | {saved} | {share} |", flush=True)
    if len(args.lengths) > 1:
        short, long = min(args.lengths), max(args.lengths)
        key = "peak_gpu_mb" if args.device.startswith("cuda") else "peak_rss_mb"
        for dim in args.dim:
            for head in args.heads:
                a = next(r for r in rows if r["head"] == head and r["dim"] == dim and r["run"] == f"infer {short}")
                b = next(r for r in rows if r["head"] == head and r["dim"] == dim and r["run"] == f"infer {long}")
                print(f"memory growth {head} D={dim}, inference {short} -> {long} snippets: x{b[key] / max(a[key], 1e-9):.2f} "
                      f"(lengths x{long / short:.2f}); time x{b['seconds'] / a['seconds']:.2f}")
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
