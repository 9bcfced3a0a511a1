"""Is extraction decode-bound or compute-bound? Clips/s of decoding alone, of the model alone, and of both.

    python benchmarks/extract_throughput.py --model torchvision:r3d_18 --weights random \
        --protocol CARD --data ROOT [--device cuda] [--autocast bfloat16] [--workers 8] [--batch-size 16]

Decoding alone runs the extraction's own DataLoader (same workers, same transforms)
without a model; the model alone embeds random clips of the card's shape; the full
run is `extract` itself. On a GPU, nvidia-smi is sampled during the full run for
utilisation. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from evalharness.backbones import build_backbone
from evalharness.cards import load_protocol
from evalharness.datasets import resolve_manifest
from evalharness.extract import ExtractConfig, autocast, clip_loader, extract


def decode_rate(protocol, items, backbone, workers: int) -> float:
    loader = clip_loader(items, protocol, backbone, list(range(len(items))), workers)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    return count / (time.perf_counter() - start)


def compute_rate(protocol, backbone, cfg: ExtractConfig, batches: int) -> float:
    device = torch.device(cfg.device)
    views = protocol.views.total
    clips = torch.randn(cfg.batch_size * views, protocol.frames.count, 3, protocol.transform.crop, protocol.transform.crop,
                        device=device)

    def step() -> None:
        with torch.inference_mode(), autocast(cfg):
            for start in range(0, clips.shape[0], cfg.batch_size):
                backbone.embed(clips[start:start + cfg.batch_size])
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up (cudnn autotuning, lazy init)
    start = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * cfg.batch_size / (time.perf_counter() - start)


def gpu_sampler(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout
            samples.append(float(out.split()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return
        stop.wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights")
    parser.add_argument("--protocol", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--autocast", default="none", choices=["none", "bfloat16", "float16"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--compute-batches", type=int, default=5)
    args = parser.parse_args()

    protocol = load_protocol(args.protocol)
    manifest = resolve_manifest(protocol, args.data)
    items = list(manifest.items)
    backbone = build_backbone(args.model, args.weights).to(torch.device(args.device))
    cfg = ExtractConfig(batch_size=args.batch_size, workers=args.workers, device=args.device, autocast=args.autocast,
                        quiet=True)
    decode = decode_rate(protocol, items, backbone, args.workers)
    compute = compute_rate(protocol, backbone, cfg, args.compute_batches)
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=gpu_sampler, args=(samples, stop), daemon=True)
    if args.device.startswith("cuda"):
        sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        summary = extract(backbone, protocol, args.data, Path(tmp) / "out.h5", cfg)
    stop.set()
    full = summary.clips_per_second
    util = f"{statistics.mean(samples):.0f}% (n={len(samples)})" if samples else "n/a"
    bound = "decode-bound" if decode < compute else "compute-bound"
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print("| model | device | card | clips | workers | batch | decode clips/s | model clips/s | extract clips/s | GPU util "
          "| verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {name} {args.autocast} | {protocol.name} ({protocol.views.total} views) | "
          f"{summary.embedded + len(summary.failures)} | {args.workers} | {args.batch_size} | {decode:.2f} | {compute:.2f} | "
          f"{full:.2f} | {util} | {bound} |")


if __name__ == "__main__":
    main()
