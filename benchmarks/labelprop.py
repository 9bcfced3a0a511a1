"""Label propagation speed on real DAVIS frames, side by side with the reference codes and a floor.

    python benchmarks/labelprop.py [--device cuda] [--presets crw dino] [--frames N] [--reference]
    python benchmarks/labelprop.py --davis2017 [--dims 512] [--device cuda] [--check 2]

Features are a stride-8 grid at 480p (60 x 106 positions) of each frame's 8 x 8 pixel blocks less the video's mean
colour, randomly projected to `--dims` (64) dimensions and rounded to float16 as an embedding file stores them (the
tests' `patch_features`), for the two DAVIS-2016 sequences in ../shared/realdata (blackswan 50 frames, car-shadow 40).
Per preset it prints our `propagate` (seconds in all and per predicted frame), with `--reference` the reference code's
propagation on the same features (tests/test_labelprop.py's copies of CRW's and DINO's code), and a floor: the time of
plain GEMMs with exactly the multiply-adds propagation cannot avoid (per target frame: positions x (frame-0 positions,
all of them where frame 0 is searched whole, + context frames x window positions) x D), as ratios to it.

`--davis2017` times DAVIS-2017 val's 30 sequences at their frame counts (../shared/realdata/splits/davis) on
random-projection features of a 60 x 107 grid of `--dims` channels, and compares the masks of the first `--check`
sequences with the CPU's float32 result.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, sync

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
SEQUENCES = ("blackswan", "car-shadow")
PATCH = 8
FRAME_SIZE = (480, 854)


def davis_sequence(seq: str, frames: int | None = None, dims: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Features (T, 60, 106, dims) of a DAVIS-2016 sequence in ../shared/realdata (float16-rounded float32) and its
    annotations (T, 480, 854)."""
    from evalharness.masks import mask_files, read_label_mask

    folder = REALDATA / "davis2016"
    paths = mask_files(folder / "Annotations" / "480p" / seq)[:frames]
    masks = np.stack([read_label_mask(p) for p in paths])
    images = np.stack([np.array(Image.open(folder / "JPEGImages" / "480p" / seq / f"{p.stem}.jpg")) for p in paths])
    t, h, w = images.shape[:3]
    rows, cols = h // PATCH, w // PATCH
    pixels = images[:, :rows * PATCH, :cols * PATCH].astype(np.float32) / 255
    pixels -= pixels.mean((0, 1, 2))
    blocks = pixels.reshape(t, rows, PATCH, cols, PATCH, 3).transpose(0, 1, 3, 2, 4, 5)
    pixels = torch.from_numpy(np.ascontiguousarray(blocks).reshape(t, rows, cols, -1))
    projection = torch.randn(pixels.shape[-1], dims, generator=torch.Generator().manual_seed(0))
    return (pixels @ projection).half().float(), masks


def synthetic_sequence(frames: int, grid: tuple[int, int], dims: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Features (T, *grid, dims) of a random field drifting one position every third frame (float16-rounded float32)
    and a first annotation (1, 480, 854) of two ellipses."""
    gen = torch.Generator().manual_seed(seed)
    h, w = grid
    field = torch.randn(h, w + frames, dims, generator=gen)
    feats = torch.stack([field[:, t // 3:t // 3 + w] for t in range(frames)])
    feats = feats + 0.5 * torch.randn(feats.shape, generator=gen)
    y, x = np.mgrid[:FRAME_SIZE[0], :FRAME_SIZE[1]]
    mask = np.zeros((1, *FRAME_SIZE), np.uint8)
    mask[0][((y - 200) / 80) ** 2 + ((x - 300) / 120) ** 2 < 1] = 1
    mask[0][((y - 330) / 60) ** 2 + ((x - 600) / 90) ** 2 < 1] = 2
    return feats.half().float(), mask


def config(preset: str):
    """The probe's settings of a named preset."""
    from evalharness.probes.labelprop_config import PRESETS, Config

    return Config(preset=preset, **PRESETS[preset])


def ours(preset: str, feats: torch.Tensor, masks: np.ndarray, device: str) -> tuple[float, np.ndarray]:
    """Seconds of our `propagate` (features already on the device) and the masks (T - 1, 480, 854) it gives."""
    from evalharness.probes.labelprop import first_labels, propagate, to_masks

    cfg = config(preset)
    first = first_labels(masks[0], int(masks[0].max()), tuple(feats.shape[1:3]), cfg.downsample).to(device)
    feats = feats.to(device)
    sync(device)
    start = time.perf_counter()
    soft = propagate(feats, first, cfg)
    sync(device)
    seconds = time.perf_counter() - start
    return seconds, to_masks(soft.cpu(), PATCH, masks.shape[1:], cfg)[1:]


def reference(preset: str, feats: torch.Tensor, masks: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds (propagation and masks together, as the reference code interleaves them) and masks of the reference
    code's copy in tests/test_labelprop.py, on the CPU."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_labelprop import crw_reference, dino_reference

    start = time.perf_counter()
    if preset == "crw":
        out = crw_reference(feats, masks)
    else:
        out = dino_reference(feats, masks[0], PATCH)
    return time.perf_counter() - start, out[1:]


def unavoidable(preset: str, frames: int, grid: tuple[int, int], dims: int) -> int:
    """The multiply-adds propagation cannot avoid over a sequence: per target frame, positions x (frame-0 positions,
    all of them or its window's + context frames x window positions) x D; window positions counted per position
    (windows cut by the grid's edges)."""
    cfg = config(preset)
    h, w = grid
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = y.reshape(-1, 1) - y.reshape(1, -1)
    dx = x.reshape(-1, 1) - x.reshape(1, -1)
    if cfg.window == "disc":
        window = int(((dy * dy + dx * dx).float() ** 0.5 < cfg.radius).sum())
    else:
        window = int(((dy.abs() <= cfg.radius) & (dx.abs() <= cfg.radius)).sum())
    first = window if cfg.restrict_first else (h * w) ** 2
    return sum(first + min(t - 1, cfg.context) * window for t in range(1, frames)) * dims


def gemm_rate(device: str, dims: int, repeats: int = 5) -> float:
    """Multiply-adds per second of a plain float32 GEMM of propagation's shape (6360 x dims x 6360), the best of
    `repeats`."""
    a = torch.randn(6360, dims, device=device)
    b = torch.randn(dims, 6360, device=device)
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 6360 * 6360 * dims / best


def masks_hash(masks: list[np.ndarray]) -> str:
    """A short hash of masks, to compare runs."""
    digest = hashlib.sha256()
    for m in masks:
        digest.update(np.ascontiguousarray(m, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:16]


def _lengths(frames: int | None) -> list[tuple[str, int]]:
    """The real DAVIS-2016 sequences and how many of their frames are used (the first `frames`, or all)."""
    from evalharness.masks import mask_files

    if not REALDATA.is_dir():
        raise FileNotFoundError(f"{REALDATA} is not present: the benchmark needs the real DAVIS-2016 sequences")
    return [(seq, len(mask_files(REALDATA / "davis2016" / "Annotations" / "480p" / seq)[:frames])) for seq in SEQUENCES]


def floor_seconds(preset: str, device: str = "cpu", frames: int | None = None, dims: int = 64) -> float:
    """The floor over the real sequences: their unavoidable multiply-adds at this machine's GEMM rate."""
    rate = gemm_rate(device, dims)
    grid = (FRAME_SIZE[0] // PATCH, FRAME_SIZE[1] // PATCH)
    return sum(unavoidable(preset, count, grid, dims) for _, count in _lengths(frames)) / rate


def measure(preset: str, device: str = "cpu", frames: int | None = None, with_reference: bool = False,
            dims: int = 64) -> dict:
    """Our propagation of `preset` on both real DAVIS sequences (their first `frames` frames, or all): seconds,
    predicted frames, the floor's seconds, the masks and their hash; with_reference adds the reference code's
    seconds and how many mask pixels equal ours."""
    out = {"preset": preset, "device": device, "seconds": 0.0, "frames": 0,
           "floor_seconds": floor_seconds(preset, device, frames, dims), "masks": []}
    if with_reference:
        out |= {"reference_seconds": 0.0, "reference_equal": 0, "pixels": 0}
    for seq, _ in _lengths(frames):
        feats, masks = davis_sequence(seq, frames, dims)
        seconds, predicted = ours(preset, feats, masks, device)
        out["seconds"] += seconds
        out["frames"] += len(predicted)
        out["masks"].append(predicted)
        if with_reference:
            seconds, expected = reference(preset, feats, masks)
            out["reference_seconds"] += seconds
            out["reference_equal"] += int((expected == predicted).sum())
            out["pixels"] += predicted.size
    out["hash"] = masks_hash(out["masks"])
    return out


def davis2017(device: str, dims: int, check: int, sequences: int | None = None, frames: int | None = None) -> dict:
    """Our crw propagation of DAVIS-2017 val's sequences (their frame counts, at most `frames` each; random features
    of a 60 x 107 grid): seconds in all and per frame, and how many mask pixels equal the CPU's float32 result for the
    first `check` sequences."""
    counts = REALDATA / "splits" / "davis" / "davis2017_val_osvos_result_framecounts.txt"
    if not counts.is_file():
        raise FileNotFoundError(f"{counts} is not present: it gives DAVIS-2017 val's frame counts")
    lengths = [(name, int(n)) for name, n in (line.split() for line in counts.read_text().splitlines() if line.strip())]
    out = {"sequences": 0, "frames": 0, "seconds": 0.0, "equal": 0, "pixels": 0}
    for number, (name, n) in enumerate(lengths[:sequences]):
        feats, masks = synthetic_sequence(min(n, frames or n), (60, 107), dims, seed=number)
        seconds, predicted = ours("crw", feats, masks, device)
        out["sequences"] += 1
        out["frames"] += len(predicted)
        out["seconds"] += seconds
        if number < check:
            _, expected = ours("crw", feats, masks, "cpu")
            out["equal"] += int((expected == predicted).sum())
            out["pixels"] += predicted.size
        print(f"  {name}: {len(feats)} frames, {seconds:.2f} s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--presets", nargs="+", default=["crw", "dino"], choices=["crw", "dino"])
    parser.add_argument("--frames", type=int, default=None, help="at most N frames of each sequence (default all)")
    parser.add_argument("--reference", action="store_true", help="time the reference code too (minutes on a CPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--dims", type=int, default=None, help="feature channels (default 64; 512 with --davis2017)")
    parser.add_argument("--davis2017", action="store_true", help="time DAVIS-2017 val's frame counts (crw preset)")
    parser.add_argument("--sequences", type=int, default=None, help="with --davis2017: the first N sequences only")
    parser.add_argument("--check", type=int, default=2, help="with --davis2017: sequences compared with the CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if not REALDATA.is_dir():
        print(f"skipped: {REALDATA} is not present (the benchmark reads real DAVIS data from it)")
        return
    print(describe(args.device))
    if args.davis2017:
        r = davis2017(args.device, args.dims or 512, args.check, args.sequences, args.frames)
        print(f"DAVIS-2017 val, crw, {args.dims or 512} dims on {args.device}: {r['sequences']} sequences, {r['frames']} "
              f"predicted frames, {r['seconds']:.1f} s, {r['seconds'] / r['frames'] * 1000:.1f} ms per frame; mask pixels "
              f"equal to the CPU's float32: {r['equal']} of {r['pixels']} ({r['equal'] / max(r['pixels'], 1):.6f})")
        return
    for preset in args.presets:
        r = measure(preset, args.device, args.frames, args.reference, args.dims or 64)
        line = (f"{preset}: ours {r['seconds']:.2f} s for {r['frames']} frames ({r['seconds'] / r['frames'] * 1000:.0f} ms "
                f"per frame, {r['seconds'] / r['floor_seconds']:.1f}x the floor of {r['floor_seconds']:.2f} s)")
        if args.reference:
            line += (f"; reference code {r['reference_seconds']:.2f} s ({r['reference_seconds'] / r['floor_seconds']:.1f}x "
                     f"the floor, {r['reference_seconds'] / r['seconds']:.1f}x ours), mask pixels equal to ours "
                     f"{r['reference_equal']} of {r['pixels']}")
        print(f"{line}; masks {r['hash']}", flush=True)


if __name__ == "__main__":
    main()
